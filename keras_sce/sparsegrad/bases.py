"""SparseGrad bases: streamed HOSVD of the preliminary kernel gradients.

For every layer group (e.g. all feed-forward up-projections of a transformer), the
kernel gradients `G` (`[in, out]`, Keras layout) of a few ordinary training steps are
reduced to the two Gram sums `Σ G Gᵀ` (`[in, in]`) and `Σ Gᵀ G` (`[out, out]`), so the
gradient stack is never stored. Their eigenvectors, sorted by decreasing eigenvalue
and with a fixed sign convention, are the left singular vectors of the stack's two
unfoldings (higher-order SVD): the input basis `P` and the output basis `Q`.

Reference: V. Chekalina et al., "SparseGrad", EMNLP 2024, arXiv 2410.07383.
"""

from __future__ import annotations

import hashlib
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import keras
import numpy as np
import tensorflow as tf

ORIENTATIONS = ("consistent", "paper")
ORTHOGONALITY_TOLERANCE = 1e-3

# Frozen bases are interned by value: layers given equal matrices share one variable.
_BASIS_POOL: weakref.WeakValueDictionary = weakref.WeakValueDictionary()


def _as_numpy(value) -> np.ndarray:
    if isinstance(value, keras.Variable):
        return np.asarray(value.numpy())
    if isinstance(value, tf.Tensor | tf.Variable):
        return value.numpy()
    return np.asarray(value)


def check_orthogonal(matrix, name: str = "basis", tolerance: float = ORTHOGONALITY_TOLERANCE):
    """Raises `ValueError` unless `matrix` is square with `max |MᵀM - I| <= tolerance`."""
    m = _as_numpy(matrix)
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
    """
    if isinstance(matrix, keras.Variable):
        if not getattr(matrix, "_keras_sce_checked", False):
            if check:
                check_orthogonal(matrix, name or matrix.name)
            if matrix.trainable:
                raise ValueError(f"Basis variable {matrix.name} must be non-trainable.")
            matrix._keras_sce_checked = True
        return matrix
    array = np.ascontiguousarray(_as_numpy(matrix), dtype=np.float32)
    key = (array.shape, hashlib.blake2b(array.tobytes(), digest_size=16).hexdigest())
    variable = _BASIS_POOL.get(key)
    if variable is not None:
        return variable
    if check:
        check_orthogonal(array, name or "basis")
    variable = keras.Variable(
        array, dtype="float32", trainable=False, autocast=False, name=name or "sparsegrad_basis"
    )
    variable._keras_sce_checked = True
    variable._keras_sce_pool_key = key
    _BASIS_POOL[key] = variable
    return variable


def fix_signs(vectors: np.ndarray) -> np.ndarray:
    """Flips each column so that its largest-magnitude entry is positive.

    Ties in magnitude are broken by the first occurrence, so the convention is
    deterministic and the selected entries do not depend on the eigen-solver's signs.
    """
    vectors = np.array(vectors, copy=True)
    rows = np.argmax(np.abs(vectors), axis=0)
    signs = np.sign(vectors[rows, np.arange(vectors.shape[1])])
    signs[signs == 0] = 1.0
    return vectors * signs


def _eigenbasis(gram: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    gram = 0.5 * (gram + gram.T)
    values, vectors = np.linalg.eigh(gram)
    order = np.argsort(values)[::-1]
    return fix_signs(vectors[:, order]), values[order]


class Bases(NamedTuple):
    """Orthogonal bases of one layer group.

    Attributes:
        input_basis: float32 `[in, in]` matrix `P` (columns are basis vectors).
        output_basis: float32 `[out, out]` matrix `Q`.
        input_spectrum: eigenvalues of `Σ G Gᵀ`, decreasing (float64).
        output_spectrum: eigenvalues of `Σ Gᵀ G`, decreasing (float64).
        num_gradients: number of gradient matrices accumulated.
        orientation: `"consistent"` or `"paper"`.
    """

    input_basis: np.ndarray
    output_basis: np.ndarray
    input_spectrum: np.ndarray
    output_spectrum: np.ndarray
    num_gradients: int
    orientation: str


class BasisAccumulator:
    """Streams `Σ G Gᵀ` and `Σ Gᵀ G` per group without storing the gradients.

    Example:

    ```python
    acc = keras_sce.sparsegrad.BasisAccumulator()
    for step_gradients in gradient_stream:        # {group: [G, ...]}
        for group, grads in step_gradients.items():
            acc.update(group, grads)
    bases = acc.bases()                           # {group: Bases}
    ```
    """

    def __init__(self):
        self._left: dict[str, tf.Tensor] = {}
        self._right: dict[str, tf.Tensor] = {}
        self._counts: dict[str, int] = {}

    @property
    def groups(self) -> list[str]:
        return list(self._left)

    def update(self, group: str, gradients) -> None:
        """Adds one gradient `[in, out]`, a stack `[n, in, out]` or a list of them."""
        if isinstance(gradients, list | tuple):
            for g in gradients:
                self.update(group, g)
            return
        g = tf.convert_to_tensor(gradients, dtype=tf.float32)
        if g.shape.rank == 2:
            g = g[None]
        if g.shape.rank != 3:
            raise ValueError(
                f"Gradients of group {group!r} must be [in, out] or [n, in, out], "
                f"got shape {g.shape}."
            )
        if not bool(tf.reduce_all(tf.math.is_finite(g))):
            raise ValueError(f"Gradient of group {group!r} contains non-finite values.")
        left = tf.einsum("nij,nkj->ik", g, g)
        right = tf.einsum("nij,nik->jk", g, g)
        if group in self._left:
            if self._left[group].shape != left.shape or self._right[group].shape != right.shape:
                raise ValueError(
                    f"Group {group!r} mixes gradient shapes: expected "
                    f"[{self._left[group].shape[0]}, {self._right[group].shape[0]}], got "
                    f"[{g.shape[1]}, {g.shape[2]}]."
                )
            self._left[group] += left
            self._right[group] += right
            self._counts[group] += int(g.shape[0])
        else:
            self._left[group] = left
            self._right[group] = right
            self._counts[group] = int(g.shape[0])

    def bases(self, orientation: str = "consistent") -> dict[str, Bases]:
        """Eigen-decomposes the accumulated Gram matrices (float64) of every group.

        Args:
            orientation: `"consistent"` (default): `P` holds the eigenvectors of
                `Σ G Gᵀ` as columns, so the gradient in the new basis is
                `Pᵀ (∂L/∂K) Q`, projected onto the singular vectors on both sides.
                `"paper"`: the authors' code, which uses the transposed input factor
                (`P = Uᵀ`); it makes the selected entries depend on arbitrary
                eigenvector signs and concentrates far less gradient energy. Offered
                only to reproduce the paper.
        """
        if orientation not in ORIENTATIONS:
            raise ValueError(f"orientation must be one of {ORIENTATIONS}, got {orientation!r}")
        if not self._left:
            raise ValueError("No gradients were accumulated.")
        result = {}
        for group in self._left:
            u, su = _eigenbasis(self._left[group].numpy().astype(np.float64))
            v, sv = _eigenbasis(self._right[group].numpy().astype(np.float64))
            p = u.T if orientation == "paper" else u
            result[group] = Bases(
                input_basis=p.astype(np.float32),
                output_basis=v.astype(np.float32),
                input_spectrum=su,
                output_spectrum=sv,
                num_gradients=self._counts[group],
                orientation=orientation,
            )
        return result


def _kernel_of(layer_or_variable):
    kernel = getattr(layer_or_variable, "kernel", layer_or_variable)
    if not isinstance(kernel, keras.Variable):
        raise TypeError(
            "groups must map names to lists of Dense layers (with a `kernel`) or kernel "
            f"variables, got {type(layer_or_variable).__name__}."
        )
    if len(kernel.shape) != 2:
        raise ValueError(f"Kernel {kernel.path} must be 2-D, got shape {kernel.shape}.")
    return kernel


def _unpack(batch):
    if isinstance(batch, tuple | list):
        if len(batch) == 2:
            return batch[0], batch[1], None
        if len(batch) == 3:
            return batch[0], batch[1], batch[2]
    raise ValueError("data must yield (x, y) or (x, y, sample_weight) batches.")


def iterate_gradients(
    model: keras.Model,
    data: Iterable,
    loss: Callable,
    groups: Mapping[str, Sequence[Any]],
    num_steps: int = 30,
    optimizer: keras.optimizers.Optimizer | None = None,
):
    """Yields `{group: [G, ...]}` kernel gradients of `num_steps` training batches.

    Args:
        model: a built Keras model.
        data: iterable of `(x, y)` or `(x, y, sample_weight)` batches.
        loss: `loss(y_true, y_pred[, sample_weight])`, e.g. a `keras.losses.Loss`.
        groups: `{group_name: [Dense layers or kernel variables]}`.
        num_steps: number of batches to use.
        optimizer: if given, every step is an ordinary training step (all trainable
            variables are updated); if `None`, the model is left untouched.
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}.")
    kernels = {name: [_kernel_of(item) for item in items] for name, items in groups.items()}
    flat = [k for ks in kernels.values() for k in ks]
    trainables = list(model.trainable_variables) if optimizer is not None else []
    watched = flat + [v for v in trainables if all(v is not k for k in flat)]
    for step, batch in enumerate(data):
        if step >= num_steps:
            break
        x, y, sample_weight = _unpack(batch)
        with tf.GradientTape() as tape:
            for v in watched:
                tape.watch(v.value)  # also kernels of frozen (non-trainable) layers
            y_pred = model(x, training=True)
            value = loss(y, y_pred) if sample_weight is None else loss(y, y_pred, sample_weight)
        grads = tape.gradient(value, [v.value for v in watched])
        out, i = {}, 0
        for name, ks in kernels.items():
            out[name] = []
            for k in ks:
                if grads[i] is None:
                    raise ValueError(f"Kernel {k.path} gets no gradient from the loss.")
                out[name].append(tf.convert_to_tensor(grads[i]))
                i += 1
        if optimizer is not None:
            pairs = [(g, v) for g, v in zip(grads, watched, strict=True) if g is not None]
            optimizer.apply([g for g, _ in pairs], [v for _, v in pairs])
        yield out


def estimate_bases(
    gradients: Iterable[Mapping[str, Any]] | None = None,
    *,
    model: keras.Model | None = None,
    data: Iterable | None = None,
    loss: Callable | None = None,
    groups: Mapping[str, Sequence[Any]] | None = None,
    num_steps: int = 30,
    optimizer: keras.optimizers.Optimizer | None = None,
    orientation: str = "consistent",
) -> dict[str, Bases]:
    """Estimates SparseGrad's frozen orthogonal bases per layer group.

    Either consumes a stream of gradients you provide (`gradients`: an iterable of
    `{group: G or [G, ...]}` mappings with `G` of shape `[in, out]`), or computes them
    itself from `num_steps` batches of `data` (`model`, `data`, `loss`, `groups`). The
    Gram sums `Σ G Gᵀ`, `Σ Gᵀ G` are accumulated per group (float32) and
    eigen-decomposed in float64; eigenvectors are sorted by decreasing eigenvalue and
    each is signed so that its largest-magnitude entry is positive.

    Args:
        gradients: optional iterable of `{group: gradient(s)}` per step.
        model, data, loss, groups, num_steps, optimizer: see `iterate_gradients`.
        orientation: `"consistent"` (default) or `"paper"`; see
            `BasisAccumulator.bases`.

    Returns:
        `{group: Bases}`. Pass `bases[g].input_basis` / `.output_basis` to
        `SparseGradDense` (equal matrices are shared, one variable per basis).

    Example:

    ```python
    bases = keras_sce.sparsegrad.estimate_bases(
        model=model, data=train_ds, loss=loss_fn, num_steps=30,
        groups={"up": [b.up for b in blocks], "down": [b.down for b in blocks]},
    )
    ```
    """
    if gradients is None:
        if model is None or data is None or loss is None or groups is None:
            raise ValueError("Pass either `gradients`, or all of model, data, loss and groups.")
        gradients = iterate_gradients(model, data, loss, groups, num_steps, optimizer)
    elif model is not None:
        raise ValueError("Pass either `gradients` or `model`, not both.")
    accumulator = BasisAccumulator()
    for step in gradients:
        for group, grads in step.items():
            accumulator.update(group, grads)
    return accumulator.bases(orientation)


def estimate_support(
    gradients: Iterable[Mapping[str, Any]] | None = None,
    *,
    bases: Mapping[str, Bases],
    support_size: int | Mapping[str, int],
    model: keras.Model | None = None,
    data: Iterable | None = None,
    loss: Callable | None = None,
    groups: Mapping[str, Sequence[Any]] | None = None,
    num_steps: int = 30,
) -> dict[str, list[np.ndarray]]:
    """Chooses, per layer, the bounded support of the O(k)-state mode.

    For each layer `l` of each group, accumulates the energy `Σ_t Ĝ_t²` of its kernel
    gradients in the rotated basis (`Ĝ = Pᵀ G Q`) over the preliminary steps and keeps
    the `support_size` entries of largest energy. Pass the result as `support=` to
    `SparseGradDense`: per-step top-k is then taken inside the support, and the
    optimizer keeps moments only there.

    Args:
        gradients: iterable of `{group: [G_layer0, G_layer1, ...]}` per step (the layer
            order must be the same at every step), or `None` to compute them from
            `model`, `data`, `loss`, `groups` (see `iterate_gradients`; no update).
        bases: `{group: Bases}` from `estimate_bases`.
        support_size: int, or `{group: int}`.

    Returns:
        `{group: [sorted int32 flat indices per layer]}`.
    """
    if gradients is None:
        if model is None or data is None or loss is None or groups is None:
            raise ValueError("Pass either `gradients`, or all of model, data, loss and groups.")
        gradients = iterate_gradients(model, data, loss, groups, num_steps)
    energy: dict[str, list[tf.Tensor]] = {}
    for step in gradients:
        for group, grads in step.items():
            if group not in bases:
                raise ValueError(f"No bases for group {group!r}.")
            if not isinstance(grads, list | tuple):
                grads = [grads]
            p = tf.constant(bases[group].input_basis)
            q = tf.constant(bases[group].output_basis)
            rotated = [
                tf.square(tf.matmul(tf.matmul(p, tf.cast(g, tf.float32), transpose_a=True), q))
                for g in grads
            ]
            if group not in energy:
                energy[group] = rotated
            else:
                if len(energy[group]) != len(rotated):
                    raise ValueError(f"Group {group!r} changed its number of layers.")
                energy[group] = [a + b for a, b in zip(energy[group], rotated, strict=True)]
    if not energy:
        raise ValueError("No gradients were accumulated.")
    result = {}
    for group, layers in energy.items():
        size = support_size[group] if isinstance(support_size, Mapping) else support_size
        n = int(layers[0].shape[0] * layers[0].shape[1])
        if not 1 <= size <= n:
            raise ValueError(f"support_size for {group!r} must be in [1, {n}], got {size}.")
        result[group] = [
            np.sort(tf.math.top_k(tf.reshape(e, [-1]), k=size).indices.numpy()).astype(np.int32)
            for e in layers
        ]
    return result


def lora_equivalent_budget(rank: int, input_dim: int, units: int) -> int:
    """Number of selected entries `k = r·(in + out)` matching a LoRA rank `r`."""
    if rank < 1:
        raise ValueError(f"rank must be >= 1, got {rank}.")
    return int(min(rank * (input_dim + units), input_dim * units))
