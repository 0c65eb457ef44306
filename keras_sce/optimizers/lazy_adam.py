"""Adam that updates only the rows of a sparse gradient (lazy moments)."""

from __future__ import annotations

import keras
import tensorflow as tf

from keras_sce.compat import optimizer_decays, optimizer_slot
from keras_sce.optimizers import _sparse
from keras_sce.utils import require_tensorflow_backend


class _RowSparseMixin:
    """What every lazy optimizer here shares: sparse-aware clipping, loss-scale
    unscaling and weight decay (on the rows present), and clear errors for the
    Keras options that would densify a sparse gradient."""

    def _check_sparse_options(self, name, kwargs):
        if kwargs.get("gradient_accumulation_steps"):
            raise ValueError(
                f"{name} does not support gradient_accumulation_steps: Keras accumulates "
                "into dense buffers, which costs the whole table at every step."
            )

    def apply(self, grads, trainable_variables=None):
        grads = list(grads)
        scale = self.loss_scale_factor
        if scale is None or not any(_sparse.is_sparse(g) for g in grads):
            return super().apply(grads, trainable_variables)
        # Keras' base divides gradients by the scale itself, which an IndexedSlices
        # does not support; unscale here (values only) and hide the factor.
        grads = [g if g is None else _sparse.divide(g, scale) for g in grads]
        self.loss_scale_factor = None
        try:
            return super().apply(grads, trainable_variables)
        finally:
            self.loss_scale_factor = scale

    def _clip_gradients(self, grads):
        return _sparse.clip_sparse_gradients(self, grads, super()._clip_gradients)

    def _apply_weight_decay(self, variables):
        # Done in update_step instead (on the rows present for a sparse gradient).
        return

    def _decay(self, variable, learning_rate, rows=None, values=None):
        """Decoupled weight decay as Keras applies it, or its rows-only version."""
        if not optimizer_decays(self, variable):
            return values
        factor = tf.cast(learning_rate, variable.dtype) * tf.cast(self.weight_decay, variable.dtype)
        if rows is None:
            variable.assign(variable - variable * factor)
            return None
        return values - values * tf.cast(factor, values.dtype)


@keras.saving.register_keras_serializable(package="keras_sce")
class LazyAdam(_RowSparseMixin, keras.optimizers.Adam):
    """Adam with lazy moments for row-sparse gradients (e.g. an item table).

    For a variable whose gradient is a `tf.IndexedSlices` (a `tf.gather` of an
    embedding table, as SCE and the sampled losses produce), only the rows present
    change: their two moments and their weights, with Adam's bias correction from
    the global step `t` (PyTorch `SparseAdam` / TF-Addons `LazyAdam`
    semantics). Duplicate rows in the slices are summed first. Rows not in the
    gradient keep weight and moments bit-identical, so a step costs O(rows gathered
    x d) instead of Keras Adam's O(C x d) (which decays both moment tables and
    moves every row that was ever touched). Dense gradients take exactly
    `keras.optimizers.Adam`'s update.

    For a row `r` present at step `t` with summed gradient `g`:

        m_r <- m_r + (1 - beta_1) (g - m_r)
        v_r <- v_r + (1 - beta_2) (g^2 - v_r)
        w_r <- w_r - lr sqrt(1 - beta_2^t) / (1 - beta_1^t) m_r / (sqrt(v_r) + epsilon)

    Rows of a float16/bfloat16 variable are updated in float32 and stored back in
    the variable's dtype (its moments too); a dense gradient of such a variable gets
    Keras Adam's update in that dtype.

    The trade-off: a row's moments only decay when the row is seen, so a rare item
    keeps an old, larger second moment (smaller steps) than under dense Adam.

    Keras options: `clipnorm`/`clipvalue`/`global_clipnorm` act on the summed
    sparse gradient (as on its dense equivalent) without densifying it;
    `weight_decay` decays only the rows present (dense variables: as Keras);
    `loss_scale_factor` is supported; `amsgrad` keeps a per-row maximum;
    `gradient_accumulation_steps` is refused (its buffers are dense). With a
    `"mixed_float16"` policy wrap it in `SparseLossScaleOptimizer` (Keras' own
    loss-scale wrapper densifies sparse gradients). `use_ema` averages every
    variable at every step (a dense cost by design).

    Args:
        learning_rate: float or schedule. Defaults to 1e-3.
        beta_1: float, first-moment decay. Defaults to 0.9.
        beta_2: float, second-moment decay. Defaults to 0.999.
        epsilon: float, added to `sqrt(v)`. Defaults to 1e-7 (Keras').
        amsgrad: bool. Defaults to False.
        name: optimizer name. Defaults to `"lazy_adam"`.
        **kwargs: Keras optimizer options (see above).

    Raises:
        ValueError: on `gradient_accumulation_steps`, or a `beta` outside
            `[0, 1)` or a non-positive `epsilon`.

    Example:

    >>> import keras, keras_sce
    >>> model = keras_sce.models.SASRec(num_items=101, max_length=20, hidden_dim=16)
    >>> model.compile(optimizer=keras_sce.optimizers.LazyAdam(1e-3),
    ...               loss=keras_sce.SCELoss(model.item_embedding_layer))
    """

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7,
                 amsgrad=False, name="lazy_adam", **kwargs):
        require_tensorflow_backend("LazyAdam")
        self._check_sparse_options("LazyAdam", kwargs)
        for arg, value in (("beta_1", beta_1), ("beta_2", beta_2)):
            if not isinstance(value, int | float) or not 0.0 <= value < 1.0:
                raise ValueError(f"LazyAdam: {arg} must be a float in [0, 1), got {value!r}.")
        if not isinstance(epsilon, int | float) or not epsilon > 0:
            raise ValueError(f"LazyAdam: epsilon must be a float > 0, got {epsilon!r}.")
        super().__init__(learning_rate=learning_rate, beta_1=beta_1, beta_2=beta_2,
                         epsilon=epsilon, amsgrad=amsgrad, name=name, **kwargs)

    def update_step(self, gradient, variable, learning_rate):
        if not _sparse.is_sparse(gradient):
            self._decay(variable, learning_rate)
            return super().update_step(gradient, variable, learning_rate)
        # Half-precision rows are updated in float32 (in bfloat16, beta_2 = 0.999
        # rounds to 1 and Adam's step would vanish) and stored back in their dtype.
        dtype = variable.dtype
        compute = tf.float32 if dtype in (tf.float16, tf.bfloat16) else dtype
        m_var = optimizer_slot(self, "_momentums", variable)
        v_var = optimizer_slot(self, "_velocities", variable)
        rows, g, present = _sparse.rows_to_update(gradient, variable.shape[0], compute)
        keep = tf.reshape(present, tf.concat([tf.shape(present), tf.ones([tf.rank(g) - 1],
                                                                          tf.int32)], 0))
        lr = tf.cast(learning_rate, compute)
        step = tf.cast(self.iterations + 1, compute)
        b1, b2 = tf.constant(self.beta_1, compute), tf.constant(self.beta_2, compute)
        alpha = lr * tf.sqrt(1 - tf.pow(b2, step)) / (1 - tf.pow(b1, step))

        def read(var):
            return tf.cast(tf.gather(_handle(var), rows), compute)

        m_old, v_old = read(m_var), read(v_var)
        m = tf.where(keep, m_old + (g - m_old) * (1 - b1), m_old)
        v = tf.where(keep, v_old + (tf.square(g) - v_old) * (1 - b2), v_old)
        self.assign(m_var, tf.IndexedSlices(m, rows))
        self.assign(v_var, tf.IndexedSlices(v, rows))
        if self.amsgrad:
            h_var = optimizer_slot(self, "_velocity_hats", variable)
            v = tf.maximum(read(h_var), v)
            self.assign(h_var, tf.IndexedSlices(v, rows))
        w_old = read(variable)
        w = self._decay(variable, learning_rate, rows, w_old)
        w = tf.where(keep, w - m * alpha / (tf.sqrt(v) + tf.constant(self.epsilon, compute)), w_old)
        self.assign(variable, tf.IndexedSlices(w, rows))

def _handle(variable):
    """The tf.Variable behind a Keras variable: `tf.gather` on it is a sparse read
    (a dense read would copy the whole table after a scatter: copy-on-read mode)."""
    return variable.value if isinstance(variable, keras.Variable) else variable
