"""Switch a Keras transformer's feed-forward layers to SparseGrad, and back.

`apply(model, ...)` finds the feed-forward (MLP) `Dense` layers of every transformer
block of a model — keras-hub `TransformerEncoder` / `TransformerDecoder` blocks (BERT,
RoBERTa, GPT-2, ... backbones) out of the box, any other block through `targets` —
estimates one pair of frozen orthogonal bases per layer type on the task's own data
(or takes the bases you give it), and puts a `keras_sce.SparseGradDense` in place of
each of those layers, in the block that owns it (see `keras_sce.sparsegrad.slots`).
`fold(model)` puts plain `Dense` layers back (kernel `P K̃ Qᵀ`, identical outputs) for
serving.

Reference: V. Chekalina et al., "SparseGrad: A Selective Method for Efficient
Fine-tuning of MLP Layers", EMNLP 2024, arXiv 2410.07383.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import keras
import numpy as np

from keras_sce.sparsegrad.budget import budget_arguments
from keras_sce.sparsegrad.estimation import estimate_bases, estimate_support
from keras_sce.sparsegrad.hosvd import Bases
from keras_sce.sparsegrad.layer import SparseGradDense
from keras_sce.sparsegrad.slots import find_feedforward_layers, sparsegrad_slots, unique_layers


def _basis_pairs(bases, groups):
    """`{group: (input_basis, output_basis)}` from `apply`'s `bases` argument."""
    if isinstance(bases, str):
        if bases != "identity":
            raise ValueError(f"bases must be a mapping, None or 'identity', got {bases!r}.")
        return {group: (None, None) for group in groups}
    out = {}
    for group in groups:
        if group not in bases:
            raise ValueError(
                f"No bases for layer group {group!r} (bases has {sorted(bases)}); "
                "estimate them with keras_sce.sparsegrad.estimate_bases."
            )
        value = bases[group]
        if isinstance(value, Bases):
            out[group] = (value.input_basis, value.output_basis)
        elif isinstance(value, tuple | list) and len(value) == 2:
            out[group] = (value[0], value[1])
        else:
            raise TypeError(
                f"bases[{group!r}] must be a Bases or an (input_basis, output_basis) pair."
            )
    return out


def apply(
    model: keras.layers.Layer,
    bases: Mapping | str | None = None,
    *,
    data: Iterable | None = None,
    loss: Callable | None = None,
    num_steps: int = 30,
    orientation: str = "consistent",
    num_selected: int | Mapping[str, int] | None = None,
    density: float | Mapping[str, float] | None = None,
    rank: int | Mapping[str, int] | None = None,
    selection: str = "auto",
    formulation: str = "auto",
    support_size: int | Mapping[str, int] | None = None,
    targets: Mapping[str, str] | None = None,
) -> dict:
    """Converts the feed-forward `Dense` layers of `model`'s blocks to `SparseGradDense`.

    Steps: (1) find the feed-forward layers (`find_feedforward_layers`); (2) unless
    `bases` are given, estimate one pair of orthogonal bases per layer group from
    `num_steps` batches of `data` (`keras_sce.sparsegrad.estimate_bases`; gradients
    at the current weights, the model is not updated); (3) with `support_size`,
    choose each layer's bounded support for the O(k)-state mode
    (`keras_sce.sparsegrad.estimate_support`, `num_steps` more batches); (4) replace
    each layer, in place, by `SparseGradDense.from_dense(...)` (outputs unchanged; the
    layer keeps its name and its `trainable` flag). All layers of a group share one
    basis variable per side.

    Compile (or re-compile) the model after `apply`, with a
    `keras_sce.sparsegrad.SparseGradOptimizer`.

    Args:
        model: a built Keras model or layer, e.g. a keras-hub backbone or task model.
        bases: `{group: Bases or (input_basis, output_basis)}`, or `"identity"` (P = Q = I:
            the MeProp baseline), or `None` to estimate them from `data` and `loss`.
        data: iterable of `(x, y)` or `(x, y, sample_weight)` batches of the task's
            training data (needed when `bases` is `None` or `support_size` is set).
        loss: `loss(y_true, y_pred)` for those batches.
        num_steps: number of batches for the estimation. Defaults to 30 (the paper's).
        orientation: `"consistent"` (default) or `"paper"`; see `estimate_bases`.
        num_selected: k, an int or `{group: int}`.
        density: k as a fraction of the kernel, a float or `{group: float}`.
        rank: a LoRA rank `r` (int or `{group: int}`); `k = r · (in + out)` per layer.
            At most one of `num_selected`, `density`, `rank`; none means density 1%.
        selection: `"auto"` (default: `"approx"`, exact, unless a TPU is visible),
            `"top_k"` (exact) or `"approx"`; see `keras_sce.SparseGradDense`.
        formulation: where the bases are applied (`"auto"`, `"activation"`,
            `"weight"`; see `keras_sce.SparseGradDense`). Defaults to `"auto"`.
        support_size: with it, the O(k)-state mode: each layer's selection (and its
            optimizer state) is restricted to this many entries, int or `{group: int}`.
        targets: `{path: group}` of the feed-forward layers of a block; defaults to
            `KERAS_HUB_TARGETS`. For a hand-written block with
            `self.ffn = keras.Sequential([Dense(4 * d), Dense(d)])`, pass
            `{"ffn.0": "intermediate", "ffn.1": "output"}`.

    Returns:
        A dict with `"layers"` (the new `SparseGradDense` layers, in model order),
        `"groups"` (`{group: [layer names]}`), `"bases"` (`{group: Bases or
        (P, Q)}`: keep them to re-apply the same conversion to a fresh copy of the
        model, e.g. before `load_weights`) and `"support"` (`{group: [indices]}` or
        `None`).

    Example:

    A keras-hub model (a `BertBackbone` and the classifier around it) needs no
    `targets`; this small model names its two feed-forward layers by their
    positions in the `keras.Sequential`:

    >>> import keras, numpy as np, keras_sce
    >>> model = keras.Sequential([
    ...     keras.Input((8,)),
    ...     keras.layers.Dense(32, activation="gelu", name="up"),
    ...     keras.layers.Dense(8, name="down"),
    ...     keras.layers.Dense(2, name="head"),
    ... ])
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(16, 8)).astype("float32")
    >>> y = (x[:, 0] > 0).astype("int32")
    >>> loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    >>> result = keras_sce.sparsegrad.apply(
    ...     model, data=[(x[:8], y[:8]), (x[8:], y[8:])], loss=loss, num_steps=2, rank=1,
    ...     targets={"0": "up", "1": "down"})
    >>> result["groups"]
    {'up': ['up'], 'down': ['down']}
    >>> model.compile(optimizer=keras_sce.sparsegrad.SparseGradOptimizer(), loss=loss)
    >>> _ = model.fit(x, y, epochs=1, verbose=0)
    >>> [layer.name for layer in keras_sce.sparsegrad.fold(model)]  # plain Dense layers again
    ['up', 'down']

    References:
        V. Chekalina et al., "SparseGrad: A Selective Method for Efficient Fine-tuning
        of MLP Layers", EMNLP 2024. arXiv:2410.07383.
    """
    if not getattr(model, "built", False):
        raise ValueError("Build the model (call it once) before keras_sce.sparsegrad.apply.")
    slots = find_feedforward_layers(model, targets)
    if not slots:
        converted = find_feedforward_layers(model, targets, layer_type=SparseGradDense)
        if converted:
            raise ValueError("The feed-forward layers of this model are already SparseGrad.")
        raise ValueError(
            "No feed-forward Dense layer found. keras-hub TransformerEncoder/Decoder "
            "blocks are found by default; for other blocks pass targets={path: group}."
        )
    for slot in slots:
        if getattr(slot.layer, "lora_enabled", False):
            raise ValueError(f"Layer {slot.layer.path} has LoRA enabled; cannot convert it.")
        if not slot.layer.built:
            raise ValueError(f"Layer {slot.layer.name} is not built; call the model once.")
    groups: dict[str, list] = {}
    for slot in slots:
        groups.setdefault(slot.group, []).append(slot.layer)
    for group, layers in groups.items():
        shapes = {tuple(layer.kernel.shape) for layer in layers}
        if len(shapes) > 1:
            raise ValueError(
                f"Layer group {group!r} mixes kernel shapes {sorted(shapes)}; one pair of "
                "bases per group needs one shape. Split the group with `targets`."
            )
    # Both estimations read `num_steps` batches of the task's data through the model.
    on_data = {"model": model, "data": data, "loss": loss, "groups": groups, "num_steps": num_steps}
    if bases is None:
        if data is None or loss is None:
            raise ValueError(
                "Pass `bases`, or `data` and `loss` to estimate them (or bases='identity')."
            )
        bases = estimate_bases(**on_data, orientation=orientation)
    pairs = _basis_pairs(bases, groups)
    support = None
    if support_size is not None:
        if data is None or loss is None:
            raise ValueError("support_size needs `data` and `loss` to choose the supports.")
        rotation = {
            group: Bases(
                *(
                    np.eye(int(d), dtype=np.float32) if b is None else np.asarray(b)
                    for b, d in zip(pairs[group], groups[group][0].kernel.shape, strict=True)
                ),
                None,
                None,
                0,
                orientation,
            )
            for group in groups
        }
        support = estimate_support(**on_data, bases=rotation, support_size=support_size)
    position = {group: 0 for group in groups}
    new_layers = []
    for slot in slots:
        input_basis, output_basis = pairs[slot.group]
        layer_support = None
        if support is not None:
            layer_support = support[slot.group][position[slot.group]]
            position[slot.group] += 1
        new = SparseGradDense.from_dense(
            slot.layer,
            input_basis,
            output_basis,
            selection=selection,
            formulation=formulation,
            support=layer_support,
            **budget_arguments(slot.layer.kernel.shape, slot.group, num_selected, density, rank),
        )
        new.trainable = slot.layer.trainable
        slot.replace(new)
        new_layers.append(new)
    return {
        "layers": new_layers,
        "groups": {g: [layer.name for layer in ls] for g, ls in groups.items()},
        "bases": bases,
        "support": support,
    }


def fold(model: keras.layers.Layer) -> list[keras.layers.Dense]:
    """Replaces every `SparseGradDense` held by a block of `model` with a plain `Dense`.

    Each layer becomes `layer.to_dense()` (kernel `P K̃ Qᵀ`, same bias, activation,
    name and `trainable` flag), in place, so the model's outputs are unchanged up to
    float32 rounding and it serves with no SparseGrad cost. Re-compile before training
    the folded model further.

    Args:
        model: a Keras model or layer converted by `apply` (or holding
            `SparseGradDense` layers as block attributes or in `keras.Sequential`s).

    Returns:
        The new `Dense` layers, in model order.

    Raises:
        ValueError: when a `SparseGradDense` is a node of a Functional graph (it cannot
            be swapped in place); fold that layer with `layer.to_dense()` and rebuild
            the graph yourself.
    """
    slots = sparsegrad_slots(model)
    found = {id(slot.layer) for slot in slots}
    for layer in unique_layers(model):
        if isinstance(layer, SparseGradDense) and id(layer) not in found:
            raise ValueError(
                f"SparseGradDense {layer.name} is a node of a Functional graph, not a "
                "block attribute; fold it with layer.to_dense() and rebuild the graph."
            )
    dense_layers = []
    for slot in slots:
        dense = slot.layer.to_dense()
        dense.trainable = slot.layer.trainable
        slot.replace(dense)
        dense_layers.append(dense)
    return dense_layers
