"""The few places where keras_sce relies on private Keras (or keras-hub) internals.

Each use is one small named function here, with a docstring saying why no public API
does the job, and a test in `tests/test_compat_*.py` that checks the behaviour the
function relies on, so that a Keras upgrade that breaks it fails there first.
"""

from __future__ import annotations

# --- SparseGrad ---


def iter_nested_layers(layer) -> list:
    """`layer` and every layer nested in it, depth first, each once.

    Keras 3 has no public recursive walk: `Model.layers` lists only the direct
    children of a model, and a plain `keras.layers.Layer` (e.g. a keras-hub
    transformer block) exposes its sub-layers only through its private tracker.

    Args:
        layer: a `keras.layers.Layer` (or model).

    Returns:
        A list starting with `layer`.
    """
    return layer._flatten_layers(include_self=True, recursive=True)


def direct_sublayers(layer) -> list:
    """The layers tracked directly by `layer` (its children, not their children).

    Keras 3 exposes this list publicly only on models (`Model.layers`); a plain
    `keras.layers.Layer` keeps it in its private tracker.

    Args:
        layer: a `keras.layers.Layer`.

    Returns:
        A new list of the child layers, in tracking order.
    """
    return list(layer._layers)


def replace_sublayer(owner, attribute: str, new_layer) -> None:
    """Rebinds `owner.<attribute>` to `new_layer` and tracks it in the old one's place.

    A built Keras layer locks its tracker, so assigning a new sub-layer raises; and
    assigning over an attribute never untracks the layer it held, so its weights would
    stay in `owner.weights`. Keras has no public way to swap a sub-layer of a built
    layer; this unlocks the tracker only for the swap and replaces the tracked entry at
    the same position, so `owner.weights` keeps its order.

    Args:
        owner: a built `keras.layers.Layer` (not a `keras.Sequential`: use its public
            `pop` and `add`).
        attribute: the attribute that holds the layer to replace.
        new_layer: the layer to put there.

    Raises:
        TypeError: when `owner` has no layer tracker.
        RuntimeError: when the old layer is still tracked afterwards.
    """
    old_layer = getattr(owner, attribute)
    tracker = getattr(owner, "_tracker", None)
    if tracker is None:
        raise TypeError(f"Cannot replace a layer inside {type(owner).__name__}.")
    was_locked = tracker.locked
    tracker.unlock()
    try:
        if tracker.is_in_store("layers", old_layer):
            if any(layer is old_layer for layer in tracker.config["layers"][1]):
                tracker.replace_tracked_value("layers", old_layer, new_layer)
            else:  # the owner re-bound its list: only the ids are stale
                tracker.stored_ids["layers"].discard(id(old_layer))
                tracker.stored_ids["layers"].add(id(new_layer))
        setattr(owner, attribute, new_layer)
    finally:
        if was_locked:
            tracker.lock()
    if any(layer is old_layer for layer in owner._layers):
        raise RuntimeError(f"Layer {old_layer.name} is still tracked after replacement.")


def replace_tracked_variable(layer, attribute: str, new_variable) -> None:
    """Points `layer.<attribute>` at `new_variable`, a non-trainable variable, in place.

    Keras can add a weight to a layer (`add_weight`) but has no public way to swap one
    for another variable. `SparseGradDense` needs it when loading: its bases are
    created as placeholders, then rebound to the shared (interned) variable holding
    the loaded value. The tracked variable is replaced at the same position, so
    `layer.weights` (and `get_weights` / `set_weights`) keep their order.

    Args:
        layer: a built `keras.layers.Layer`.
        attribute: the attribute holding the current non-trainable variable.
        new_variable: the variable to track there instead.

    Raises:
        ValueError: when the current variable is not one of the layer's
            non-trainable variables.
    """
    current = getattr(layer, attribute)
    store = layer._non_trainable_variables
    index = next((i for i, v in enumerate(store) if v is current), None)
    if index is None:
        raise ValueError(f"{attribute} is not a non-trainable variable of layer {layer.name}.")
    list.__setitem__(store, index, new_variable)
    ids = layer._tracker.stored_ids["non_trainable_variables"]
    ids.discard(id(current))
    ids.add(id(new_variable))
    object.__setattr__(layer, attribute, new_variable)


def keras_hub_feedforward_attributes() -> dict[str, str]:
    """The attributes of keras-hub's transformer blocks that hold their MLP layers.

    keras-hub's `TransformerEncoder` and `TransformerDecoder` keep their two
    feed-forward `Dense` layers in private attributes and expose no public accessor.

    Returns:
        `{attribute: group}`: `"intermediate"` (the up-projection) and `"output"`.
    """
    return {
        "_feedforward_intermediate_dense": "intermediate",
        "_feedforward_output_dense": "output",
    }
