"""SparseGrad bases: streamed higher-order SVD of the preliminary kernel gradients.

For every layer group (e.g. all feed-forward up-projections of a transformer), the
kernel gradients `G` (`[in, out]`, Keras layout) of a few ordinary training steps are
reduced to the two Gram sums `Σ G Gᵀ` (`[in, in]`) and `Σ Gᵀ G` (`[out, out]`), so the
gradient stack is never stored. Their eigenvectors, sorted by decreasing eigenvalue
and with a fixed sign convention, are the left singular vectors of the stack's two
unfoldings (higher-order SVD): the input basis `P` and the output basis `Q`.

Reference: V. Chekalina et al., "SparseGrad", EMNLP 2024, arXiv 2410.07383.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import tensorflow as tf

ORIENTATIONS = ("consistent", "paper")


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

    >>> import numpy as np, keras_sce
    >>> rng = np.random.default_rng(0)
    >>> acc = keras_sce.sparsegrad.BasisAccumulator()
    >>> for step in range(3):  # one kernel gradient [in, out] per group and step
    ...     acc.update("up", rng.normal(size=(4, 6)))
    ...     acc.update("down", rng.normal(size=(6, 4)))
    >>> bases = acc.bases()  # {group: Bases}
    >>> sorted(bases), bases["up"].num_gradients
    (['down', 'up'], 3)
    >>> bases["up"].input_basis.shape, bases["up"].output_basis.shape
    ((4, 4), (6, 6))
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
