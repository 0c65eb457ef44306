"""Tests of keras_sce.sparsegrad.basis_pool: interned bases and kernel rotation."""

from __future__ import annotations

import numpy as np
import pytest

from keras_sce import sparsegrad
from keras_sce.sparsegrad.basis_pool import rotate_kernel, unrotate_kernel


def _orthogonal(n, rng):
    q, r = np.linalg.qr(rng.normal(size=(n, n)))
    return q * np.sign(np.diag(r))


def test_shared_basis_interns_by_value():
    rng = np.random.default_rng(0)
    p = _orthogonal(6, rng).astype("f4")
    a = sparsegrad.shared_basis(p)
    assert sparsegrad.shared_basis(p.copy()) is a
    assert sparsegrad.shared_basis(a) is a
    assert a.dtype == "float32" and not a.trainable
    other = sparsegrad.shared_basis(_orthogonal(6, rng).astype("f4"))
    assert other is not a


@pytest.mark.parametrize("sides", ["both", "input", "output", "none"])
def test_rotation_matches_numpy_and_round_trips(sides):
    rng = np.random.default_rng(1)
    kernel = rng.normal(size=(4, 7))
    p = _orthogonal(4, rng) if sides in ("both", "input") else None
    q = _orthogonal(7, rng) if sides in ("both", "output") else None
    rotated = rotate_kernel(kernel, p, q)
    expected = (np.eye(4) if p is None else p).T @ kernel @ (np.eye(7) if q is None else q)
    np.testing.assert_allclose(rotated, expected, atol=1e-12)
    np.testing.assert_allclose(unrotate_kernel(rotated, p, q), kernel, atol=1e-12)
    assert rotated.dtype == np.float64


def test_rotation_names_the_mismatched_basis():
    with pytest.raises(ValueError, match=r"input_basis must have shape \(4, 4\)"):
        rotate_kernel(np.zeros((4, 7)), np.eye(3), None)
    with pytest.raises(ValueError, match=r"output_basis must have shape \(7, 7\)"):
        rotate_kernel(np.zeros((4, 7)), None, np.eye(4))
