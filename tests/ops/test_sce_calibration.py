"""Calibrated SCE against float64 NumPy oracles: exactness, unbiasedness, bias bound, memory."""

import re

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_sce
from keras_sce import ops
from keras_sce.ops.calibration import Calibration, draw_samples
from tests.helpers.calibration_oracle import check_estimates, seen_parts

N, C, D = 37, 1001, 17  # odd shapes on purpose


def _problem(seed=0, n=N, c=C, d=D, padding_rows=5, scale=1.0, dtype=tf.float32):
    rng = np.random.default_rng(seed)
    hidden = tf.constant(rng.normal(size=(n, d)) * scale, dtype)
    labels = rng.integers(1, c, size=n)
    labels[:padding_rows] = 0
    table = tf.Variable(rng.normal(size=(c, d)) * scale, dtype=dtype)
    return hidden, tf.constant(labels, tf.int32), table


def _full_ce_oracle(hidden, labels, table, rows, padding_id=0):
    """float64 mean full CE over ``rows`` and its gradients w.r.t. hidden and table."""
    h, w = np.asarray(hidden, np.float64), np.asarray(table, np.float64)
    y = np.asarray(labels).astype(int)
    logits = h @ w.T
    if padding_id is not None:
        logits[:, padding_id] = -np.inf
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    with np.errstate(divide="ignore"):
        ce = np.where(rows > 0, -np.log(p[np.arange(len(y)), y]), 0.0)
    delta = p.copy()
    delta[np.arange(len(y)), y] -= 1.0
    delta *= rows[:, None] / rows.sum()
    return (ce * rows).sum() / rows.sum(), delta @ w, delta.T @ h


def _loss_and_grads(hidden, labels, table, **kw):
    with tf.GradientTape() as tape:
        tape.watch(hidden)
        loss, details = ops.scalable_cross_entropy(hidden, labels, table, return_details=True,
                                                   **kw)
    g_h, g_w = tape.gradient(loss, [hidden, table])
    return loss, g_h, g_w, details


def _unigram(c=C, seed=1, zeros=0):
    counts = np.random.default_rng(seed).zipf(1.3, size=c).astype(float)
    counts[1:1 + zeros] = 0.0
    return counts


@pytest.mark.parametrize("padding_id", [0, None], ids=["pad0", "nopad"])
@pytest.mark.parametrize("bucket_size_x", [N, 11], ids=["all_rows", "some_rows"])
@pytest.mark.parametrize("chunk", [None, 300], ids=["dense", "chunked"])
def test_cover_proposal_equals_full_ce_values_and_gradients(padding_id, bucket_size_x, chunk):
    hidden, labels, table = _problem(padding_rows=5 if padding_id == 0 else 0)
    loss, g_h, g_w, details = _loss_and_grads(
        hidden, labels, table, num_buckets=3, bucket_size_x=bucket_size_x, bucket_size_y=100,
        chunk_size=chunk, padding_id=padding_id, seed=1,
        calibration={"proposal": "cover"})
    rows = details["row_covered"].numpy().astype(float)
    assert rows.sum() > 0
    value, ref_h, ref_w = _full_ce_oracle(hidden, labels, table, rows, padding_id)
    np.testing.assert_allclose(loss.numpy(), value, rtol=1e-5)
    np.testing.assert_allclose(g_h.numpy(), ref_h, atol=1e-6)
    assert isinstance(g_w, tf.IndexedSlices)
    np.testing.assert_allclose(tf.convert_to_tensor(g_w).numpy(), ref_w, atol=1e-6)


def test_default_off_is_bit_identical():
    hidden, labels, table = _problem(seed=2)
    kw = dict(num_buckets=4, bucket_size_x=12, bucket_size_y=50, seed=3)
    ref = _loss_and_grads(hidden, labels, table, **kw)
    for off in (None, False):
        got = _loss_and_grads(hidden, labels, table, calibration=off, **kw)
        for a, b in zip(ref[:3], got[:3], strict=True):
            np.testing.assert_array_equal(tf.convert_to_tensor(a).numpy(),
                                          tf.convert_to_tensor(b).numpy())
        np.testing.assert_array_equal(ref[3]["row_loss"].numpy(), got[3]["row_loss"].numpy())


_PROPOSALS = {
    "uniform": dict(proposal="uniform"),
    "unigram_pow075_mix": dict(proposal="unigram", item_counts=_unigram(zeros=50), power=0.75,
                               mix=0.05),
}


@pytest.mark.parametrize("case", list(_PROPOSALS), ids=list(_PROPOSALS))
def test_normaliser_estimate_is_unbiased_and_log_bias_within_the_bound(case):
    seeds, m, b_y = 400, 64, 60
    options = dict(_PROPOSALS[case])
    hidden, labels, table = _problem(seed=4, scale=0.6, dtype=tf.float64)
    centers = tf.random.stateless_normal([3, D], seed=[5, 5], dtype=tf.float64)
    cal = Calibration(m, options.pop("proposal"), uniform_mix=options.pop("mix", 0.0), **options)
    run = tf.function(lambda s: ops.scalable_cross_entropy(
        hidden, labels, table, seed=s, calibration=cal, bucket_size_x=N, bucket_size_y=b_y,
        centers=centers, return_details=True)[1]["row_loss"])
    row_losses = np.stack([run(tf.constant([7, s], tf.int64)).numpy() for s in range(seeds)])
    exact_part, unseen = seen_parts(hidden, labels, table, centers, b_y)
    check_estimates(row_losses, hidden, labels, table, exact_part, unseen,
                    cal.proposal_probabilities(C, 0), m)


def test_padding_and_positive_are_never_sampled_negatives():
    # Positives that dominate their rows, and a padding row that beats every positive:
    # counting the padding or the positive among the samples (weight C/m) would make
    # the loss large; the full CE is ~1e-7.
    c, n = 40, 16
    rng = np.random.default_rng(6)
    table = np.eye(c) + 0.01 * rng.normal(size=(c, c))
    labels = rng.integers(1, c, size=n)
    hidden = 20.0 * np.eye(c)[labels]
    table[0] = 2.0
    counts = np.ones(c)
    counts[0] = 1e9  # the padding id's count must be ignored
    for cal in ({"num_samples": 500}, {"num_samples": 500, "proposal": "unigram",
                                       "item_counts": counts}):
        loss = ops.scalable_cross_entropy(
            tf.constant(hidden, tf.float32), labels, tf.Variable(table, dtype=tf.float32),
            num_buckets=2, bucket_size_x=n, bucket_size_y=3, seed=0, calibration=cal)
        assert 0.0 <= loss.numpy() < 1e-4
    for pad in (0, 7, None):
        counts = np.ones(c)
        if pad is not None:
            counts[pad] = 1e9  # the padding id's count must be ignored
        for cal in (Calibration(5000), Calibration(5000, "unigram", item_counts=counts)):
            ids, log_w = draw_samples(cal, c, pad, tf.constant([1, 2], tf.int64), tf.float64)
            assert pad not in set(ids.numpy().tolist())
            assert len(set(ids.numpy().tolist())) == c - (pad is not None)
            assert np.all(np.isfinite(log_w.numpy()))


@pytest.mark.parametrize("case", ["uniform", "unigram"])
def test_xla_equals_eager_values_and_gradients(case):
    hidden, labels, table = _problem(seed=7)
    centers = tf.random.stateless_normal([5, D], seed=[1, 2])
    cal = {"num_samples": 200} if case == "uniform" else {
        "num_samples": 200, "proposal": "unigram", "item_counts": _unigram(), "power": 0.75}

    def grads(h, y):
        with tf.GradientTape() as tape:
            tape.watch(h)
            loss = ops.scalable_cross_entropy(h, y, table, bucket_size_x=9, bucket_size_y=64,
                                              chunk_size=256, centers=centers,
                                              seed=tf.constant([3, 4], tf.int64),
                                              calibration=cal)
        g_h, g_w = tape.gradient(loss, [h, table])
        return loss, g_h, tf.convert_to_tensor(g_w)

    eager = grads(hidden, labels)
    xla = tf.function(grads, jit_compile=True)(hidden, labels)
    for a, b in zip(eager, xla, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-6)


_SHAPE = re.compile(r"\b(?:f32|f64|s32|s64|u32|u64|pred)\[([0-9,]+)\]")


@pytest.mark.parametrize("proposal", ["uniform", "unigram"])
def test_compiled_program_memory_is_linear_in_samples(proposal):
    """No N x C or m x C logits, no n_b x b_y x m comparison: the largest buffer that
    is not the table (or, for unigram, the [C] proposal) is O(N*m + n_b*(b_y + chunk))."""
    n, c, d, m, n_b, b_x, b_y, chunk = 64, 20_000, 8, 64, 4, 16, 32, 1024
    table = tf.Variable(tf.random.normal([c, d]))
    cal = {"num_samples": m} if proposal == "uniform" else {
        "num_samples": m, "proposal": "unigram", "item_counts": _unigram(c)}

    @tf.function(jit_compile=True)
    def step(h, y):
        with tf.GradientTape() as tape:
            tape.watch(h)
            loss = ops.scalable_cross_entropy(h, y, table, num_buckets=n_b, bucket_size_x=b_x,
                                              bucket_size_y=b_y, chunk_size=chunk,
                                              seed=tf.constant([1, 1], tf.int64),
                                              calibration=cal)
        return loss, tape.gradient(loss, h)

    hlo = step.experimental_get_compiler_ir(
        tf.random.normal([n, d]), tf.ones([n], tf.int32))(stage="optimized_hlo")
    sizes = []
    for dims in _SHAPE.findall(hlo):
        shape = [int(v) for v in dims.split(",")]
        if shape in ([c, d], [c], [1, c]):
            continue
        sizes.append(int(np.prod(shape)))
    # Raw SCE's own: the search's table chunk and running top-k, the bucket logits;
    # calibration's: the sampled logits [N, m] and the exact column beside them.
    raw_sce = max(chunk * d, n_b * (b_y + chunk), n_b * b_x * b_y)
    assert max(sizes) <= max(n * (m + 1), raw_sce), max(sizes)


def test_binary_search_and_kept_bucket_match_numpy():
    from keras_sce.ops.calibration import _count_below, kept_bucket

    rng = np.random.default_rng(12)
    values = np.sort(rng.integers(0, 50, size=(5, 37)), axis=1)
    probes = rng.integers(-2, 53, size=(5, 11))
    for inclusive, side in ((False, "left"), (True, "right")):
        got = _count_below(tf.constant(values), tf.constant(probes), inclusive).numpy()
        want = np.stack([np.searchsorted(v, p, side) for v, p in zip(values, probes, strict=True)])
        np.testing.assert_array_equal(got, want)
    rows = np.stack([rng.permutation(9)[:4] for _ in range(6)])  # 6 buckets x 4 rows
    loss = rng.choice([-np.inf, 0.0, 1.5, 2.25, -0.5], size=rows.shape)
    got = kept_bucket(tf.constant(rows), tf.constant(loss.ravel(), tf.float32), 9)[0].numpy()
    for r in range(9):
        where = np.argwhere(rows == r)
        if len(where):
            best = max(loss[b, k] for b, k in where)
            assert got[r] == min(b for b, k in where if loss[b, k] == best)


def test_sample_weight_padding_rows_and_empty_batch_as_in_raw_sce():
    hidden, labels, table = _problem(seed=9)
    kw = dict(num_buckets=2, bucket_size_x=N, bucket_size_y=80, seed=2,
              calibration={"proposal": "cover"})
    w = np.zeros(N, "float32")
    w[5:15] = 2.0
    w[20] = 0.5
    rows = (w > 0).astype(float) * w
    value, _, _ = _full_ce_oracle(hidden, labels, table, rows)
    got = ops.scalable_cross_entropy(hidden, labels, table, sample_weight=w, **kw)
    np.testing.assert_allclose(got.numpy(), value, rtol=1e-5)
    # NaN at padding positions stays out of the calibrated loss and its gradients.
    pad = labels.numpy() == 0
    poisoned = tf.where(pad[:, None], float("nan") * tf.ones_like(hidden), hidden)
    loss, g_h, g_w, _ = _loss_and_grads(poisoned, labels, table, **dict(kw, calibration=True))
    clean = ops.scalable_cross_entropy(hidden, labels, table, **dict(kw, calibration=True))
    np.testing.assert_allclose(loss.numpy(), clean.numpy(), rtol=1e-6)
    assert np.all(np.isfinite(g_h.numpy())) and np.all(np.isfinite(g_w.values.numpy()))
    # A batch of padding only: 0, with zero (not NaN) gradients.
    loss, g_h, g_w, _ = _loss_and_grads(hidden, tf.zeros([N], tf.int32), table, **kw)
    assert loss.numpy() == 0.0 and not np.any(g_h.numpy())
    assert not np.any(tf.convert_to_tensor(g_w).numpy())


def test_samples_follow_the_seed_stream():
    hidden, labels, table = _problem(seed=10)
    kw = dict(num_buckets=3, bucket_size_x=8, bucket_size_y=20, calibration={"num_samples": 16})
    a = ops.scalable_cross_entropy(hidden, labels, table, seed=5, **kw).numpy()
    assert a == ops.scalable_cross_entropy(hidden, labels, table, seed=5, **kw).numpy()
    centers = tf.random.stateless_normal([3, D], seed=[0, 0])
    kw.pop("num_buckets")
    stream = ops.SeedStream(5)
    values = {ops.scalable_cross_entropy(hidden, labels, table, seed=stream.next(),
                                         centers=centers, **kw).numpy() for _ in range(3)}
    assert len(values) == 3  # fixed centres: only the samples change


@pytest.mark.parametrize(
    "calibration,error,match",
    [
        ("yes", TypeError, "must be None, True"),
        ({"num_sample": 3}, TypeError, "allowed keys"),
        ({"num_samples": 0}, ValueError, "num_samples"),
        ({"proposal": "popular"}, ValueError, "proposal"),
        ({"proposal": "unigram"}, ValueError, "item_counts"),
        ({"proposal": "unigram", "item_counts": [1.0] * 7}, ValueError, "7 entries"),
        ({"proposal": "unigram", "item_counts": _unigram(zeros=3)}, ValueError, "uniform_mix"),
        ({"proposal": "unigram", "item_counts": -_unigram()}, ValueError, "non-negative"),
        ({"item_counts": _unigram()}, ValueError, "only used"),
        ({"power": float("nan")}, ValueError, "power"),
        ({"uniform_mix": 1.5}, ValueError, "uniform_mix"),
    ],
    ids=["type", "key", "num_samples", "proposal", "no_counts", "length", "zero_counts",
         "negative", "counts_for_uniform", "power", "mix"],
)
def test_bad_options_are_refused(calibration, error, match):
    hidden, labels, table = _problem()
    with pytest.raises(error, match=match):
        ops.scalable_cross_entropy(hidden, labels, table, bucket_size_y=16, seed=0,
                                   calibration=calibration)


def test_sce_loss_config_round_trip_and_same_value():
    items = keras.layers.Embedding(C, D, name="items")
    items.build((None,))
    cal = {"num_samples": 32, "proposal": "unigram", "item_counts": _unigram(zeros=4),
           "power": 0.75, "uniform_mix": 0.1}
    loss = keras_sce.SCELoss(items, bucket_size_y=40, seed=3, calibration=cal)
    config = loss.get_config()
    assert config["calibration"]["proposal"] == "unigram"
    assert keras_sce.SCELoss(items, seed=3).get_config()["calibration"] is None
    again = keras_sce.SCELoss.from_config(config).bind(items)
    hidden, labels, _ = _problem(seed=11)
    np.testing.assert_allclose(loss(labels, hidden).numpy(), again(labels, hidden).numpy(),
                               rtol=1e-6)
    raw = keras_sce.SCELoss(items, bucket_size_y=40, seed=3)
    assert raw(labels, hidden).numpy() < loss(labels, hidden).numpy()


def test_sce_loss_fits_under_xla_and_survives_a_keras_file(tmp_path):
    c, d, length = 300, 16, 8
    items = keras.layers.Embedding(c, d, name="items")
    inputs = keras.Input((length,), dtype="int32")
    model = keras.Model(inputs, keras.layers.Dense(d, name="mix")(items(inputs)))
    rng = np.random.default_rng(13)
    x = rng.integers(1, c, size=(64, length)).astype("int32")
    y = ((x * 7 + 3) % (c - 1) + 1).astype("int64")
    y[:, :2] = 0
    cal = {"num_samples": 64, "proposal": "unigram",
           "item_counts": np.bincount(y.ravel(), minlength=c), "uniform_mix": 0.1}
    model.compile("adam", loss=keras_sce.SCELoss(items, bucket_size_y=32, seed=2,
                                                 calibration=cal), jit_compile=True)
    history = model.fit(x, y, batch_size=16, epochs=2, verbose=0).history["loss"]
    assert np.all(np.isfinite(history))
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras_sce.load_model(path)
    assert loaded.loss.calibration == model.loss.calibration
    assert loaded.loss.calibration["proposal"] == "unigram"
    loaded.fit(x, y, batch_size=16, epochs=1, verbose=0)
