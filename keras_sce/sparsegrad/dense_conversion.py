"""From `keras.layers.Dense` to `keras_sce.SparseGradDense` and back.

A `SparseGradDense` keeps every setting of the Dense layer it replaces except the
kernel, which it holds rotated (`K̃ = Pᵀ K Q`); `dense_settings` reads those settings
from either layer, so the two directions copy the same ones.
"""

from __future__ import annotations

import keras

from keras_sce.utils import require_tensorflow_backend


def dense_settings(layer: keras.layers.Layer) -> dict:
    """The constructor arguments a `Dense` and a `SparseGradDense` share, read from `layer`.

    Args:
        layer: a `keras.layers.Dense` or a `keras_sce.SparseGradDense`.

    Returns:
        `activation`, `use_bias`, `bias_regularizer`, `activity_regularizer`,
        `bias_constraint` and `dtype` (the layer's dtype policy).
    """
    return {
        "activation": layer.activation,
        "use_bias": layer.use_bias,
        "bias_regularizer": layer.bias_regularizer,
        "activity_regularizer": layer.activity_regularizer,
        "bias_constraint": layer.bias_constraint,
        "dtype": layer.dtype_policy,
    }


def check_convertible(dense) -> None:
    """Checks that `dense` can become a `SparseGradDense`.

    Raises:
        TypeError: for anything but a `keras.layers.Dense`.
        ValueError: for a Dense layer that is not built, has LoRA enabled or is
            quantized.
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


def fold_to_dense(layer, name: str | None = None) -> keras.layers.Dense:
    """A plain `keras.layers.Dense` equal to the built `SparseGradDense` `layer`.

    Its kernel is `layer.effective_kernel()` (`K = P K̃ Qᵀ`); bias, activation,
    regularizers, constraint and dtype policy are copied; the name defaults to the
    layer's.
    """
    if not layer.built:
        raise ValueError(f"Layer {layer.name} must be built before folding.")
    dense = keras.layers.Dense(layer.units, name=name or layer.name, **dense_settings(layer))
    dense.build((None, int(layer.kernel.shape[0])))
    dense.kernel.assign(layer.effective_kernel().astype(dense.kernel.dtype))
    if layer.use_bias:
        dense.bias.assign(layer.bias)
    return dense
