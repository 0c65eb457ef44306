"""`SparseGradOptimizer`: the paper's lazy Adam for SparseGrad kernels, beside a dense one.

The kernels registered in `keras_sce.sparsegrad.registry` (those of `SparseGradDense`
layers) get the lazy Adam of `keras_sce.sparsegrad.lazy_adam`; every other trainable
variable is trained by an ordinary dense optimizer (AdamW in the paper).

Reference: V. Chekalina et al., "SparseGrad", EMNLP 2024, arXiv 2410.07383.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf

from keras_sce.sparsegrad.lazy_adam import lazy_adam_update, pooled_lazy_adam_update
from keras_sce.sparsegrad.registry import is_sparsegrad_kernel, sparse_kernel_spec
from keras_sce.utils import require_tensorflow_backend


@keras.saving.register_keras_serializable(package="keras_sce")
class SparseGradOptimizer(keras.optimizers.Optimizer):
    """Routes SparseGrad kernels to a lazy Adam and everything else to a dense optimizer.

    Use it as the model's optimizer (`model.compile(optimizer=...)`, `fit`, or
    `apply_gradients` in a custom loop). At build time every trainable variable is
    classified: the rotated kernels of `keras_sce.SparseGradDense` layers (the
    variables in `keras_sce.sparsegrad.registry`, see `register_sparse_kernel`) get the
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

    >>> import keras, numpy as np, keras_sce
    >>> layer = keras_sce.SparseGradDense(16, num_selected=12)
    >>> model = keras.Sequential(
    ...     [keras.Input((8,)), layer, keras.layers.Dense(3, activation="softmax")])
    >>> optimizer = keras_sce.sparsegrad.SparseGradOptimizer(
    ...     dense_optimizer=keras.optimizers.AdamW(2e-5, weight_decay=0.01),
    ...     learning_rate=1e-4,
    ... )
    >>> model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy")
    >>> rng = np.random.default_rng(0)
    >>> x, y = rng.normal(size=(32, 8)).astype("float32"), rng.integers(0, 3, size=32)
    >>> before = keras.ops.convert_to_numpy(layer.kernel)
    >>> _ = model.fit(x, y, batch_size=32, epochs=1, verbose=0)  # one step
    >>> int(np.sum(keras.ops.convert_to_numpy(layer.kernel) != before))  # k entries moved
    12

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
        object.__setattr__(self, "_built_variables", [])

    def build(self, variables):
        variables = list(variables)
        super().build(variables)
        object.__setattr__(self, "_built_variables", variables[:])
        dense = []
        for variable in variables:
            spec = sparse_kernel_spec(variable)
            if spec is None:
                dense.append(variable)
                continue
            prefix = variable.path.replace("/", "_")
            support = spec.support
            size = int(np.prod(variable.shape))
            pool = None
            if support is not None:
                shape = (int(support.shape[0]),)
            elif self.pool_factor is not None:
                k = spec.num_selected
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
        return super().variables + self.dense_optimizer.variables

    @property
    def sparse_state_variables(self):
        """The lazy-Adam moment variables (two per SparseGrad kernel)."""
        return [x for m, v, _, _ in self._sparse_state.values() for x in (m, v)]

    def apply(self, grads, trainable_variables=None):
        grads = list(grads)
        if trainable_variables is None:
            if not self.built:
                raise ValueError("Build the optimizer or pass trainable_variables.")
            trainable_variables = self._built_variables
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
            step = self.iterations + 1
            learning_rate = self.learning_rate
            for grad, variable in sparse:
                self._sparse_update(tf.convert_to_tensor(grad), variable, step, learning_rate)
        self.iterations.assign_add(1)

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
        """Lazy Adam with moments kept in a bounded pool (see `pooled_lazy_adam_update`)."""
        slots, stamps, k = pool
        update = pooled_lazy_adam_update(
            flat_weight,
            flat_grad,
            tf.convert_to_tensor(m),
            tf.convert_to_tensor(v),
            tf.convert_to_tensor(slots),
            tf.convert_to_tensor(stamps),
            k,
            step,
            learning_rate,
            beta_1=self.beta_1,
            beta_2=self.beta_2,
            epsilon=self.epsilon,
        )
        m.assign(update.m)
        v.assign(update.v)
        slots.assign(update.slots)
        stamps.assign(update.stamps)
        columns = int(variable.shape[1])
        coordinates = tf.stack([update.indices // columns, update.indices % columns], axis=1)
        variable.value.scatter_nd_update(coordinates, update.weights)

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
