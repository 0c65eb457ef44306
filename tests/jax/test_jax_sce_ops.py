"""keras_sce.kops under JAX: SCE against float64 NumPy references."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

from keras_sce import kops
from tests.jax import oracle
from tests.jax.fixtures import OP_C as C
from tests.jax.fixtures import OP_D as D
from tests.jax.fixtures import op_data


def _sce(hidden, labels, table, **kwargs):
    return kops.scalable_cross_entropy(hidden, labels, table, **kwargs)


FULL_COVERAGE = [
    pytest.param(dict(num_buckets=1), id="one-bucket"),
    pytest.param(dict(num_buckets=1, chunk_size=6), id="one-bucket-streamed"),
    pytest.param(dict(num_buckets=3, chunk_size=10), id="three-buckets-streamed"),
    pytest.param(dict(num_buckets=2, mix_x=True), id="mix-x"),
]


@pytest.mark.parametrize("options", FULL_COVERAGE)
def test_full_coverage_equals_full_ce_values_and_gradients(options):
    hidden, labels, table = op_data()
    rows = int((labels != 0).sum())
    want, want_gx, want_gw, _ = oracle.full_ce(hidden, labels, table)

    def loss(h, w):
        return _sce(h, labels, w, bucket_size_x=rows, bucket_size_y=C - 1, seed=3, **options)

    value, (gx, gw) = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(hidden, table)
    np.testing.assert_allclose(float(value), want, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(gx), want_gx, atol=1e-6)
    np.testing.assert_allclose(np.asarray(gw), want_gw, atol=1e-6)


def test_full_ce_op_matches_oracle():
    hidden, labels, table = op_data(1)
    want, want_gx, want_gw, _ = oracle.full_ce(hidden, labels, table)
    value, (gx, gw) = jax.value_and_grad(
        lambda h, w: kops.full_cross_entropy(h, labels, w), argnums=(0, 1)
    )(hidden, table)
    np.testing.assert_allclose(float(value), want, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(gx), want_gx, atol=1e-6)
    np.testing.assert_allclose(np.asarray(gw), want_gw, atol=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("mix_x", [False, True], ids=["gauss", "mix-x"])
def test_each_covered_row_is_a_lower_bound_of_its_full_ce(seed, mix_x):
    hidden, labels, table = op_data(seed, shape=(4, 9))
    *_, row_ce = oracle.full_ce(hidden, labels, table)
    loss, details = _sce(
        hidden, labels, table, num_buckets=3, bucket_size_x=6, bucket_size_y=5,
        mix_x=mix_x, seed=seed, return_details=True,
    )
    covered = np.asarray(details["row_covered"]).reshape(-1)
    row_loss = np.asarray(details["row_loss"]).reshape(-1)
    assert covered.any() and not covered.all()  # a real approximation, not full coverage
    assert np.all(row_loss[covered] <= row_ce[covered] + 1e-5)
    assert float(loss) <= row_ce[covered].mean() + 1e-5


@pytest.mark.parametrize("chunk", [None, 4, 11], ids=["dense", "chunk-4", "chunk-11"])
def test_fixed_centres_match_the_numpy_reference(chunk):
    hidden, labels, table = op_data(4, shape=(2, 11))
    centres = np.random.default_rng(9).normal(size=(4, D)).astype("float32")
    want = oracle.sce_fixed_centres(hidden, labels, table, centres, b_x=5, b_y=6)
    got = _sce(hidden, labels, table, centers=centres, bucket_size_x=5, bucket_size_y=6,
               chunk_size=chunk)
    np.testing.assert_allclose(float(got), want, rtol=1e-5)


def test_tensorflow_core_and_jax_agree_for_the_same_fixed_centres():
    """The TF core is plain TensorFlow, so both run here on the same inputs."""
    import tensorflow as tf

    from keras_sce import ops as tf_ops

    hidden, labels, table = op_data(5, shape=(3, 7))
    centres = np.random.default_rng(2).normal(size=(3, D)).astype("float32")
    kwargs = dict(centers=centres, bucket_size_x=4, bucket_size_y=7)
    want = oracle.sce_fixed_centres(hidden, labels, table, centres, b_x=4, b_y=7)
    tf_value = float(tf_ops.scalable_cross_entropy(
        tf.constant(hidden), tf.constant(labels, tf.int32), tf.constant(table), **kwargs
    ))
    jax_value = float(_sce(hidden, labels, table, **kwargs))
    np.testing.assert_allclose([tf_value, jax_value], [want, want], rtol=1e-5)


def test_padding_rows_are_ignored_even_when_nan():
    hidden, labels, table = op_data(6)
    poisoned = hidden.copy()
    poisoned[labels == 0] = np.nan

    def loss(h):
        return _sce(h, labels, table, num_buckets=2, bucket_size_y=8, seed=1)

    clean, clean_grad = jax.value_and_grad(loss)(hidden)
    dirty, dirty_grad = jax.value_and_grad(loss)(poisoned)
    assert np.isfinite(float(dirty))
    np.testing.assert_allclose(float(dirty), float(clean), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(dirty_grad), np.asarray(clean_grad), atol=1e-7)
    assert not np.asarray(clean_grad)[labels == 0].any()


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_all_padding_gives_zero_with_zero_gradient(jit):
    hidden, _, table = op_data(7)
    labels = np.zeros(hidden.shape[:-1], "int32")
    fn = jax.value_and_grad(lambda h, w: _sce(h, labels, w, bucket_size_y=8, seed=0),
                            argnums=(0, 1))
    value, (gx, gw) = (jax.jit(fn) if jit else fn)(hidden, table)
    assert float(value) == 0.0
    assert not np.asarray(gx).any() and not np.asarray(gw).any()


def test_zero_weights_ignore_rows_and_weights_scale_rows():
    hidden, labels, table = op_data(8, padding=False)
    weight = np.ones(labels.shape, "float32")
    weight[0] = 0.0
    options = dict(num_buckets=1, bucket_size_x=15, bucket_size_y=C - 1, seed=0)
    got = _sce(hidden, labels, table, sample_weight=weight, **options)
    *_, row_ce = oracle.full_ce(hidden, labels, table)
    np.testing.assert_allclose(float(got), row_ce.reshape(labels.shape)[1:].mean(), rtol=1e-5)
    per_sequence = _sce(hidden, labels, table, sample_weight=np.array([0.0, 1.0, 1.0]), **options)
    np.testing.assert_allclose(float(per_sequence), float(got), rtol=1e-6)


@pytest.mark.parametrize("where", ["hidden", "target-row"])
@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_non_finite_counted_input_makes_the_loss_nan(where, jit):
    hidden, labels, table = op_data(9)
    if where == "hidden":
        hidden[1, 2, 0] = np.inf
    else:
        table[labels[1, 2]] = np.nan
    fn = lambda h, w: _sce(h, labels, w, num_buckets=1, bucket_size_x=2, bucket_size_y=3, seed=0)
    assert np.isnan(float((jax.jit(fn) if jit else fn)(hidden, table)))


def test_jit_equals_eager_and_streaming_equals_dense():
    hidden, labels, table = op_data(10, shape=(4, 6))
    options = dict(num_buckets=3, bucket_size_x=5, bucket_size_y=7, seed=[4, 2])
    eager = float(_sce(hidden, labels, table, **options))
    jitted = float(jax.jit(lambda h: _sce(h, labels, table, **options))(hidden))
    streamed = float(_sce(hidden, labels, table, chunk_size=5, **options))
    np.testing.assert_allclose([jitted, streamed], [eager, eager], rtol=1e-6)


def _python(code, backend):
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                            text=True, timeout=300, cwd=pathlib.Path(__file__).parents[2])
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.split()


def test_kops_imports_no_tensorflow():
    code = "import sys, keras_sce.kops; print('tensorflow' in sys.modules)"
    assert _python(code, "jax") == ["False"]


def test_the_keras_ops_path_on_another_backend_matches_the_reference():
    """The same functions on the TensorFlow backend (keras.ops.fori_loop streaming)."""
    hidden, labels, table = op_data(11, shape=(2, 9))
    centres = np.random.default_rng(3).normal(size=(3, D)).astype("float32")
    want = oracle.sce_fixed_centres(hidden, labels, table, centres, b_x=4, b_y=5)
    code = (
        "import numpy as np; from keras_sce import kops; "
        f"h = np.array({hidden.tolist()}, 'float32'); y = np.array({labels.tolist()}); "
        f"w = np.array({table.tolist()}, 'float32'); c = np.array({centres.tolist()}, 'float32'); "
        "print(float(kops.scalable_cross_entropy(h, y, w, centers=c, bucket_size_x=4, "
        "bucket_size_y=5, chunk_size=4)))"
    )
    np.testing.assert_allclose(float(_python(code, "tensorflow")[-1]), want, rtol=1e-5)
