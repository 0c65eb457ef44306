"""`SparseGradDense`: a Dense layer fine-tuned the SparseGrad way (arXiv 2410.07383)."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from keras_sce.compat import replace_tracked_variable
from keras_sce.sparsegrad.basis_pool import rotate_kernel, shared_basis, unrotate_kernel
from keras_sce.sparsegrad.core import FORMULATIONS, SELECTION_MODES, sparse_grad_matmul
from keras_sce.sparsegrad.registry import register_sparse_kernel
from keras_sce.utils import require_tensorflow_backend

_STORED = "stored"  # Placeholder used by `from_config`: the value comes from the weights.


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
        bias_regularizer, activity_regularizer, bias_constraint: as for Dense. A
            kernel regularizer or constraint is not accepted: it would make the kernel
            gradient dense; use the optimizer's weight decay for the other variables.
        **kwargs: base `keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: tensor of shape `[..., in]` (rank >= 2).

    Returns:
        Tensor of shape `[..., units]`.

    Example:

    ```python
    import keras, numpy as np, keras_sce

    dense = keras.layers.Dense(64)
    dense.build((None, 32))
    p = np.linalg.qr(np.random.randn(32, 32))[0]
    q = np.linalg.qr(np.random.randn(64, 64))[0]
    layer = keras_sce.SparseGradDense.from_dense(dense, p, q, num_selected=96)
    x = np.random.randn(4, 10, 32).astype("float32")
    np.testing.assert_allclose(layer(x), dense(x), atol=1e-5)
    served = layer.to_dense()  # plain keras.layers.Dense with K = P K̃ Qᵀ
    ```

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
        for banned in ("kernel_regularizer", "kernel_constraint"):
            if kwargs.get(banned) is not None:
                raise ValueError(
                    f"SparseGradDense does not accept {banned}: it would make the kernel "
                    "gradient dense and defeat the sparse update."
                )
            kwargs.pop(banned, None)
        if kwargs.pop("lora_rank", None) is not None:
            raise ValueError("SparseGradDense does not accept lora_rank.")
        support_size = kwargs.pop("support_size", None)
        super().__init__(activity_regularizer=activity_regularizer, **kwargs)
        if not isinstance(units, int | np.integer) or isinstance(units, bool) or units < 1:
            raise ValueError(f"units must be a positive int, got {units!r}.")
        if num_selected is not None and density is not None:
            raise ValueError("Pass either num_selected or density, not both.")
        if num_selected is not None and (
            not isinstance(num_selected, int | np.integer)
            or isinstance(num_selected, bool)
            or num_selected < 1
        ):
            raise ValueError(f"num_selected must be a positive int, got {num_selected!r}.")
        if density is not None and not (0.0 < float(density) <= 1.0):
            raise ValueError(f"density must be in (0, 1], got {density!r}.")
        if selection not in SELECTION_MODES:
            raise ValueError(f"selection must be one of {SELECTION_MODES}, got {selection!r}.")
        if formulation not in FORMULATIONS:
            raise ValueError(f"formulation must be one of {FORMULATIONS}, got {formulation!r}.")
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
        self.input_basis = None
        self.output_basis = None
        if input_basis is not None and not isinstance(input_basis, str):
            self.input_basis = shared_basis(input_basis, "input_basis")
        if output_basis is not None and not isinstance(output_basis, str):
            self.output_basis = shared_basis(output_basis, "output_basis")
        for arg in (input_basis, output_basis):
            if isinstance(arg, str) and arg != _STORED:
                raise ValueError(f"Bases must be arrays, keras.Variables or None, got {arg!r}.")

        self._support_arg = None
        if isinstance(support, str):
            if support != _STORED or support_size is None:
                raise ValueError(f"support must be an array of flat indices, got {support!r}.")
            self._support_size = int(support_size)
        elif support is not None:
            array = np.asarray(support)
            if array.ndim != 1 or array.size == 0 or not np.issubdtype(array.dtype, np.integer):
                raise ValueError(
                    "support must be a non-empty 1-D array of integer flat indices, got "
                    f"shape {array.shape} and dtype {array.dtype}."
                )
            if np.unique(array).size != array.size:
                raise ValueError("support must hold distinct flat indices.")
            self._support_arg = np.sort(array).astype(np.int32)
            self._support_size = int(array.size)
        else:
            self._support_size = None
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

    def _basis_for(self, current, arg, dim, name):
        if arg is None:
            return None
        if isinstance(arg, str):  # _STORED: placeholder, overwritten when loading weights
            return self.add_weight(
                shape=(dim, dim),
                initializer="identity",
                dtype="float32",
                trainable=False,
                autocast=False,
                name=name,
            )
        if tuple(current.shape) != (dim, dim):
            raise ValueError(
                f"{name} of layer {self.name} must have shape ({dim}, {dim}), got "
                f"{tuple(current.shape)}."
            )
        return current

    def build(self, input_shape):
        input_dim = input_shape[-1]
        if input_dim is None:
            raise ValueError(f"The last input dimension of {self.name} must be known.")
        input_dim = int(input_dim)
        size = input_dim * self.units
        self.input_basis = self._basis_for(
            self.input_basis, self._input_basis_arg, input_dim, "input_basis"
        )
        self.output_basis = self._basis_for(
            self.output_basis, self._output_basis_arg, self.units, "output_basis"
        )
        limit = size
        if self._support_size is not None:
            if self._support_arg is not None and (
                self._support_arg[0] < 0 or self._support_arg[-1] >= size
            ):
                raise ValueError(
                    f"support indices of {self.name} must be in [0, {size}) "
                    f"(= {input_dim}·{self.units})."
                )
            if self._support_size > size:
                raise ValueError(f"support of {self.name} is larger than the kernel ({size}).")
            self.support = self.add_weight(
                shape=(self._support_size,),
                initializer="zeros",
                dtype="int32",
                trainable=False,
                autocast=False,
                name="support",
            )
            values = self._support_arg
            if values is None:
                values = np.arange(self._support_size, dtype=np.int32)
            self.support.assign(values)
            limit = self._support_size
        if self.num_selected is not None:
            k = self.num_selected
        else:
            density = 0.01 if self.density is None else self.density
            k = max(1, int(round(density * (limit if self.support is not None else size))))
        if not 1 <= k <= limit:
            where = "the support size" if self.support is not None else f"{input_dim}·{self.units}"
            raise ValueError(
                f"num_selected of {self.name} must be in [1, {limit}] ({where}), got {k}."
            )
        self._k = int(k)
        self.kernel = self.add_weight(
            shape=(input_dim, self.units),
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
            input_basis, output_basis: orthogonal bases (see the class docstring);
                `None` means identity.
            num_selected, density, selection, support, formulation: see the class
                docstring.
            name: name of the new layer; defaults to `dense.name`.
        """
        require_tensorflow_backend("SparseGradDense.from_dense")
        if not isinstance(dense, keras.layers.Dense):
            raise TypeError(f"from_dense expects a keras.layers.Dense, got {type(dense)}.")
        if not dense.built:
            raise ValueError(f"Dense layer {dense.name} must be built before conversion.")
        if getattr(dense, "lora_enabled", False):
            raise ValueError(f"Dense layer {dense.name} has LoRA enabled; merge it first.")
        if getattr(dense, "quantization_mode", None):
            raise ValueError(f"Dense layer {dense.name} is quantized; cannot convert it.")
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
            activation=dense.activation,
            use_bias=dense.use_bias,
            bias_regularizer=dense.bias_regularizer,
            activity_regularizer=dense.activity_regularizer,
            bias_constraint=dense.bias_constraint,
            dtype=dense.dtype_policy,
            name=name or dense.name,
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
        if not self.built:
            raise ValueError(f"Layer {self.name} must be built before folding.")
        dense = keras.layers.Dense(
            self.units,
            activation=self.activation,
            use_bias=self.use_bias,
            bias_regularizer=self.bias_regularizer,
            activity_regularizer=self.activity_regularizer,
            bias_constraint=self.bias_constraint,
            dtype=self.dtype_policy,
            name=name or self.name,
        )
        dense.build((None, int(self.kernel.shape[0])))
        dense.kernel.assign(self.effective_kernel().astype(dense.kernel.dtype))
        if self.use_bias:
            dense.bias.assign(self.bias)
        return dense

    # ----------------------------------------------------------- serialization
    def _rebind_basis(self, attribute: str, value) -> None:
        """Points `attribute` at the interned variable for `value`, in place.

        The tracked variable is replaced at the same position, so `layer.weights`
        (and `get_weights`/`set_weights`) keep the order they had before saving.
        """
        shared = shared_basis(value, attribute)
        if shared is not getattr(self, attribute):
            replace_tracked_variable(self, attribute, shared)

    def save_own_variables(self, store):
        store["kernel"] = self.kernel
        if self.bias is not None:
            store["bias"] = self.bias
        if self.input_basis is not None:
            store["input_basis"] = self.input_basis
        if self.output_basis is not None:
            store["output_basis"] = self.output_basis
        if self.support is not None:
            store["support"] = self.support

    def load_own_variables(self, store):
        expected = {"kernel"}
        for attribute in ("bias", "input_basis", "output_basis", "support"):
            if getattr(self, attribute) is not None:
                expected.add(attribute)
        found = set(store.keys())
        if found != expected:
            raise ValueError(
                f"Layer {self.name} expects weights {sorted(expected)}, the file holds "
                f"{sorted(found)}."
            )
        self.kernel.assign(store["kernel"])
        if self.bias is not None:
            self.bias.assign(store["bias"])
        if self.support is not None:
            self.support.assign(store["support"])
        # Bases are interned: equal bases of different layers become one variable again.
        for attribute in ("input_basis", "output_basis"):
            if getattr(self, attribute) is not None:
                self._rebind_basis(attribute, np.asarray(store[attribute]))

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
                "input_basis": None if self._input_basis_arg is None else _STORED,
                "output_basis": None if self._output_basis_arg is None else _STORED,
                "support": None if self._support_size is None else _STORED,
                "support_size": self._support_size,
            }
        )
        return config
