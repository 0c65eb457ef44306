"""Every use of a non-public TensorFlow or Keras API, each behind one small function.

An upgrade of TensorFlow or Keras that moves one of these internals breaks one
function here (and its test in tests/test_compat_core.py), not the package. Each
function says why no public API does the job. Keras is imported inside the
functions only, so that :mod:`keras_sce.ops` (pure TensorFlow) can use this
module without importing Keras.
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
    """True while tracing a function that XLA compiles (``jit_compile=True``).

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
    """A context manager under which no active ``tf.GradientTape`` records.

    Why private: the public ``tape.stop_recording()`` needs the tape object, which
    a loss never sees (Keras or the user owns it), and ``tf.stop_gradient`` has
    no XLA kernel for a variable's resource handle, which SCE's item search takes
    so that the table is read inside the compiled program (a dense read outside
    XLA copies a table in copy-on-read mode at every step). Returns None when the
    internal is missing; callers then fall back to ``tf.stop_gradient`` on a read.
    """
    if _stop_recording is None:
        return None
    return _stop_recording()


def keras_in_symbolic_scope() -> bool:
    """True while Keras infers output specs with placeholder tensors.

    Why private: Keras 3 exports no predicate for its symbolic (shape-inference)
    scope. Inside it, Keras hands a loss placeholder targets (of a made-up float
    dtype under ``tf.distribute``), so the loss must return a spec-shaped scalar
    instead of running the op. False when the internal is missing.
    """
    try:
        from keras.src.backend import in_symbolic_scope
    except ImportError:  # pragma: no cover - other Keras layouts
        return False
    return bool(in_symbolic_scope())


def keras_variable_storage(variable):
    """The backend ``tf.Variable`` behind a Keras 3 variable, never autocast.

    Why private: the public ``variable.value`` casts to the layer's compute dtype
    inside a layer call under a mixed-precision policy: a dense copy of the whole
    table at every step. Gathering rows from the stored variable gives the same
    values (cast after the gather) with a sparse gradient. Returns None when
    ``variable`` has no such storage (another backend, or another Keras layout).
    """
    storage = getattr(variable, "_value", None)
    return storage if isinstance(storage, tf.Variable) else None


def optimizer_slot(optimizer, slots: str, variable):
    """The slot variable (e.g. Adam's ``"_momentums"``) that ``optimizer`` keeps for ``variable``.

    Why private: Keras 3 optimizers keep their per-variable state in protected
    lists indexed by the protected ``_get_variable_index``; there is no public
    accessor. The row-sparse optimizers read and write these slots row by row so
    that their state (and checkpoints) stay those of the Keras optimizer they extend.
    """
    return getattr(optimizer, slots)[optimizer._get_variable_index(variable)]


def optimizer_decays(optimizer, variable) -> bool:
    """Whether ``optimizer`` applies its weight decay to ``variable``.

    Why private: Keras keeps ``exclude_from_weight_decay`` bookkeeping behind the
    protected ``_use_weight_decay``; reimplementing it would drift from Keras.
    """
    return optimizer.weight_decay is not None and optimizer._use_weight_decay(variable)

