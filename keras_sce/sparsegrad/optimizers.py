"""SparseGrad optimizer semantics: the paper's lazy Adam, routed beside a dense optimizer.

The authors update the selected kernel entries with PyTorch's `SparseAdam`: only the
entries selected at a step change their weight and their two moments; unselected
entries keep weight and moments bit-identical; the bias correction uses the global step
count. A dense Adam on the masked gradient is not the same (its moments decay
everywhere and keep moving unselected weights). Every other trainable variable is
trained by an ordinary dense optimizer (AdamW in the paper).

Reference: V. Chekalina et al., "SparseGrad", EMNLP 2024, arXiv 2410.07383.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf

from keras_sce.sparsegrad.core import resolve_selection
from keras_sce.utils import require_tensorflow_backend


def is_sparsegrad_kernel(variable) -> bool:
    """Whether `variable` is the rotated kernel of a `SparseGradDense` layer."""
    return bool(getattr(variable, "_keras_sce_sparsegrad", False))


def _scalar(value, dtype):
    """Python numbers go straight to `dtype` (no float32 detour); tensors are cast."""
    if isinstance(value, int | float):
        return tf.constant(value, dtype)
    return tf.cast(value, dtype)


def lazy_adam_update(
    weight,
    m,
    v,
    gradient,
    step,
    learning_rate,
    beta_1: float = 0.9,
    beta_2: float = 0.999,
    epsilon: float = 1e-8,
):
    """One lazy-Adam step on the entries where `gradient != 0` (pure function).

    For the selected entries (non-zero gradient), with `t = step` (1-based global
    step):

        m ← β₁ m + (1 − β₁) g
        v ← β₂ v + (1 − β₂) g²
        w ← w − lr · √(1 − β₂ᵗ) / (1 − β₁ᵗ) · m / (√v + ε)

    (PyTorch `SparseAdam`'s form, also Keras Adam's). Unselected entries are returned
    unchanged (bit-identical). An entry selected with an exactly-zero gradient value
    is indistinguishable from an unselected one and is treated as unselected.

    Args:
        weight, m, v, gradient: tensors of one shape.
        step: 1-based global step (int or scalar tensor).
        learning_rate: scalar.

    Returns:
        `(new_weight, new_m, new_v)`.
    """
    dtype = weight.dtype
    gradient = tf.cast(gradient, dtype)
    t = _scalar(step, dtype)
    lr = _scalar(learning_rate, dtype)
    b1 = _scalar(beta_1, dtype)
    b2 = _scalar(beta_2, dtype)
    selected = tf.not_equal(gradient, 0)
    new_m = tf.where(selected, b1 * m + (1 - b1) * gradient, m)
    new_v = tf.where(selected, b2 * v + (1 - b2) * tf.square(gradient), v)
    alpha = lr * tf.sqrt(1 - tf.pow(b2, t)) / (1 - tf.pow(b1, t))
    new_weight = tf.where(
        selected, weight - alpha * new_m / (tf.sqrt(new_v) + _scalar(epsilon, dtype)), weight
    )
    return new_weight, new_m, new_v


@keras.saving.register_keras_serializable(package="keras_sce")
class SparseGradOptimizer(keras.optimizers.Optimizer):
    """Routes SparseGrad kernels to a lazy Adam and everything else to a dense optimizer.

    Use it as the model's optimizer (`model.compile(optimizer=...)`, `fit`, or
    `apply_gradients` in a custom loop). At build time every trainable variable is
    classified: the rotated kernels of `keras_sce.SparseGradDense` layers get the
    paper's lazy Adam (see `lazy_adam_update`: only the top-k selected entries change
    their weight and moments, bias correction by this optimizer's global step, no
    weight decay); every other variable is handed to `dense_optimizer` (AdamW by
    default), with its own learning rate, weight decay, clipping and step counter.

    Optimizer state of a SparseGrad kernel (three modes):

    - full state (default): two moment tensors of the kernel's shape, like the
      authors' `SparseAdam` (the same bytes as dense Adam for that kernel);
    - bounded pool (`pool_factor=c`, O(k) state): moments for at most `s = ⌈c·k⌉`
      entries, plus their int32 flat indices and last-selection steps. The per-step
      selection is the layer's unrestricted top-k; an entry already in the pool keeps
      its moments, a new one takes the least recently selected slot and starts from
      zero moments (the state of a never-selected entry in the full-state rule), and
      the kernel is updated in place with a scatter. Until the pool is full this is
      exactly the full-state rule; afterwards only entries unselected for the longest
      time lose their moments. Recommended O(k) mode (best quality per byte in
      `benchmarks/sparsegrad_quality.py`);
    - fixed support (layer built with `support=`, from
      `keras_sce.sparsegrad.estimate_support`): the selection itself is restricted to
      `s` entries chosen once from the preliminary gradients, and the moments exist
      only there (two float32 vectors of length `s`). Cheapest, but entries outside
      the support can never be trained.

    Args:
        dense_optimizer: optimizer (instance, name or config) for all non-SparseGrad
            variables. Defaults to `"adamw"`.
        learning_rate: float or schedule for the SparseGrad kernels. Defaults to 1e-4.
        beta_1: float, first-moment decay. Defaults to 0.9.
        beta_2: float, second-moment decay. Defaults to 0.999.
        epsilon: float, added to `√v`. Defaults to 1e-8 (PyTorch's).
        pool_factor: float >= 1 or `None`. If set, kernels without a fixed support
            keep their moments in a bounded pool of `⌈pool_factor·k⌉` entries (O(k)
            state, see above). Defaults to `None` (full state).
        name: optimizer name.

    Example:

    ```python
    optimizer = keras_sce.sparsegrad.SparseGradOptimizer(
        dense_optimizer=keras.optimizers.AdamW(2e-5, weight_decay=0.01),
        learning_rate=1e-4,
    )
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy")
    model.fit(x, y)
    ```

    References:
        V. Chekalina et al., "SparseGrad: A Selective Method for Efficient Fine-tuning
        of MLP Layers", EMNLP 2024. arXiv:2410.07383.
    """

    def __init__(
        self,
        dense_optimizer="adamw",
        learning_rate=1e-4,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-8,
        pool_factor: float | None = None,
        name: str = "sparse_grad_optimizer",
        **kwargs,
    ):
        require_tensorflow_backend("SparseGradOptimizer")
        unsupported = {
            key: value
            for key, value in kwargs.items()
            if value not in (None, False) and not (key == "ema_momentum" and value == 0.99)
        }
        if unsupported:
            raise ValueError(
                f"SparseGradOptimizer does not support {sorted(unsupported)}; set them on "
                "`dense_optimizer` (they then apply to the non-SparseGrad variables)."
            )
        super().__init__(learning_rate=learning_rate, name=name)
        for arg, value in (("beta_1", beta_1), ("beta_2", beta_2)):
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{arg} must be in [0, 1), got {value}.")
        if epsilon <= 0:
            raise ValueError(f"epsilon must be > 0, got {epsilon}.")
        if pool_factor is not None and not float(pool_factor) >= 1.0:
            raise ValueError(
                f"pool_factor must be >= 1 (pool of pool_factor·k), got {pool_factor}."
            )
        self.pool_factor = None if pool_factor is None else float(pool_factor)
        self.beta_1 = float(beta_1)
        self.beta_2 = float(beta_2)
        self.epsilon = float(epsilon)
        dense = keras.optimizers.get(dense_optimizer)
        if isinstance(dense, SparseGradOptimizer):
            raise ValueError("dense_optimizer cannot itself be a SparseGradOptimizer.")
        self.dense_optimizer = dense
        # Plain (untracked) containers: the state variables are tracked by add_variable.
        object.__setattr__(self, "_sparse_state", {})

    def build(self, variables):
        variables = list(variables)
        super().build(variables)
        dense = []
        for variable in variables:
            if not is_sparsegrad_kernel(variable):
                dense.append(variable)
                continue
            prefix = variable.path.replace("/", "_")
            support = getattr(variable, "_keras_sce_support", None)
            size = int(np.prod(variable.shape))
            pool = None
            if support is not None:
                shape = (int(support.shape[0]),)
            elif self.pool_factor is not None:
                k = int(variable._keras_sce_k)
                shape = (min(size, int(math.ceil(self.pool_factor * k))),)
                if shape[0] < size:
                    # Empty slots hold the sentinel index `size` and the stamp -1.
                    slots = self.add_variable(
                        shape,
                        initializer=keras.initializers.Constant(size),
                        dtype="int32",
                        name=f"{prefix}_pool_slots",
                    )
                    stamps = self.add_variable(
                        shape,
                        initializer=keras.initializers.Constant(-1),
                        dtype="int32",
                        name=f"{prefix}_pool_stamps",
                    )
                    pool = (slots, stamps, k)
                else:
                    shape = tuple(variable.shape)
            else:
                shape = tuple(variable.shape)
            m = self.add_variable(shape, dtype=variable.dtype, name=f"{prefix}_lazy_m")
            v = self.add_variable(shape, dtype=variable.dtype, name=f"{prefix}_lazy_v")
            self._sparse_state[id(variable)] = (m, v, support, pool)
        self.dense_optimizer.build(dense)
        self.built = True

    @property
    def variables(self):
        return self._variables[:] + self.dense_optimizer.variables

    @property
    def sparse_state_variables(self):
        """The lazy-Adam moment variables (two per SparseGrad kernel)."""
        return [x for m, v, _, _ in self._sparse_state.values() for x in (m, v)]

    def apply(self, grads, trainable_variables=None):
        grads = list(grads)
        if trainable_variables is None:
            if not self.built:
                raise ValueError("Build the optimizer or pass trainable_variables.")
            trainable_variables = self._trainable_variables
        trainable_variables = list(trainable_variables)
        if len(grads) != len(trainable_variables):
            raise ValueError(
                f"Got {len(grads)} gradients for {len(trainable_variables)} variables."
            )
        if not self.built:
            with keras.name_scope(self.name, caller=self):
                self.build(trainable_variables)
        sparse, dense_grads, dense_vars = [], [], []
        for grad, variable in zip(grads, trainable_variables, strict=True):
            if grad is None:
                continue
            if id(variable) in self._sparse_state:
                sparse.append((grad, variable))
            elif is_sparsegrad_kernel(variable):
                raise ValueError(
                    f"SparseGrad kernel {variable.path} was not known when the optimizer "
                    "was built; rebuild the optimizer after converting layers."
                )
            else:
                dense_grads.append(grad)
                dense_vars.append(variable)
        if dense_vars:
            self.dense_optimizer.apply(dense_grads, dense_vars)
        if sparse:
            step = self._iterations + 1
            learning_rate = self._get_current_learning_rate()
            for grad, variable in sparse:
                self._sparse_update(tf.convert_to_tensor(grad), variable, step, learning_rate)
        self._iterations.assign_add(1)

    def _sparse_update(self, grad, variable, step, learning_rate):
        m, v, support, pool = self._sparse_state[id(variable)]
        hyper = dict(beta_1=self.beta_1, beta_2=self.beta_2, epsilon=self.epsilon)
        if support is None and pool is None:
            weight, new_m, new_v = lazy_adam_update(
                tf.convert_to_tensor(variable), m, v, grad, step, learning_rate, **hyper
            )
            m.assign(new_m)
            v.assign(new_v)
            variable.assign(weight)
            return
        columns = int(variable.shape[1])
        flat_grad = tf.reshape(tf.cast(grad, variable.dtype), [-1])
        flat_weight = tf.reshape(tf.convert_to_tensor(variable), [-1])
        if pool is not None:
            self._pool_update(flat_grad, flat_weight, variable, m, v, pool, step, learning_rate)
            return
        indices = tf.convert_to_tensor(support)
        weight, new_m, new_v = lazy_adam_update(
            tf.gather(flat_weight, indices),
            tf.convert_to_tensor(m),
            tf.convert_to_tensor(v),
            tf.gather(flat_grad, indices),
            step,
            learning_rate,
            **hyper,
        )
        m.assign(new_m)
        v.assign(new_v)
        coordinates = tf.stack([indices // columns, indices % columns], axis=1)
        variable.value.scatter_nd_update(coordinates, weight)

    def _pool_update(self, flat_grad, flat_weight, variable, m, v, pool, step, learning_rate):
        """Lazy Adam with moments kept in a bounded pool of `s >= k` slots (LRU).

        The k selected entries are looked up in the pool (sorted search); entries
        already there keep their moments, new ones take the least recently selected
        slots (never one selected at this step) and start from zero moments — the
        state a never-selected entry has in the full-state rule. Until the pool is
        full this is exactly the full-state lazy Adam.
        """
        slots_var, stamps_var, k = pool
        size = int(m.shape[0])
        columns = int(variable.shape[1])
        # The k non-zeros of the layer's selected gradient, found with the same top-k
        # kernel as the layer's default selection (approx_max_k is exact off TPU).
        if resolve_selection() == "approx":
            _, indices = tf.math.approx_max_k(tf.abs(flat_grad), k)
        else:
            _, indices = tf.math.top_k(tf.abs(flat_grad), k=k)
        values = tf.gather(flat_grad, indices)
        valid = tf.not_equal(values, 0)
        slots = tf.convert_to_tensor(slots_var)
        stamps = tf.convert_to_tensor(stamps_var)
        order = tf.argsort(slots, stable=True)
        sorted_slots = tf.gather(slots, order)
        position = tf.minimum(tf.searchsorted(sorted_slots, indices, side="left"), size - 1)
        hit = tf.logical_and(valid, tf.equal(tf.gather(sorted_slots, position), indices))
        hit_slot = tf.gather(order, position)
        miss = tf.logical_and(valid, tf.logical_not(hit))
        protected = tf.scatter_nd(hit_slot[:, None], tf.cast(hit, tf.int32), [size]) > 0
        score = tf.where(protected, tf.constant(2**30, tf.int32), stamps)
        _, victims = tf.math.top_k(-score, k=k)  # least recently selected first
        rank = tf.maximum(tf.cumsum(tf.cast(miss, tf.int32)) - 1, 0)
        slot = tf.where(hit, hit_slot, tf.gather(victims, rank))
        target = tf.where(valid, slot, size)[:, None]  # invalid entries write a dummy slot
        zeros = tf.zeros_like(values)
        old_m = tf.where(hit, tf.gather(tf.convert_to_tensor(m), hit_slot), zeros)
        old_v = tf.where(hit, tf.gather(tf.convert_to_tensor(v), hit_slot), zeros)
        weight, new_m, new_v = lazy_adam_update(
            tf.gather(flat_weight, indices),
            old_m,
            old_v,
            values,
            step,
            learning_rate,
            beta_1=self.beta_1,
            beta_2=self.beta_2,
            epsilon=self.epsilon,
        )

        def scatter(buffer, updates):
            padded = tf.concat([buffer, tf.zeros([1], buffer.dtype)], axis=0)
            return tf.tensor_scatter_nd_update(padded, target, updates)[:size]

        m.assign(scatter(tf.convert_to_tensor(m), new_m))
        v.assign(scatter(tf.convert_to_tensor(v), new_v))
        slots_var.assign(scatter(slots, indices))
        stamp = tf.fill(tf.shape(indices), tf.cast(step, tf.int32))
        stamps_var.assign(scatter(stamps, stamp))
        coordinates = tf.stack([indices // columns, indices % columns], axis=1)
        variable.value.scatter_nd_update(coordinates, weight)

    def get_config(self):
        base = super().get_config()
        return {
            "name": self.name,
            "learning_rate": base["learning_rate"],
            "beta_1": self.beta_1,
            "beta_2": self.beta_2,
            "epsilon": self.epsilon,
            "pool_factor": self.pool_factor,
            "dense_optimizer": keras.saving.serialize_keras_object(self.dense_optimizer),
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        if isinstance(config.get("dense_optimizer"), dict):
            config["dense_optimizer"] = keras.saving.deserialize_keras_object(
                config["dense_optimizer"], custom_objects=custom_objects
            )
        return super().from_config(config, custom_objects=custom_objects)
