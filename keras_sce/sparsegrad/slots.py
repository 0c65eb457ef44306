"""Where a model's feed-forward layers live, and how to swap one in place.

A `FeedForwardSlot` names a layer by the block that owns it and the attribute path
from that block (attribute names, and integer positions into a `keras.Sequential`).
Replacing the layer in its slot rebinds the block's attribute and tracks the new layer
in the old one's place (so the old weights are no longer tracked and `model.weights`
keeps its order); a `keras.Sequential` is rebuilt around the new layer with its public
`pop` and `add`. The model's functional graph is untouched.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping

import keras

from keras_sce.compat import iter_nested_layers, keras_hub_feedforward_attributes, replace_sublayer
from keras_sce.sparsegrad.layer import SparseGradDense

# keras-hub TransformerEncoder and TransformerDecoder keep their MLP here.
KERAS_HUB_TARGETS: dict[str, str] = keras_hub_feedforward_attributes()

_PATH_ITEM = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$|^\d+$")


@dataclasses.dataclass
class FeedForwardSlot:
    """Where one feed-forward layer lives: `owner.<path>` (ints index a Sequential).

    Attributes:
        owner: the block (a `keras.layers.Layer`) the path starts from.
        path: tuple of attribute names and integer positions (into a
            `keras.Sequential`'s layers), e.g. `("_feedforward_output_dense",)` or
            `("ffn", 1)`.
        layer: the layer currently in the slot.
        group: the layer type; all slots of one group share one pair of bases.
    """

    owner: keras.layers.Layer
    path: tuple
    layer: keras.layers.Layer
    group: str

    @property
    def container(self):
        """The object holding the layer directly (the owner or a Sequential)."""
        holder = self.owner
        for item in self.path[:-1]:
            holder = holder.layers[item] if isinstance(item, int) else getattr(holder, item)
        return holder

    def replace(self, new_layer: keras.layers.Layer) -> None:
        """Puts `new_layer` in this slot, untracking the old layer."""
        container, key = self.container, self.path[-1]
        if isinstance(key, int):
            replace_in_sequential(container, self.layer, new_layer)
        else:
            replace_sublayer(container, key, new_layer)
        self.layer = new_layer


def replace_in_sequential(sequential: keras.Sequential, old_layer, new_layer) -> None:
    """Puts `new_layer` in `old_layer`'s position of `sequential` (public `pop`/`add`).

    Raises:
        ValueError: when `old_layer` is not one of `sequential.layers`.
    """
    layers = sequential.layers
    index = next((i for i, layer in enumerate(layers) if layer is old_layer), None)
    if index is None:
        raise ValueError(f"Layer {old_layer.name} is not in Sequential {sequential.name}.")
    for _ in range(len(layers) - index):
        sequential.pop(rebuild=False)
    after = [new_layer, *layers[index + 1 :]]
    for position, layer in enumerate(after):
        sequential.add(layer, rebuild=position == len(after) - 1)


def parse_path(spec: str) -> tuple:
    """`"ffn.1"` → `("ffn", 1)`: attribute names and Sequential positions.

    Raises:
        ValueError: when an item is neither an identifier nor a non-negative int.
    """
    items = tuple(spec.split("."))
    if not items or not all(_PATH_ITEM.match(item) for item in items):
        raise ValueError(
            f"Invalid target path {spec!r}: use attribute names and Sequential positions "
            "separated by dots, e.g. '_feedforward_output_dense' or 'ffn.1'."
        )
    return tuple(int(item) if item.isdigit() else item for item in items)


def resolve_path(owner, path: tuple):
    """The object at `owner.<path>`, or `None` when the path does not exist there."""
    value = owner
    for item in path:
        if isinstance(item, int):
            if not isinstance(value, keras.Sequential):
                return None
            layers = value.layers
            if item >= len(layers):
                return None
            value = layers[item]
        else:
            value = getattr(value, item, None)
            if value is None:
                return None
    return value


def unique_layers(model) -> Iterable[keras.layers.Layer]:
    """`model` and every layer nested in it, each once, in model order."""
    seen = set()
    for layer in iter_nested_layers(model):
        if id(layer) not in seen:
            seen.add(id(layer))
            yield layer


def find_feedforward_layers(
    model: keras.layers.Layer,
    targets: Mapping[str, str] | None = None,
    layer_type: type | tuple = keras.layers.Dense,
) -> list[FeedForwardSlot]:
    """Lists the feed-forward layers of every block of `model`, in model order.

    Args:
        model: a Keras model or layer (e.g. a keras-hub backbone or task model).
        targets: `{path: group}`; a path is an attribute name of a block, possibly
            dotted through attributes and `keras.Sequential` positions (`"ffn.0"`).
            Defaults to `KERAS_HUB_TARGETS` (keras-hub encoder/decoder blocks).
        layer_type: class(es) a slot's layer must be an instance of.

    Returns:
        A list of `FeedForwardSlot`, one per layer found, each layer once.
    """
    targets = dict(KERAS_HUB_TARGETS if targets is None else targets)
    parsed = {parse_path(spec): group for spec, group in targets.items()}
    slots, seen = [], set()
    for owner in unique_layers(model):
        for path, group in parsed.items():
            layer = resolve_path(owner, path)
            if isinstance(layer, layer_type) and id(layer) not in seen:
                seen.add(id(layer))
                slots.append(FeedForwardSlot(owner, path, layer, group))
    return slots


def sparsegrad_slots(model) -> list[FeedForwardSlot]:
    """The slots of every `SparseGradDense` held by a block attribute or a Sequential."""
    slots, seen = [], set()
    for owner in unique_layers(model):
        if isinstance(owner, SparseGradDense):
            continue
        if isinstance(owner, keras.Sequential):
            for index, layer in enumerate(owner.layers):
                if isinstance(layer, SparseGradDense) and id(layer) not in seen:
                    seen.add(id(layer))
                    slots.append(FeedForwardSlot(owner, (index,), layer, ""))
            continue
        for name, value in list(vars(owner).items()):
            if isinstance(value, SparseGradDense) and id(value) not in seen:
                seen.add(id(value))
                slots.append(FeedForwardSlot(owner, (name,), value, ""))
    return slots
