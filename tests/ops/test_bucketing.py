"""bucket_top_k: exactness against tf.math.top_k, streaming, masks, errors."""

import numpy as np
import pytest
import tensorflow as tf

from keras_sce.ops import bucket_top_k


def _reference(centers, vectors, k, mask=None):
    scores = centers @ vectors.T
    if mask is not None:
        scores = np.where(mask[None, :], scores, -np.inf)
    idx = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, idx, axis=1), idx


@pytest.mark.parametrize(
    "num_vectors,chunk_size",
    [(1001, None), (1001, 100), (1001, 77), (1000, 250), (1001, 1000), (1001, 5000), (64, 63)],
    ids=lambda v: f"{v}",
)
def test_matches_full_top_k(num_vectors, chunk_size):
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(7, 17)).astype("float32")
    vectors = rng.normal(size=(num_vectors, 17)).astype("float32")
    k = 33 if num_vectors > 33 else 8
    scores, idx = bucket_top_k(centers, vectors, k, chunk_size=chunk_size)
    ref_scores, ref_idx = _reference(centers, vectors, k)
    assert idx.dtype == tf.int32 and idx.shape == (7, k)
    np.testing.assert_array_equal(np.sort(idx.numpy(), 1), np.sort(ref_idx, 1))
    np.testing.assert_allclose(scores.numpy(), ref_scores, rtol=1e-5, atol=1e-5)


def test_streamed_equals_dense_with_mask_and_exclude():
    rng = np.random.default_rng(1)
    centers = rng.normal(size=(5, 8)).astype("float32")
    vectors = rng.normal(size=(503, 8)).astype("float32")
    mask = rng.random(503) > 0.3
    mask[0] = True
    for chunk in (None, 50, 128):
        _, idx = bucket_top_k(centers, vectors, 20, chunk_size=chunk, mask=mask, exclude_id=0)
        idx = idx.numpy()
        ref_mask = mask.copy()
        ref_mask[0] = False
        _, ref_idx = _reference(centers, vectors, 20, ref_mask)
        np.testing.assert_array_equal(np.sort(idx, 1), np.sort(ref_idx, 1))
        assert not np.isin(idx, np.flatnonzero(~ref_mask)).any()


def test_fewer_eligible_than_k_gives_minus_inf_scores():
    centers = tf.random.normal([3, 4])
    vectors = tf.random.normal([40, 4])
    mask = tf.range(40) < 5
    for chunk in (None, 16):
        scores, idx = bucket_top_k(centers, vectors, 10, chunk_size=chunk, mask=mask)
        finite = np.isfinite(scores.numpy())
        assert finite.sum(axis=1).tolist() == [5, 5, 5]
        assert set(idx.numpy()[finite].tolist()) <= set(range(5))


def test_runs_inside_outer_xla_function():
    centers = tf.random.normal([4, 6])
    vectors = tf.random.normal([300, 6])

    @tf.function(jit_compile=True)
    def outer(c, v):
        return bucket_top_k(c, v, 9, chunk_size=64)

    s1, i1 = outer(centers, vectors)
    s2, i2 = bucket_top_k(centers, vectors, 9)
    np.testing.assert_array_equal(np.sort(i1.numpy(), 1), np.sort(i2.numpy(), 1))


@pytest.mark.parametrize(
    "kwargs,error",
    [
        (dict(k=0), ValueError),
        (dict(k=2000), ValueError),
        (dict(k=3, chunk_size=0), ValueError),
        (dict(k=3, mask=tf.ones([100], tf.int32)), TypeError),
    ],
    ids=["k0", "k_too_big", "chunk0", "int_mask"],
)
def test_bad_arguments(kwargs, error):
    with pytest.raises(error):
        bucket_top_k(tf.random.normal([2, 5]), tf.random.normal([100, 5]), **kwargs)


def test_width_mismatch():
    with pytest.raises(ValueError, match="width"):
        bucket_top_k(tf.random.normal([2, 5]), tf.random.normal([100, 6]), 3)


def test_mask_and_exclude_id_are_validated():
    centers, vectors = tf.random.normal([2, 5]), tf.random.normal([10, 5])
    with pytest.raises(ValueError, match="mask"):
        bucket_top_k(centers, vectors, 3, mask=tf.ones([4], tf.bool))
    for bad in (10, -1):
        with pytest.raises(ValueError, match="exclude_id"):
            bucket_top_k(centers, vectors, 3, exclude_id=bad)


@pytest.mark.parametrize("dtype", ["float64", "bfloat16"])
def test_other_dtypes_with_exclusion(dtype):
    centers = tf.random.normal([3, 6], dtype=tf.float64 if dtype == "float64" else tf.float32)
    vectors = tf.cast(tf.random.normal([200, 6]), dtype)
    for chunk in (None, 64):
        scores, idx = bucket_top_k(centers, vectors, 7, chunk_size=chunk, exclude_id=0)
        assert scores.dtype == centers.dtype and not np.any(idx.numpy() == 0)
