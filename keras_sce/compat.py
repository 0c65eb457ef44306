"""Every use of a non-public TensorFlow, Keras (or keras-hub) API, each behind one small function.

An upgrade that moves one of these internals breaks one function here (and its test
in `tests/ops/test_compat_core.py` or `tests/sparsegrad/test_compat_sparsegrad.py`),
not the package. Each function says why no public API does the job. Keras is
imported inside the functions only, so that `keras_sce.ops` (pure TensorFlow) can
use this module without importing Keras.
"""

from __future__ import annotations

import tensorflow as tf

# --- core (TensorFlow / Keras) ---

try:  # Where tf.function(jit_compile=True) records that it compiles with XLA.
    from tensorflow.python.ops.control_flow_util import (
        GraphOrParentsInXlaContext as _graph_in_xla_context,
    )
except ImportError:  # pragma: no cover - other TensorFlow layouts
    _graph_in_xla_context = None

try:  # Pauses every active gradient tape.
    from tensorflow.python.eager.record import stop_recording as _stop_recording
except ImportError:  # pragma: no cover - other TensorFlow layouts
    _stop_recording = None


def in_xla_context() -> bool:
    """True while tracing a function that XLA compiles (`jit_compile=True`).

    Why private: TensorFlow has no public query for "this trace is compiled by
    XLA". The core needs it because XLA drops run-time assertions (so bad ids must
    turn the loss NaN instead) and needs static shapes (so padding rows are masked
    rather than dropped). Without the internal, this answers False: the eager
    behaviour, which stays correct outside XLA.
    """
    if _graph_in_xla_context is None or tf.executing_eagerly():
        return False
    return bool(_graph_in_xla_context(tf.compat.v1.get_default_graph()))


def pause_gradient_tapes():
    """A context manager under which no active `tf.GradientTape` records.

    Why private: the public `tape.stop_recording()` needs the tape object, which
    a loss never sees (Keras or the user owns it), and `tf.stop_gradient` has
    no XLA kernel for a variable's resource handle, which SCE's item search takes
    so that the table is read inside the compiled program (a dense read outside
    XLA copies a table in copy-on-read mode at every step). Returns None when the
    internal is missing; callers then fall back to `tf.stop_gradient` on a read.
    """
    if _stop_recording is None:
        return None
    return _stop_recording()


def keras_in_symbolic_scope() -> bool:
    """True while Keras infers output specs with placeholder tensors.

    Why private: Keras 3 exports no predicate for its symbolic (shape-inference)
    scope. Inside it, Keras hands a loss placeholder targets (of a made-up float
    dtype under `tf.distribute`), so the loss must return a spec-shaped scalar
    instead of running the op. False when the internal is missing.
    """
    try:
        from keras.src.backend import in_symbolic_scope
    except ImportError:  # pragma: no cover - other Keras layouts
        return False
    return bool(in_symbolic_scope())


def keras_variable_storage(variable):
    """The backend `tf.Variable` behind a Keras 3 variable, never autocast.

    Why private: the public `variable.value` casts to the layer's compute dtype
    inside a layer call under a mixed-precision policy: a dense copy of the whole
    table at every step. Gathering rows from the stored variable gives the same
    values (cast after the gather) with a sparse gradient. Returns None when
    `variable` has no such storage (another backend, or another Keras layout).
    """
    storage = getattr(variable, "_value", None)
    return storage if isinstance(storage, tf.Variable) else None


def optimizer_slot(optimizer, slots: str, variable):
    """The slot variable (e.g. Adam's `"_momentums"`) that `optimizer` keeps for `variable`.

    Why private: Keras 3 optimizers keep their per-variable state in protected
    lists indexed by the protected `_get_variable_index`; there is no public
    accessor. The row-sparse optimizers read and write these slots row by row so
    that their state (and checkpoints) stay those of the Keras optimizer they extend.
    """
    return getattr(optimizer, slots)[optimizer._get_variable_index(variable)]


def optimizer_decays(optimizer, variable) -> bool:
    """Whether `optimizer` applies its weight decay to `variable`.

    Why private: Keras keeps `exclude_from_weight_decay` bookkeeping behind the
    protected `_use_weight_decay`; reimplementing it would drift from Keras.
    """
    return optimizer.weight_decay is not None and optimizer._use_weight_decay(variable)


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
