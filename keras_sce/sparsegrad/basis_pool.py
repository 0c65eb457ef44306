"""Frozen SparseGrad bases, interned by value: one variable per distinct basis.

Bases are constants once estimated, so every layer given an equal matrix can share one
non-trainable variable (one copy in memory, one entry in the saved file's weights).

Reference: V. Chekalina et al., "SparseGrad", EMNLP 2024, arXiv 2410.07383.
"""

from __future__ import annotations

import hashlib
import weakref

import keras
import numpy as np
import tensorflow as tf

from keras_sce.sparsegrad.registry import VariableRegistry

ORTHOGONALITY_TOLERANCE = 1e-3

# Interned bases by (shape, content hash); an entry goes when no layer holds it.
_POOL: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
# Basis variables already checked (orthogonal, non-trainable), so each is checked once.
_CHECKED = VariableRegistry()


def as_numpy(value) -> np.ndarray:
    """The NumPy value of an array-like, a tensor or a (Keras or TF) variable."""
    if isinstance(value, keras.Variable):
        return np.asarray(value.numpy())
    if isinstance(value, tf.Tensor | tf.Variable):
        return value.numpy()
    return np.asarray(value)


def check_orthogonal(matrix, name: str = "basis", tolerance: float = ORTHOGONALITY_TOLERANCE):
    """Checks that `matrix` is an orthogonal basis.

    Args:
        matrix: array-like, tensor or variable.
        name: what to call the matrix in the error message.
        tolerance: the largest accepted `max |MᵀM - I|`.

    Raises:
        ValueError: unless `matrix` is square, finite and `max |MᵀM - I| <= tolerance`.
    """
    m = as_numpy(matrix)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"{name} must be a square matrix, got shape {m.shape}.")
    if not np.all(np.isfinite(m)):
        raise ValueError(f"{name} contains non-finite values.")
    m32 = tf.constant(m, tf.float32)
    gram = tf.matmul(m32, m32, transpose_a=True)
    error = float(tf.reduce_max(tf.abs(gram - tf.eye(m.shape[0]))))
    if error > tolerance:
        raise ValueError(
            f"{name} must be orthogonal (max |MᵀM - I| <= {tolerance}), got {error:.3g}. "
            "Use keras_sce.sparsegrad.estimate_bases to obtain orthogonal bases."
        )


def shared_basis(matrix, name: str | None = None, *, check: bool = True) -> keras.Variable:
    """Returns the frozen float32 variable holding `matrix`, one per distinct value.

    Bases are frozen constants, so layers given equal basis matrices can share one
    variable: this function interns them by value (shape + content hash). Passing the
    same array (or equal arrays) to many `SparseGradDense` layers therefore keeps a
    single copy in memory. A `keras.Variable` is returned as is (after the checks).

    Args:
        matrix: square orthogonal array-like or `keras.Variable`.
        name: optional variable name (used only when a new variable is created).
        check: verify orthogonality (once per distinct basis).

    Returns:
        A non-trainable float32 `keras.Variable` with autocast disabled.

    Raises:
        ValueError: when the matrix is not orthogonal (with `check`), or a given
            variable is trainable.

    Example:

    >>> import numpy as np, keras_sce
    >>> p = np.linalg.qr(np.random.default_rng(0).normal(size=(32, 32)))[0]
    >>> basis = keras_sce.sparsegrad.shared_basis(p)
    >>> tuple(basis.shape), basis.trainable
    ((32, 32), False)
    >>> keras_sce.sparsegrad.shared_basis(p.copy()) is basis  # equal matrices: one variable
    True
    """
    if isinstance(matrix, keras.Variable):
        if matrix not in _CHECKED:
            if check:
                check_orthogonal(matrix, name or matrix.name)
            if matrix.trainable:
                raise ValueError(f"Basis variable {matrix.name} must be non-trainable.")
            _CHECKED.set(matrix, True)
        return matrix
    array = np.ascontiguousarray(as_numpy(matrix), dtype=np.float32)
    key = (array.shape, hashlib.blake2b(array.tobytes(), digest_size=16).hexdigest())
    variable = _POOL.get(key)
    if variable is not None:
        return variable
    if check:
        check_orthogonal(array, name or "basis")
    variable = keras.Variable(
        array, dtype="float32", trainable=False, autocast=False, name=name or "sparsegrad_basis"
    )
    _CHECKED.set(variable, True)
    _POOL[key] = variable
    return variable


def rotate_kernel(kernel, input_basis=None, output_basis=None) -> np.ndarray:
    """The kernel in the rotated basis, `K̃ = Pᵀ K Q`, computed in float64.

    Args:
        kernel: `[in, out]` array-like or variable `K`.
        input_basis: `[in, in]` basis `P`, or `None` for the identity.
        output_basis: `[out, out]` basis `Q`, or `None` for the identity.

    Returns:
        A float64 NumPy array of shape `[in, out]`.

    Raises:
        ValueError: when a basis does not match the kernel's shape.
    """
    rotated = np.asarray(as_numpy(kernel), dtype=np.float64)
    input_dim, units = rotated.shape
    if input_basis is not None:
        p = np.asarray(as_numpy(input_basis), dtype=np.float64)
        if p.shape != (input_dim, input_dim):
            raise ValueError(
                f"input_basis must have shape ({input_dim}, {input_dim}), got {p.shape}."
            )
        rotated = p.T @ rotated
    if output_basis is not None:
        q = np.asarray(as_numpy(output_basis), dtype=np.float64)
        if q.shape != (units, units):
            raise ValueError(f"output_basis must have shape ({units}, {units}), got {q.shape}.")
        rotated = rotated @ q
    return rotated


def unrotate_kernel(rotated, input_basis=None, output_basis=None) -> np.ndarray:
    """The kernel in the original basis, `K = P K̃ Qᵀ`, computed in float64.

    Args:
        rotated: `[in, out]` array-like or variable `K̃`.
        input_basis: `[in, in]` basis `P`, or `None` for the identity.
        output_basis: `[out, out]` basis `Q`, or `None` for the identity.

    Returns:
        A float64 NumPy array of shape `[in, out]`.
    """
    kernel = np.asarray(as_numpy(rotated), dtype=np.float64)
    if input_basis is not None:
        kernel = np.asarray(as_numpy(input_basis), dtype=np.float64) @ kernel
    if output_basis is not None:
        kernel = kernel @ np.asarray(as_numpy(output_basis), dtype=np.float64).T
    return kernel
