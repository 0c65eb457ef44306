"""Calibrated SCE in keras.ops under JAX, against float64 NumPy oracles: exactness,
unbiasedness, the excluded set, XLA, memory, and the Keras loss."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import keras
import numpy as np
import pytest

import keras_sce
from keras_sce import kops
from keras_sce._calibration import Calibration
from keras_sce.kops.calibration import (
    count_below,
    draw_samples,
    integer_proposal,
    kept_bucket,
)
from tests.helpers.calibration_oracle import check_estimates, seen_parts
from tests.jax.fixtures import embedding_model, next_item_batches
from tests.jax.oracle import full_ce

N, C, D = 37, 1001, 17  # odd shapes on purpose


def _problem(seed=0, padding_rows=5, scale=1.0):
    rng = np.random.default_rng(seed)
    hidden = (rng.normal(size=(N, D)) * scale).astype("float32")
    labels = rng.integers(1, C, size=N)
    labels[:padding_rows] = 0
    table = (rng.normal(size=(C, D)) * scale).astype("float32")
    return hidden, labels, table


def _unigram(c=C, seed=1, zeros=0):
    counts = np.random.default_rng(seed).zipf(1.3, size=c).astype(float)
    counts[1:1 + zeros] = 0.0
    return counts


def _sce(hidden, labels, table, **options):
    return kops.scalable_cross_entropy(hidden, labels, table, **options)


@pytest.mark.parametrize("padding_id", [0, None], ids=["pad0", "nopad"])
@pytest.mark.parametrize("bucket_size_x", [N, 11], ids=["all_rows", "some_rows"])
@pytest.mark.parametrize("chunk", [None, 300], ids=["dense", "chunked"])
def test_cover_proposal_equals_full_ce_values_and_gradients(padding_id, bucket_size_x, chunk):
    hidden, labels, table = _problem(padding_rows=5 if padding_id == 0 else 0)
    options = dict(num_buckets=3, bucket_size_x=bucket_size_x, bucket_size_y=100,
                   chunk_size=chunk, padding_id=padding_id, seed=1,
                   calibration={"proposal": "cover"})
    loss, (g_h, g_w) = jax.value_and_grad(
        lambda h, w: _sce(h, labels, w, **options), argnums=(0, 1))(hidden, table)
    _, details = _sce(hidden, labels, table, return_details=True, **options)
    covered = np.asarray(details["row_covered"], float)
    assert covered.sum() > 0
    value, ref_h, ref_w, _ = full_ce(hidden, labels, table, padding_id, row_weight=covered)
    np.testing.assert_allclose(float(loss), value, rtol=1e-5)
    np.testing.assert_allclose(g_h, ref_h, atol=1e-6)
    np.testing.assert_allclose(g_w, ref_w, atol=1e-6)


def test_default_off_is_bit_identical():
    hidden, labels, table = _problem(seed=2)
    options = dict(num_buckets=4, bucket_size_x=12, bucket_size_y=50, seed=3)
    ref = jax.value_and_grad(lambda h: _sce(h, labels, table, **options))(hidden)
    for off in (None, False):
        got = jax.value_and_grad(
            lambda h, off=off: _sce(h, labels, table, calibration=off, **options))(hidden)
        np.testing.assert_array_equal(ref[0], got[0])
        np.testing.assert_array_equal(ref[1], got[1])


_PROPOSALS = {
    "uniform": dict(proposal="uniform"),
    "unigram_pow075_mix": dict(proposal="unigram", item_counts=_unigram(zeros=50), power=0.75,
                               uniform_mix=0.05),
}


@pytest.mark.parametrize("case", list(_PROPOSALS), ids=list(_PROPOSALS))
def test_normaliser_estimate_is_unbiased_and_log_bias_within_the_bound(case):
    seeds, m, b_y = 400, 64, 60
    hidden, labels, table = _problem(seed=4, scale=0.6)
    centers = np.random.default_rng(5).normal(size=(3, D)).astype("float32")
    cal = Calibration(m, **_PROPOSALS[case])
    run = jax.jit(lambda s: _sce(hidden, labels, table, bucket_size_x=N, bucket_size_y=b_y,
                                 centers=centers, seed=s, calibration=cal,
                                 return_details=True)[1]["row_loss"])
    row_losses = np.stack([np.asarray(run(jnp.array([7, s]))) for s in range(seeds)])
    exact_part, unseen = seen_parts(hidden, labels, table, centers, b_y)
    # The weights use the probability each item's integer interval really has.
    q = integer_proposal(cal, C, 0)[1] if cal.proposal == "unigram" else (
        cal.proposal_probabilities(C, 0))
    check_estimates(row_losses, hidden, labels, table, exact_part, unseen, q, m)


def test_padding_and_positive_are_never_sampled_negatives():
    # Positives that dominate their rows, and a padding row that beats every positive:
    # counting the padding or the positive among the samples (weight C/m) would make
    # the loss large; the full CE is ~1e-7.
    c, n = 40, 16
    rng = np.random.default_rng(6)
    table = (np.eye(c) + 0.01 * rng.normal(size=(c, c))).astype("float32")
    labels = rng.integers(1, c, size=n)
    hidden = (20.0 * np.eye(c)[labels]).astype("float32")
    table[0] = 2.0
    counts = np.ones(c)
    counts[0] = 1e9  # the padding id's count must be ignored
    for cal in ({"num_samples": 500},
                {"num_samples": 500, "proposal": "unigram", "item_counts": counts}):
        loss = _sce(hidden, labels, table, num_buckets=2, bucket_size_x=n, bucket_size_y=3,
                    seed=0, calibration=cal)
        assert 0.0 <= float(loss) < 1e-4
    for pad in (0, 7, None):
        counts = np.ones(c)
        if pad is not None:
            counts[pad] = 1e9
        for cal in (Calibration(5000), Calibration(5000, "unigram", item_counts=counts)):
            ids, log_w = draw_samples(cal, c, pad, jnp.array([1, 2]), None, "float32")
            assert pad not in set(np.asarray(ids).tolist())
            assert len(set(np.asarray(ids).tolist())) == c - (pad is not None)
            assert np.all(np.isfinite(np.asarray(log_w)))


def test_unigram_draws_follow_the_proposal():
    counts = _unigram(c=50, zeros=5)
    cal = Calibration(200_000, "unigram", item_counts=counts, power=0.75, uniform_mix=0.05)
    ids, log_w = draw_samples(cal, 50, 0, 3, None, "float32")
    q = integer_proposal(cal, 50, 0)[1]
    np.testing.assert_allclose(q, cal.proposal_probabilities(50, 0), rtol=1e-12, atol=1e-15)
    freq = np.bincount(np.asarray(ids), minlength=50) / 200_000
    assert freq[0] == 0
    assert np.all(np.abs(freq - q) <= 5 * np.sqrt(q / 200_000) + 1e-9)
    np.testing.assert_allclose(np.asarray(log_w), -np.log(200_000 * q[np.asarray(ids)]),
                               rtol=1e-5)


def test_an_item_the_integer_proposal_cannot_draw_is_refused():
    counts = np.ones(20)
    counts[5] = 1e-30
    with pytest.raises(ValueError, match="too small to be drawn"):
        integer_proposal(Calibration(8, "unigram", item_counts=counts), 20, 0)


@pytest.mark.parametrize("case", ["uniform", "unigram"])
def test_jit_equals_eager_values_and_gradients(case):
    hidden, labels, table = _problem(seed=7)
    centers = np.random.default_rng(1).normal(size=(5, D)).astype("float32")
    cal = {"num_samples": 200} if case == "uniform" else {
        "num_samples": 200, "proposal": "unigram", "item_counts": _unigram(), "power": 0.75}

    def grads(h, w):
        return jax.value_and_grad(
            lambda h, w: _sce(h, labels, w, bucket_size_x=9, bucket_size_y=64, chunk_size=256,
                              centers=centers, seed=jnp.array([3, 4]), calibration=cal),
            argnums=(0, 1))(h, w)

    eager, xla = grads(hidden, table), jax.jit(grads)(hidden, table)
    for a, b in zip(jax.tree_util.tree_leaves(eager), jax.tree_util.tree_leaves(xla),
                    strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


_SHAPE = re.compile(r"\b(?:f32|f64|s32|s64|u32|u64|pred)\[([0-9,]+)\]")


@pytest.mark.parametrize("proposal", ["uniform", "unigram"])
def test_compiled_program_memory_is_linear_in_samples(proposal):
    """No N x C or m x C logits, no n_b x b_y x m comparison: the largest buffer that
    is not the table (or the [C] proposal) is O(N*m + n_b*(b_y + chunk))."""
    n, c, d, m, n_b, b_x, b_y, chunk = 64, 20_000, 8, 64, 4, 16, 32, 1024
    cal = {"num_samples": m} if proposal == "uniform" else {
        "num_samples": m, "proposal": "unigram", "item_counts": _unigram(c)}

    def step(h, y, w):
        return jax.value_and_grad(
            lambda h, w: _sce(h, y, w, num_buckets=n_b, bucket_size_x=b_x, bucket_size_y=b_y,
                              chunk_size=chunk, seed=jnp.array([1, 1]), calibration=cal),
            argnums=(0, 1))(h, w)

    compiled = jax.jit(step).lower(
        jnp.zeros((n, d)), jnp.ones((n,), jnp.int32), jnp.zeros((c, d))).compile()
    sizes = []
    for dims in _SHAPE.findall(compiled.as_text()):
        shape = [int(v) for v in dims.split(",")]
        if shape in ([c, d], [c], [1, c], [c - 2]):  # the table; the proposal's [C] tables
            continue
        sizes.append(int(np.prod(shape)))
    raw_sce = max(chunk * d, n_b * (b_y + chunk), n_b * b_x * b_y)
    assert max(sizes) <= max(n * (m + 1), raw_sce), max(sizes)


def test_binary_search_and_kept_bucket_match_numpy():
    rng = np.random.default_rng(12)
    values = np.sort(rng.integers(0, 50, size=(5, 37)), axis=1).astype("int32")
    probes = rng.integers(-2, 53, size=(5, 11)).astype("int32")
    for inclusive, side in ((False, "left"), (True, "right")):
        got = np.asarray(count_below(jnp.asarray(values), jnp.asarray(probes), inclusive))
        want = np.stack([np.searchsorted(v, p, side) for v, p in zip(values, probes, strict=True)])
        np.testing.assert_array_equal(got, want)
    rows = np.stack([rng.permutation(9)[:4] for _ in range(6)]).astype("int32")  # 6 x 4
    loss = rng.choice([-np.inf, 0.0, 1.5, 2.25, -0.5, 0.75], size=rows.shape)
    bucket, kept_loss = kept_bucket(jnp.asarray(rows), jnp.asarray(loss.ravel(), "float32"), 9)
    for r in range(9):
        where = np.argwhere(rows == r)
        if len(where):
            best = max(loss[b, k] for b, k in where)
            assert int(bucket[r]) == min(b for b, k in where if loss[b, k] == best)
            assert float(kept_loss[r]) == best
        else:
            assert float(kept_loss[r]) == -np.inf


def test_sample_weight_padding_rows_and_empty_batch_as_in_raw_sce():
    hidden, labels, table = _problem(seed=9)
    options = dict(num_buckets=2, bucket_size_x=N, bucket_size_y=80, seed=2,
                   calibration={"proposal": "cover"})
    w = np.zeros(N, "float32")
    w[5:15] = 2.0
    w[20] = 0.5
    value, _, _, _ = full_ce(hidden, labels, table, row_weight=w)
    got = _sce(hidden, labels, table, sample_weight=w, **options)
    np.testing.assert_allclose(float(got), value, rtol=1e-5)
    # NaN at padding positions stays out of the calibrated loss and its gradients.
    poisoned = np.where((labels == 0)[:, None], np.nan, hidden).astype("float32")
    sampled = dict(options, calibration=True)
    loss, (g_h, g_w) = jax.value_and_grad(
        lambda h, t: _sce(h, labels, t, **sampled), argnums=(0, 1))(poisoned, table)
    np.testing.assert_allclose(float(loss), float(_sce(hidden, labels, table, **sampled)),
                               rtol=1e-6)
    assert np.all(np.isfinite(g_h)) and np.all(np.isfinite(g_w))
    # A batch of padding only: 0, with zero (not NaN) gradients.
    loss, (g_h, g_w) = jax.value_and_grad(
        lambda h, t: _sce(h, np.zeros(N, "int32"), t, **options), argnums=(0, 1))(hidden, table)
    assert float(loss) == 0.0 and not np.any(g_h) and not np.any(g_w)


def test_samples_follow_the_seed():
    hidden, labels, table = _problem(seed=10)
    centers = np.random.default_rng(0).normal(size=(3, D)).astype("float32")
    options = dict(bucket_size_x=8, bucket_size_y=20, centers=centers,
                   calibration={"num_samples": 16})
    first = float(_sce(hidden, labels, table, seed=[5, 0], **options))
    assert first == float(_sce(hidden, labels, table, seed=[5, 0], **options))
    values = {float(_sce(hidden, labels, table, seed=[5, s], **options)) for s in range(3)}
    assert len(values) == 3  # fixed centres: only the samples change


def test_tensorflow_and_jax_cores_agree_on_the_exact_cover_loss():
    """The TF core and keras.ops on the TF backend (their own process) and this one:
    same centres, the cover proposal; and the unigram proposal runs there too."""
    from tests.jax.test_jax_sce_ops import _python

    code = (
        "import numpy as np, keras_sce.ops as o, keras_sce.kops as k\n"
        "r = np.random.default_rng(3)\n"
        "t = r.normal(size=(60, 6)).astype('float32'); h = r.normal(size=(20, 6)).astype("
        "'float32'); y = r.integers(1, 60, size=20); y[:3] = 0\n"
        "c = r.normal(size=(4, 6)).astype('float32')\n"
        "kw = dict(centers=c, bucket_size_x=7, bucket_size_y=9)\n"
        "uni = {'proposal': 'unigram', 'item_counts': np.arange(60.0), 'num_samples': 16}\n"
        "print(float(k.scalable_cross_entropy(h, y, t, seed=0, calibration=uni, **kw)))\n"
        "print(float(k.scalable_cross_entropy(h, y, t, calibration={'proposal': 'cover'}, "
        "**kw)))\n"
        "print(float(o.scalable_cross_entropy(h, y, t, calibration={'proposal': 'cover'}, "
        "**kw)))\n"
    )
    rng = np.random.default_rng(3)
    table = rng.normal(size=(60, 6)).astype("float32")
    hidden = rng.normal(size=(20, 6)).astype("float32")
    labels = rng.integers(1, 60, size=20)
    labels[:3] = 0
    centers = rng.normal(size=(4, 6)).astype("float32")
    here = float(_sce(hidden, labels, table, centers=centers, bucket_size_x=7, bucket_size_y=9,
                      calibration={"proposal": "cover"}))
    unigram, kops_tf, core_tf = (float(v) for v in _python(code, "tensorflow")[-3:])
    assert np.isfinite(unigram)
    np.testing.assert_allclose([kops_tf, core_tf], [here, here], rtol=1e-5)


@pytest.mark.parametrize(
    "calibration,error,match",
    [
        ("yes", TypeError, "must be None, True"),
        ({"num_sample": 3}, TypeError, "allowed keys"),
        ({"proposal": "unigram"}, ValueError, "item_counts"),
        ({"proposal": "unigram", "item_counts": [1.0] * 7}, ValueError, "7 entries"),
        ({"proposal": "unigram", "item_counts": _unigram(zeros=3)}, ValueError, "uniform_mix"),
    ],
    ids=["type", "key", "no_counts", "length", "zero_counts"],
)
def test_bad_options_are_refused_as_on_tensorflow(calibration, error, match):
    hidden, labels, table = _problem()
    with pytest.raises(error, match=match):
        _sce(hidden, labels, table, bucket_size_y=16, seed=0, calibration=calibration)
    items = keras.layers.Embedding(C, D)
    items.build((None,))
    with pytest.raises(error, match=match):  # at construction, or at the first call
        keras_sce.SCELoss(items, bucket_size_y=16, calibration=calibration)(labels, hidden)


def test_sce_loss_fits_under_jit_and_survives_a_keras_file(tmp_path):
    model, items = embedding_model()
    x, y = next_item_batches()
    cal = {"num_samples": 32, "proposal": "unigram",
           "item_counts": np.bincount(y.ravel(), minlength=items.input_dim).tolist(),
           "uniform_mix": 0.1}
    loss = keras_sce.SCELoss(items, num_buckets=4, bucket_size_y=16, seed=1, calibration=cal)
    assert loss.get_config()["calibration"]["proposal"] == "unigram"
    raw = keras_sce.SCELoss(items, num_buckets=4, bucket_size_y=16, seed=1)
    hidden = model(x[:16])
    assert float(raw(y[:16], hidden)) < float(loss(y[:16], hidden))
    model.compile(keras.optimizers.Adam(0.02), loss=loss, jit_compile=True)
    history = model.fit(x, y, batch_size=32, epochs=3, verbose=0).history["loss"]
    assert np.all(np.isfinite(history)) and history[-1] < history[0]
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras_sce.load_model(path)
    assert loaded.loss.calibration == model.loss.calibration
    np.testing.assert_allclose(float(loaded.loss(y[:16], hidden)), float(loss(y[:16], hidden)),
                               rtol=1e-6)
