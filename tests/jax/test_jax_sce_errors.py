"""keras_sce.kops under JAX: bad input is refused with a clear message, never a quiet number."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from keras_sce import kops

C, D = 23, 5


def _data():
    rng = np.random.default_rng(0)
    return (
        rng.normal(size=(2, 4, D)).astype("float32"),
        rng.integers(1, C, size=(2, 4)),
        rng.normal(size=(C, D)).astype("float32"),
    )


BAD = [
    pytest.param(dict(labels=np.ones((2, 4), "float32")), TypeError, "integer item ids",
                 id="float-labels"),
    pytest.param(dict(hidden=np.ones((2, 4, D), "int32")), TypeError, "floating-point",
                 id="int-hidden"),
    pytest.param(dict(labels=np.ones((2, 3), "int32")), ValueError, "without their last axis",
                 id="labels-shape"),
    pytest.param(dict(table=np.ones((C, D + 1), "float32")), ValueError, "table width",
                 id="table-width"),
    pytest.param(dict(table=np.ones((C,), "float32")), ValueError, "num_items, dim",
                 id="table-rank"),
    pytest.param(dict(padding_id=C), ValueError, "not a row of the item table", id="padding-id"),
    pytest.param(dict(padding_id=1.0), TypeError, "padding_id", id="padding-float"),
    pytest.param(dict(num_buckets=0), ValueError, "num_buckets", id="num-buckets-zero"),
    pytest.param(dict(bucket_size_y="64"), ValueError, "bucket_size_y", id="bucket-y-str"),
    pytest.param(dict(bucket_size_x=True), ValueError, "bucket_size_x", id="bucket-x-bool"),
    pytest.param(dict(chunk_size=-3), ValueError, "chunk_size", id="chunk"),
    pytest.param(dict(labels=np.full((2, 4), C)), ValueError, "outside [0, num_items",
                 id="id-too-large"),
    pytest.param(dict(labels=np.full((2, 4), -1)), ValueError, "outside [0, num_items",
                 id="id-negative"),
    pytest.param(dict(labels=np.full((2, 4), 2**40, "int64")), ValueError, "outside",
                 id="id-beyond-int32"),
    pytest.param(dict(sample_weight=-np.ones((2, 4))), ValueError, "non-negative",
                 id="negative-weight"),
    pytest.param(dict(sample_weight=np.ones((3,))), ValueError, "does not fit",
                 id="weight-shape"),
    pytest.param(dict(calibration={"num_samples": 0}), ValueError, "num_samples",
                 id="calibration"),
]


@pytest.mark.parametrize(("change", "error", "words"), BAD)
def test_bad_input_raises_naming_the_argument(change, error, words):
    hidden, labels, table = _data()
    args = dict(hidden=hidden, labels=labels, table=table)
    options = {"bucket_size_y": 4, **{k: v for k, v in change.items() if k not in args}}
    args.update({k: v for k, v in change.items() if k in args})
    with pytest.raises(error, match=words.replace("[", r"\[")):
        kops.scalable_cross_entropy(
            args["hidden"], args["labels"], args["table"], **options
        )


@pytest.mark.parametrize("fn", ["sce", "full"])
def test_traced_bad_ids_turn_the_loss_nan(fn):
    hidden, labels, table = _data()
    labels[1, 1] = C + 5
    op = (lambda h, y: kops.scalable_cross_entropy(h, y, table, bucket_size_y=4, seed=0)) if (
        fn == "sce") else (lambda h, y: kops.full_cross_entropy(h, y, table))
    assert np.isnan(float(jax.jit(op)(hidden, labels)))


def test_traced_negative_weight_turns_the_loss_nan():
    hidden, labels, table = _data()
    weight = np.ones((2, 4), "float32")
    weight[0, 0] = -1.0
    fn = jax.jit(lambda w: kops.scalable_cross_entropy(
        hidden, labels, table, bucket_size_y=4, seed=0, sample_weight=w))
    assert np.isnan(float(fn(weight)))


def test_oversized_buckets_warn_and_clamp():
    hidden, labels, table = _data()
    with pytest.warns(UserWarning, match="bucket_size_y"):
        big = kops.scalable_cross_entropy(hidden, labels, table, num_buckets=1,
                                          bucket_size_x=8, bucket_size_y=500, seed=0)
    exact = kops.full_cross_entropy(hidden, labels, table)
    np.testing.assert_allclose(float(big), float(exact), rtol=1e-5)
    with pytest.warns(UserWarning, match="bucket_size_x"):
        kops.scalable_cross_entropy(hidden, labels, table, bucket_size_x=99, bucket_size_y=3)


def test_bucket_top_k_checks_and_matches_a_full_sort():
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(3, D)).astype("float32")
    items = rng.normal(size=(C, D)).astype("float32")
    want = np.argsort(-(centres @ items.T), axis=1, kind="stable")[:, :6]
    for chunk in (None, 4, 7, C):
        _, got = kops.bucket_top_k(centres, items, 6, chunk_size=chunk)
        np.testing.assert_array_equal(np.asarray(got), want)
    with pytest.raises(ValueError, match="k"):
        kops.bucket_top_k(centres, items, C + 1)
    with pytest.raises(ValueError, match="chunk_size"):
        kops.bucket_top_k(centres, items, 3, chunk_size=0)
    with pytest.raises(ValueError, match="same width"):
        kops.bucket_top_k(centres, items[:, 1:], 3)
