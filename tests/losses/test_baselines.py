"""Baseline losses: oracles, padding, gradients, and a short training run each."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from keras_sce import losses
from keras_sce.ops import binary, full_cross_entropy, sampling
from keras_sce.ops import sampled as ops


def _logsumexp(a, axis=-1):
    m = a.max(axis=axis, keepdims=True)
    return (m + np.log(np.exp(a - m).sum(axis=axis, keepdims=True))).squeeze(axis)


def _problem(seed=0, batch=3, length=5, items=40, dim=6):
    rng = np.random.default_rng(seed)
    hidden = rng.normal(size=(batch, length, dim))
    labels = rng.integers(1, items, size=(batch, length))
    labels[0, :2] = 0
    labels[2, 0] = 0
    table = rng.normal(size=(items, dim))
    return hidden, labels, table


def _ce_oracle(hidden, labels, table):
    x = hidden.reshape(-1, hidden.shape[-1])
    y = labels.reshape(-1)
    keep = y != 0
    logits = x[keep] @ table[1:].T  # padding row excluded
    return float(np.mean(_logsumexp(logits) - logits[np.arange(keep.sum()), y[keep] - 1]))


@pytest.mark.parametrize("jit", [False, True], ids=["rows_gathered", "xla_rows_masked"])
def test_full_ce_matches_numpy_with_and_without_xla(jit):
    hidden, labels, table = _problem()
    fn = tf.function(full_cross_entropy, jit_compile=True) if jit else full_cross_entropy
    ours = fn(tf.constant(hidden), tf.constant(labels), tf.Variable(table))
    assert float(ours) == pytest.approx(_ce_oracle(hidden, labels, table), rel=1e-10)


def test_gathered_ce_is_a_deprecated_alias_of_full_ce():
    hidden, labels, table = _problem()
    with pytest.warns(DeprecationWarning, match="full_cross_entropy"):
        old = ops.gathered_cross_entropy(tf.constant(hidden), tf.constant(labels), table)
    new = full_cross_entropy(tf.constant(hidden), tf.constant(labels), table)
    assert float(old) == float(new)


def test_gathered_ce_gradient_finite_differences():
    hidden, labels, table = _problem(items=12, dim=3)
    table_var = tf.Variable(table)
    x = tf.constant(hidden)
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = full_cross_entropy(x, tf.constant(labels), table_var)
    gx, gw = tape.gradient(loss, [x, table_var])
    gw = tf.convert_to_tensor(gw).numpy()
    eps = 1e-6
    for idx in [(1, 2, 0), (2, 4, 2)]:
        plus, minus = hidden.copy(), hidden.copy()
        plus[idx] += eps
        minus[idx] -= eps
        fd = (_ce_oracle(plus, labels, table) - _ce_oracle(minus, labels, table)) / (2 * eps)
        assert gx.numpy()[idx] == pytest.approx(fd, rel=1e-5, abs=1e-9)
    for idx in [(3, 1), (7, 0)]:
        plus, minus = table.copy(), table.copy()
        plus[idx] += eps
        minus[idx] -= eps
        fd = (_ce_oracle(hidden, labels, plus) - _ce_oracle(hidden, labels, minus)) / (2 * eps)
        assert gw[idx] == pytest.approx(fd, rel=1e-5, abs=1e-9)
    np.testing.assert_array_equal(gw[0], 0.0)  # the padding row never gets gradient


def test_sampled_softmax_with_every_item_equals_full_ce():
    hidden, labels, table = _problem(items=30)
    loss = ops.sampled_softmax(
        tf.constant(hidden, tf.float32),
        tf.constant(labels),
        tf.Variable(table, dtype=tf.float32),
        num_sampled=29,
        seed=1,
    )
    assert float(loss) == pytest.approx(_ce_oracle(hidden, labels, table), rel=1e-4)


def test_sampled_softmax_unigram_runs_and_needs_counts():
    hidden, labels, table = _problem()
    counts = np.arange(40)
    loss = ops.sampled_softmax(
        tf.constant(hidden, tf.float32),
        tf.constant(labels),
        tf.Variable(table, dtype=tf.float32),
        num_sampled=8,
        sampler="unigram",
        item_counts=counts,
        seed=0,
    )
    assert np.isfinite(float(loss)) and float(loss) > 0
    with pytest.raises(ValueError, match="item_counts"):
        ops.sampled_softmax(
            tf.constant(hidden, tf.float32),
            tf.constant(labels),
            tf.Variable(table, dtype=tf.float32),
            sampler="unigram",
            num_sampled=4,
        )


def test_sampled_softmax_unigram_with_every_item_equals_full_ce():
    hidden, labels, table = _problem(items=30)
    loss = ops.sampled_softmax(
        tf.constant(hidden, tf.float32), tf.constant(labels), tf.Variable(table, dtype=tf.float32),
        num_sampled=29, sampler="unigram", item_counts=np.arange(30) + 1.0, seed=1,
    )
    assert float(loss) == pytest.approx(_ce_oracle(hidden, labels, table), rel=1e-4)


def test_sampled_softmax_candidates_follow_the_inclusion_probabilities():
    # Gumbel top-k draws distinct items; each item's frequency over many draws is the
    # probability whose log corrects its logit.
    counts = np.array([50.0, 20, 10, 8, 5, 3, 2, 1, 1, 0.5])
    log_q = np.log(counts) - np.log(counts.sum())

    def draw(i):
        seed = tf.stack([tf.constant(7, tf.int64), i])
        return sampling.sample_without_replacement(10, 3, log_q, seed)

    @tf.function
    def draw_all():
        seeds = tf.range(3000, dtype=tf.int64)
        return tf.map_fn(draw, seeds, fn_output_signature=tf.int32)

    draws = draw_all().numpy()
    assert all(len(set(row)) == 3 for row in draws)
    frequency = np.bincount(draws.ravel(), minlength=10) / len(draws)
    expected = np.exp(sampling.inclusion_log_probabilities(10, 3, log_q))
    assert expected.sum() == pytest.approx(3.0)
    np.testing.assert_allclose(frequency, expected, atol=0.05)
    uniform = np.exp(sampling.inclusion_log_probabilities(10, 3, None))
    np.testing.assert_allclose(uniform, 0.3)


def test_gbce_beta():
    assert ops.gbce_beta(10, 101, 0.0) == pytest.approx(1.0)
    assert ops.gbce_beta(10, 101, 1.0) == pytest.approx(0.1)
    alpha = 10 / 100
    assert ops.gbce_beta(10, 101, 0.75) == pytest.approx(
        alpha * (0.75 * (1 - 1 / alpha) + 1 / alpha)
    )
    with pytest.raises(ValueError):
        ops.gbce_beta(10, 101, 1.5)


def test_bce_and_gbce_against_numpy():
    hidden, labels, table = _problem()
    args = (tf.constant(hidden), tf.constant(labels), tf.Variable(table))
    plain = {"num_negatives": 7, "seed": 3, "logit_offset": 0.0}
    bce = float(ops.sampled_bce(*args, **plain))
    gbce_t0 = float(ops.gbce(*args, t=0.0, **plain))
    gbce = float(ops.gbce(*args, t=0.75, **plain))
    assert gbce_t0 == pytest.approx(bce, rel=1e-12)  # t = 0 is BCE (same negatives)
    x = hidden.reshape(-1, 6)[labels.reshape(-1) != 0]
    pos = np.sum(x * table[labels.reshape(-1)[labels.reshape(-1) != 0]], axis=-1)
    beta = ops.gbce_beta(7, 39, 0.75)
    expected = (beta - 1.0) * np.mean(np.log1p(np.exp(-pos)))
    assert gbce - bce == pytest.approx(expected, rel=1e-9)


def _softplus(z):
    return np.logaddexp(0.0, z)


@pytest.mark.parametrize("t", [0.0, 0.75])
@pytest.mark.parametrize("logit_offset", ["balanced", 0.0, -2.5])
def test_binary_losses_with_logit_offset_match_numpy(t, logit_offset):
    hidden, labels, table = _problem()
    k = 7
    value = float(
        ops.gbce(
            tf.constant(hidden), tf.constant(labels), tf.Variable(table),
            num_negatives=k, t=t, seed=3, logit_offset=logit_offset,
        )
    )
    keep = labels.reshape(-1) != 0
    x = hidden.reshape(-1, 6)[keep]
    y = labels.reshape(-1)[keep]
    # The same stateless negatives the op draws (one draw per row, padding included).
    all_rows = tf.constant(hidden.reshape(-1, 6))
    neg_ids = binary._per_row_negatives(all_rows, tf.constant(table), k, 0, 3).numpy()[keep]
    assert np.all(neg_ids != 0)
    beta = ops.gbce_beta(k, 39, t)
    offset = np.log(beta / k) if logit_offset == "balanced" else logit_offset
    pos = np.sum(x * table[y], axis=-1) + offset
    neg = np.einsum("md,mkd->mk", x, table[neg_ids]) + offset
    per_row = beta * _softplus(-pos) + np.sum(_softplus(neg) * (neg_ids != y[:, None]), axis=-1)
    assert value == pytest.approx(float(np.mean(per_row)), rel=1e-9)


def test_balanced_logit_offset_is_the_stationary_shared_shift():
    assert ops.balanced_logit_offset(1) == 0.0  # SASRec's one-negative BCE is unchanged
    for k, beta in [(256, 1.0), (256, 0.27), (10, 0.5)]:
        s = ops.balanced_logit_offset(k, beta)
        # d/ds [beta * softplus(-s) + k * softplus(s)] = -beta * sigma(-s) + k * sigma(s)
        sigma = 1.0 / (1.0 + np.exp(-s))
        assert -beta * (1.0 - sigma) + k * sigma == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="beta"):
        ops.balanced_logit_offset(4, 0.0)


def test_logit_offset_with_accidental_hits_matches_numpy():
    # 4 real items and 8 negatives per row: many negatives equal the positive.
    rng = np.random.default_rng(1)
    hidden = rng.normal(size=(6, 3))
    labels = rng.integers(1, 5, size=(6,))
    table = rng.normal(size=(5, 3))
    k = 8
    value = float(
        ops.sampled_bce(tf.constant(hidden), tf.constant(labels), tf.Variable(table),
                        num_negatives=k, seed=11, logit_offset=-1.5)
    )
    neg_ids = binary._per_row_negatives(tf.constant(hidden), tf.constant(table), k, 0, 11).numpy()
    hits = neg_ids == labels[:, None]
    assert hits.any() and not hits.all()
    pos = np.sum(hidden * table[labels], axis=-1) - 1.5
    neg = np.einsum("md,mkd->mk", hidden, table[neg_ids]) - 1.5
    expected = np.mean(_softplus(-pos) + np.sum(_softplus(neg) * ~hits, axis=-1))
    assert value == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("cls", [losses.SampledBCELoss, losses.GBCELoss])
def test_keras_wrappers_pass_the_logit_offset(cls):
    import keras

    emb = keras.layers.Embedding(40, 6)
    emb.build((None,))
    assert cls(emb).get_config()["logit_offset"] == "balanced"  # the default
    hidden, labels, _ = _problem()
    y, h = tf.constant(labels), tf.constant(hidden, tf.float32)
    values = {}
    for offset in ("balanced", -2.5, np.float32(0.0)):
        loss = cls(emb, num_negatives=5, seed=4, logit_offset=offset)
        config = loss.get_config()
        assert cls.from_config(config).get_config() == config
        values[str(offset)] = float(loss(y, h))
    t = {"t": 0.75} if cls is losses.GBCELoss else {}
    fn = ops.gbce if cls is losses.GBCELoss else ops.sampled_bce
    # The same seed stream as the wrapper's first call: [seed, 0].
    seed = tf.constant([4, 0], tf.int64)
    ref = float(fn(h, y, emb.embeddings, num_negatives=5, seed=seed, logit_offset=-2.5, **t))
    assert values["-2.5"] == pytest.approx(ref, rel=1e-6)
    assert len(set(values.values())) == 3  # the offset reaches the op


def test_binary_loss_constructor_validates_num_negatives():
    for bad in (None, 0, -3, 2.5, "8"):
        with pytest.raises((TypeError, ValueError), match="num_negatives"):
            losses.SampledBCELoss(num_negatives=bad)
    with pytest.raises(ValueError, match="num_negatives"):
        ops.gbce(tf.zeros([2, 3]), tf.ones([2], "int32"), tf.Variable(tf.zeros([5, 3])),
                 num_negatives=0)


@pytest.mark.parametrize(
    "bad, error", [("auto", ValueError), ("Balanced", ValueError), (float("nan"), ValueError),
                   (float("inf"), ValueError), (True, TypeError), (None, TypeError)]
)
def test_bad_logit_offset_is_refused(bad, error):
    hidden, labels, table = _problem()
    with pytest.raises(error, match="logit_offset"):
        ops.sampled_bce(tf.constant(hidden), tf.constant(labels), tf.Variable(table),
                        logit_offset=bad)
    with pytest.raises(error, match="logit_offset"):
        losses.GBCELoss(num_negatives=4, logit_offset=bad)


@pytest.mark.parametrize(
    "fn",
    [full_cross_entropy, ops.sampled_softmax, ops.sampled_bce, ops.gbce],
    ids=["ce", "sampled_softmax", "bce", "gbce"],
)
def test_padding_rows_are_ignored_and_all_padding_gives_zero(fn):
    hidden, labels, table = _problem()
    table_var = tf.Variable(table, dtype=tf.float32)
    kwargs = {"num_sampled": 8} if fn is ops.sampled_softmax else {}
    kwargs.update({"seed": 0} if fn is not full_cross_entropy else {})
    if fn is ops.sampled_softmax:
        kwargs["seed"] = 5
    h = tf.constant(hidden, tf.float32)
    garbage = hidden.copy()
    garbage[labels == 0] = 1e3
    a = fn(h, tf.constant(labels), table_var, **kwargs)
    b = fn(tf.constant(garbage, tf.float32), tf.constant(labels), table_var, **kwargs)
    if fn in (full_cross_entropy, ops.sampled_bce, ops.gbce):
        assert float(a) == pytest.approx(float(b), rel=1e-6)
    assert np.isfinite(float(b))
    with tf.GradientTape() as tape:
        loss = fn(h, tf.zeros_like(tf.constant(labels)), table_var, **kwargs)
    assert float(loss) == 0.0
    grad = tape.gradient(loss, table_var)
    assert grad is None or not np.any(tf.convert_to_tensor(grad).numpy())


def test_bad_ids_raise():
    hidden, labels, table = _problem()
    labels[1, 1] = 40
    with pytest.raises(tf.errors.InvalidArgumentError):
        full_cross_entropy(tf.constant(hidden), tf.constant(labels), tf.Variable(table))
    with pytest.raises(TypeError, match="integer"):
        full_cross_entropy(
            tf.constant(hidden), tf.constant(labels, tf.float32), tf.Variable(table)
        )


@pytest.mark.slow
@pytest.mark.parametrize("method", ["ce", "sce", "gbce", "sampled_softmax", "bce"])
def test_short_training_improves_ndcg(method):
    from keras_sce.datasets import leave_one_out, synthetic_sequences
    from keras_sce.training import TrainConfig, train_and_evaluate

    split = leave_one_out(synthetic_sequences(num_users=400, num_items=150, mean_length=10, seed=0))
    config = TrainConfig(
        max_length=12,
        hidden_dim=16,
        num_blocks=1,
        batch_size=64,
        max_epochs=6,
        patience=10,
        num_negatives=32,
        bucket_size_y=32,
        dropout=0.1,
        learning_rate=5e-3,
        verbose=0,
    )
    result = train_and_evaluate(split, method, config)
    first = result["records"][0]["ndcg@10"]
    assert result["best_val_ndcg@10"] > first + 0.02
    assert result["ndcg@10"] > 0.05  # random ranking of 150 items gives ~0.03
