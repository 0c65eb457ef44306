"""`SparseGradDense`: a Dense layer fine-tuned the SparseGrad way (arXiv 2410.07383)."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

import keras_sce.sparsegrad.layer_arguments as arguments
import keras_sce.sparsegrad.layer_weights as layer_weights
from keras_sce.sparsegrad.basis_pool import rotate_kernel, unrotate_kernel
from keras_sce.sparsegrad.core import sparse_grad_matmul
from keras_sce.sparsegrad.dense_conversion import check_convertible, dense_settings, fold_to_dense
from keras_sce.sparsegrad.registry import register_sparse_kernel
from keras_sce.utils import require_tensorflow_backend


@keras.saving.register_keras_serializable(package="keras_sce")
class SparseGradDense(keras.layers.Layer):
    """Dense layer whose kernel is trained through a top-k gradient in a rotated basis.

    SparseGrad re-parametrises a Dense kernel `K` (`[in, out]`) in two frozen
    orthogonal bases, `P` (`[in, in]`) and `Q` (`[out, out]`), in which the kernel
    gradient is concentrated: the trainable kernel is `K̃ = Pᵀ K Q` and the forward
    pass is `y = activation(((x P) K̃) Qᵀ + b)`, identical to the Dense layer it was
    converted from. The backward pass is custom:

    - the input gradient is exact and dense, `∂L/∂x = ((g Q) K̃ᵀ) Pᵀ` (`g = ∂L/∂y`);
    - the bias gradient is the ordinary `Σ g`, in the original output space;
    - the kernel gradient is `Ĝ = (x P)ᵀ (g Q) = Pᵀ (∂L/∂K) Q`, of which only the
      `k` largest-magnitude entries (element-wise over the whole matrix, re-chosen at
      every step) are kept; the rest is exactly zero.

    All leading dimensions of the input are tokens (any rank >= 2). `k` is static, so
    the layer compiles under XLA. The bases and the kernel are stored in float32 and
    never autocast: under a mixed-precision policy the forward and input-gradient
    matmuls run in the compute dtype (bases cast per call) while `Ĝ` and its top-k are
    computed in float32 and the kernel gradient is float32. Bases are interned by
    value (`keras_sce.sparsegrad.shared_basis`), so layers given equal bases share one
    variable (one copy in memory).

    With `P = Q = I` (`input_basis=None, output_basis=None`) the layer is the MeProp
    baseline: top-k of the kernel gradient in the original basis, with no extra
    matmul. With a `support` (flat indices into `K̃`, from
    `keras_sce.sparsegrad.estimate_support`), the top-k is taken among support entries
    only; `keras_sce.sparsegrad.SparseGradOptimizer` then keeps optimizer state for
    the support only (O(k) memory). Pair the layer with that optimizer to get the
    paper's lazy Adam; a plain dense optimizer would let its moments decay everywhere
    and move unselected entries. Fold back for serving with `to_dense()`.

    Budget rule: LoRA of rank `r` trains `r·(in + out)` parameters; the same number
    of updated entries per step is `k = r·(in + out)` (about 1% of a 768×3072 layer
    for `r = 7`); see `keras_sce.sparsegrad.lora_equivalent_budget`.

    Args:
        units: int, output dimension.
        input_basis: orthogonal `[in, in]` array or float32 non-trainable
            `keras.Variable` `P`, or `None` for the identity. Defaults to `None`.
        output_basis: orthogonal `[units, units]` `Q`, or `None` for the identity.
        num_selected: int `k`, the number of kernel-gradient entries kept per step
            (`1 <= k <= in·units`, or `<= len(support)`). Exclusive with `density`.
        density: float in `(0, 1]`, `k = max(1, round(density·in·units))`. If neither
            is given, `density=0.01`.
        selection: `"auto"` (default), `"top_k"` or `"approx"`. `"top_k"` is
            `tf.math.top_k`, exact everywhere; `"approx"` is `tf.math.approx_max_k`,
            approximate on TPU (where it is fast) and exact on CPU/GPU (checked in the
            tests). Inside a full train step compiled by XLA on CPU, `"top_k"` is
            several times slower (`benchmarks/sparsegrad_step.py`), so `"auto"` means
            `"approx"` unless a TPU is visible (`keras_sce.sparsegrad.resolve_selection`).
        support: optional 1-D array of distinct flat indices into the `[in, units]`
            kernel restricting the selection (O(k)-state mode).
        formulation: where the bases are applied, which changes the cost but not
            the result (up to float rounding): `"auto"` (default) applies each basis
            to the kernel instead of the token rows when that is cheaper for the
            batch's token count (`P` when `units < tokens`, `Q` when `in < tokens`;
            see `keras_sce.sparsegrad.rotation_plan`); `"activation"` always rotates
            the token rows (`x P`, `h Qᵀ`), `"weight"` always the kernel.
        activation: activation function or name. Defaults to `None`.
        use_bias: bool, whether to add a bias. Defaults to `True`.
        kernel_initializer: initializer of the rotated kernel `K̃` (when not converted
            with `from_dense`). Defaults to `"glorot_uniform"`.
        bias_initializer: bias initializer. Defaults to `"zeros"`.
        bias_regularizer: as for Dense. A kernel regularizer or constraint is not
            accepted: it would make the kernel gradient dense; use the optimizer's
            weight decay for the other variables.
        activity_regularizer: as for Dense.
        bias_constraint: as for Dense.
        **kwargs: base `keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: tensor of shape `[..., in]` (rank >= 2).

    Returns:
        Tensor of shape `[..., units]`.

    Example:

    >>> import keras, numpy as np, keras_sce
    >>> rng = np.random.default_rng(0)
    >>> dense = keras.layers.Dense(64)
    >>> dense.build((None, 32))
    >>> p = np.linalg.qr(rng.normal(size=(32, 32)))[0]  # orthogonal bases
    >>> q = np.linalg.qr(rng.normal(size=(64, 64)))[0]
    >>> layer = keras_sce.SparseGradDense.from_dense(dense, p, q, num_selected=96)
    >>> x = rng.normal(size=(4, 10, 32)).astype("float32")
    >>> np.allclose(layer(x), dense(x), atol=1e-5)  # the same outputs as the Dense layer
    True
    >>> served = layer.to_dense()  # a plain keras.layers.Dense with K = P K̃ Qᵀ
    >>> type(served).__name__, np.allclose(served(x), dense(x), atol=1e-5)
    ('Dense', True)

    References:
        V. Chekalina, A. Rudenko, G. Mezentsev, A. Mikhalev, A. Panchenko,
        I. Oseledets. "SparseGrad: A Selective Method for Efficient Fine-tuning of
        MLP Layers", EMNLP 2024. arXiv:2410.07383.
    """

    def __init__(
        self,
        units: int,
        input_basis=None,
        output_basis=None,
        num_selected: int | None = None,
        density: float | None = None,
        selection: str = "auto",
        support=None,
        formulation: str = "auto",
        activation=None,
        use_bias: bool = True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        bias_regularizer=None,
        activity_regularizer=None,
        bias_constraint=None,
        **kwargs,
    ):
        require_tensorflow_backend("SparseGradDense")
        arguments.pop_refused_arguments(kwargs)
        support_size = kwargs.pop("support_size", None)
        super().__init__(activity_regularizer=activity_regularizer, **kwargs)
        arguments.check_options(units, num_selected, density, selection, formulation)
        self.formulation = formulation
        self.units = int(units)
        self.num_selected = None if num_selected is None else int(num_selected)
        self.density = None if density is None else float(density)
        self.selection = selection
        self.activation = keras.activations.get(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.bias_constraint = keras.constraints.get(bias_constraint)
        self.input_spec = keras.layers.InputSpec(min_ndim=2)
        self.supports_masking = True

        self._input_basis_arg = input_basis
        self._output_basis_arg = output_basis
        self.input_basis, self.output_basis = arguments.intern_bases(input_basis, output_basis)
        self._support_arg, self._support_size = arguments.parse_support(support, support_size)
        self._support_mode = support
        self.support = None
        self._k = None

    # ------------------------------------------------------------------ build
    @property
    def k(self) -> int:
        """The resolved number of selected kernel-gradient entries (after build)."""
        if self._k is None:
            raise ValueError(f"Layer {self.name} is not built yet.")
        return self._k

    def build(self, input_shape):
        input_dim = input_shape[-1]
        if input_dim is None:
            raise ValueError(f"The last input dimension of {self.name} must be known.")
        input_dim = int(input_dim)
        shape = (input_dim, self.units)
        size = input_dim * self.units
        self.input_basis = layer_weights.build_basis(
            self, self.input_basis, self._input_basis_arg, input_dim, "input_basis"
        )
        self.output_basis = layer_weights.build_basis(
            self, self.output_basis, self._output_basis_arg, self.units, "output_basis"
        )
        if self._support_size is not None:
            arguments.check_support_range(
                self._support_arg, self._support_size, size, self.name, shape
            )
            self.support = layer_weights.build_support(self, self._support_arg, self._support_size)
        self._k = arguments.resolve_num_selected(
            self.num_selected, self.density, size, self._support_size, self.name, shape
        )
        self.kernel = self.add_weight(
            shape=shape,
            initializer=self.kernel_initializer,
            dtype="float32" if self.dtype_policy.variable_dtype != "float64" else "float64",
            autocast=False,
            name="kernel",
        )
        # Read by keras_sce.sparsegrad.SparseGradOptimizer to give the kernel the lazy Adam.
        register_sparse_kernel(self.kernel, self._k, self.support)
        if self.use_bias:
            self.bias = self.add_weight(
                shape=(self.units,),
                initializer=self.bias_initializer,
                regularizer=self.bias_regularizer,
                constraint=self.bias_constraint,
                name="bias",
            )
        else:
            self.bias = None
        self.input_spec = keras.layers.InputSpec(min_ndim=2, axes={-1: input_dim})
        self.built = True

    # ------------------------------------------------------------------- call
    def call(self, inputs):
        x = tf.convert_to_tensor(inputs)
        if not x.dtype.is_floating:
            x = tf.cast(x, self.compute_dtype)
        leading = tf.shape(x)[:-1]
        flat = tf.reshape(x, [-1, self.kernel.shape[0]])
        y = sparse_grad_matmul(
            flat,
            tf.convert_to_tensor(self.kernel),
            None if self.input_basis is None else tf.convert_to_tensor(self.input_basis),
            None if self.output_basis is None else tf.convert_to_tensor(self.output_basis),
            num_selected=self._k,
            support=None if self.support is None else tf.convert_to_tensor(self.support),
            selection=self.selection,
            formulation=self.formulation,
        )
        y = tf.reshape(y, tf.concat([leading, [self.units]], axis=0))
        if self.bias is not None:
            y = y + tf.cast(self.bias, y.dtype)
        if self.activation is not None:
            y = self.activation(y)
        return y

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    # -------------------------------------------------------------- conversion
    @classmethod
    def from_dense(
        cls,
        dense: keras.layers.Dense,
        input_basis=None,
        output_basis=None,
        *,
        num_selected: int | None = None,
        density: float | None = None,
        selection: str = "auto",
        support=None,
        formulation: str = "auto",
        name: str | None = None,
    ) -> SparseGradDense:
        """Converts a built `keras.layers.Dense` into a `SparseGradDense`.

        The rotated kernel is `K̃ = Pᵀ K Q` (computed in float64), the bias, activation
        and dtype policy are copied, so the outputs equal the Dense layer's up to
        float32 rounding.

        Args:
            dense: a built Keras 3 `Dense` layer (no LoRA, not quantized).
            input_basis: orthogonal `[in, in]` basis `P` (see the class docstring);
                `None` means identity.
            output_basis: orthogonal `[units, units]` basis `Q`; `None` means identity.
            num_selected: the budget `k`; see the class docstring.
            density: `k` as a fraction of the kernel; see the class docstring.
            selection: the top-k kernel; see the class docstring.
            support: optional flat indices restricting the selection; see the class
                docstring.
            formulation: where the bases are applied; see the class docstring.
            name: name of the new layer; defaults to `dense.name`.
        """
        check_convertible(dense)
        kernel = keras.ops.convert_to_numpy(dense.kernel)
        input_dim, units = kernel.shape
        rotated = rotate_kernel(kernel, input_basis, output_basis)
        layer = cls(
            units=units,
            input_basis=input_basis,
            output_basis=output_basis,
            num_selected=num_selected,
            density=density,
            selection=selection,
            support=support,
            formulation=formulation,
            name=name or dense.name,
            **dense_settings(dense),
        )
        layer.build((None, input_dim))
        layer.kernel.assign(rotated.astype(layer.kernel.dtype))
        if dense.use_bias:
            layer.bias.assign(dense.bias)
        return layer

    def effective_kernel(self) -> np.ndarray:
        """The kernel in the original basis, `K = P K̃ Qᵀ` (float64 NumPy)."""
        return unrotate_kernel(self.kernel, self.input_basis, self.output_basis)

    def to_dense(self, name: str | None = None) -> keras.layers.Dense:
        """Folds the layer back into a plain `keras.layers.Dense` (`K = P K̃ Qᵀ`)."""
        return fold_to_dense(self, name)

    # ----------------------------------------------------------- serialization
    def save_own_variables(self, store):
        layer_weights.save_weights(self, store)

    def load_own_variables(self, store):
        layer_weights.load_weights(self, store)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "units": self.units,
                "num_selected": self.num_selected,
                "density": self.density,
                "selection": self.selection,
                "formulation": self.formulation,
                "activation": keras.activations.serialize(self.activation),
                "use_bias": self.use_bias,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
                "bias_regularizer": keras.regularizers.serialize(self.bias_regularizer),
                "activity_regularizer": keras.regularizers.serialize(self.activity_regularizer),
                "bias_constraint": keras.constraints.serialize(self.bias_constraint),
                "input_basis": None if self._input_basis_arg is None else arguments.STORED,
                "output_basis": None if self._output_basis_arg is None else arguments.STORED,
                "support": None if self._support_size is None else arguments.STORED,
                "support_size": self._support_size,
            }
        )
        return config
