"""Malformed tensors and arguments: each case names its input and its exact outcome.

Non-finite values must never pass for a result: a loss that saw a NaN or an
infinity in a row that counts is NaN (eagerly and under XLA), the ranking metrics
raise ``NonFiniteScoresError``, and SASRec refuses sequences longer than its
positions. Integer options accept NumPy integers and refuse bools.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from keras_sce import losses
from keras_sce.evaluation import NonFiniteScoresError, evaluate_ranking
from keras_sce.models import SASRec
from keras_sce.ops import (
    SeedStream,
    bucket_top_k,
    chunked_cross_entropy,
    full_cross_entropy,
    scalable_cross_entropy,
)
from keras_sce.ops import sampled as sampled_ops

NAN, INF = float("nan"), float("inf")
C, D = 2000, 16


def _batch(batch=128, length=50, seed=0):
    """A realistic SASRec batch: 128 x 50 rows, some padding, default SCE buckets."""
    rng = np.random.default_rng(seed)
    hidden = rng.normal(size=(batch, length, D)).astype("float32")
    labels = rng.integers(1, C, size=(batch, length)).astype("int32")
    labels[:, : length // 5] = 0  # left padding
    table = (0.1 * rng.normal(size=(C, D))).astype("float32")
    return hidden, labels, table


OPS = {
    "sce": lambda h, y, t: scalable_cross_entropy(h, y, t, seed=0),
    "sce_mix_x": lambda h, y, t: scalable_cross_entropy(h, y, t, mix_x=True, seed=0),
    "sce_streamed": lambda h, y, t: scalable_cross_entropy(
        h, y, t, chunk_size=512, seed=0
    ),
    "full_ce": lambda h, y, t: full_cross_entropy(h, y, t),
    "chunked_ce": lambda h, y, t: chunked_cross_entropy(h, y, t, chunk_size=700),
    "sampled_softmax": lambda h, y, t: sampled_ops.sampled_softmax(h, y, t, seed=0),
    "bce": lambda h, y, t: sampled_ops.sampled_bce(h, y, t, seed=0),
    "gbce": lambda h, y, t: sampled_ops.gbce(h, y, t, seed=0),
}


def _poison(hidden, labels, table, where):
    """Puts a NaN/inf at ``where``: a hidden row (valid or padding) or a table row."""
    hidden, table = hidden.copy(), table.copy()
    kind, value = where
    if kind == "valid_row":
        hidden[5, -13] = value
    elif kind == "one_valid_entry":
        hidden[-1, -1, 3] = value
    elif kind == "padding_row":
        hidden[5, 2] = value
    elif kind == "target_table_row":
        table[labels[9, -10]] = value
    elif kind == "padding_table_row":
        table[0] = value
    return hidden, table


CASES = [  # (case, expect NaN loss)
    (("valid_row", NAN), True),
    (("one_valid_entry", NAN), True),
    (("valid_row", INF), True),
    (("valid_row", -INF), True),
    (("target_table_row", NAN), True),
    (("padding_row", NAN), False),
    (("padding_row", INF), False),
    (("padding_table_row", NAN), False),
]
CASE_IDS = [f"{kind}-{value}" for (kind, value), _ in CASES]
# Under XLA (a compilation per case): one case of each kind.
XLA_CASES = [CASES[0], CASES[4], CASES[5], CASES[7]]
GRID = [(where, nan, False) for where, nan in CASES] + [
    (where, nan, True) for where, nan in XLA_CASES
]
GRID_IDS = [f"{kind}-{value}-{'xla' if jit else 'eager'}" for (kind, value), _, jit in GRID]


@pytest.mark.parametrize("where, expect_nan, jit", GRID, ids=GRID_IDS)
@pytest.mark.parametrize("op", sorted(OPS))
def test_non_finite_input_shows_in_the_loss(op, where, expect_nan, jit):
    # SCE gets the realistic batch (where a NaN row falls out of every bucket);
    # the losses that count every row get a small one.
    hidden, labels, table = _batch() if op.startswith("sce") else _batch(16, 20)
    hidden, table = _poison(hidden, labels, table, where)
    table_var = tf.Variable(table)
    fn = OPS[op]
    if jit:
        fn = tf.function(fn, jit_compile=True, autograph=False)
    with tf.GradientTape() as tape:
        loss = float(fn(tf.constant(hidden), tf.constant(labels), table_var))
    if expect_nan:
        assert np.isnan(loss), f"{op}: a non-finite {where[0]} gave the finite loss {loss}"
    else:
        assert np.isfinite(loss), f"{op}: an ignored non-finite {where[0]} gave {loss}"
    del tape


def test_sce_nan_row_is_nan_even_when_no_bucket_takes_it():
    # The row that holds NaN scores NaN against every centre; one fixed centre
    # picks a single other row, so the NaN row is in no bucket at all.
    hidden, labels, table = _batch(batch=4, length=16)
    hidden[1, 13] = NAN
    centers = tf.constant(hidden[2, 14:15])
    loss, details = scalable_cross_entropy(
        hidden, labels, table, centers=centers, bucket_size_x=1, bucket_size_y=8,
        return_details=True,
    )
    assert not bool(details["row_covered"][1, 13])
    assert float(details["num_covered_rows"]) == 1.0
    assert np.isnan(float(loss))


def test_sce_loss_nan_through_the_keras_loss_and_its_table_gradient_is_not_silent():
    import keras

    hidden, labels, table = _batch()
    hidden[5, 37] = NAN
    emb = keras.layers.Embedding(C, D)
    emb.build((None,))
    emb.embeddings.assign(table)
    loss = losses.SCELoss(emb, seed=0)(tf.constant(labels), tf.constant(hidden))
    assert np.isnan(float(loss))


WEIGHT_OPS = {
    "sce": lambda h, y, t, w: scalable_cross_entropy(h, y, t, seed=0, sample_weight=w),
    "full_ce": lambda h, y, t, w: full_cross_entropy(h, y, t, sample_weight=w),
    "chunked_ce": lambda h, y, t, w: chunked_cross_entropy(h, y, t, sample_weight=w),
}


@pytest.mark.parametrize("value", [NAN, INF, -1.0], ids=["nan", "inf", "negative"])
@pytest.mark.parametrize("op", sorted(WEIGHT_OPS))
def test_bad_sample_weight_raises(op, value):
    hidden, labels, table = _batch(4, 10)
    weight = np.ones(labels.shape, "float32")
    weight[1, 8] = value
    with pytest.raises(tf.errors.InvalidArgumentError, match="sample_weight"):
        WEIGHT_OPS[op](hidden, labels, tf.Variable(table), weight)


# -- evaluation --------------------------------------------------------------------
def _ranking_problem():
    rng = np.random.default_rng(0)
    queries = rng.normal(size=(6, 4)).astype("float32")
    table = rng.normal(size=(30, 4)).astype("float32")
    return queries, table, np.arange(1, 7)


def _with(array, index, value):
    array = array.copy()
    array[index] = value
    return array


EVAL_CASES = {
    "nan_query_row": (lambda q, t: (_with(q, 2, NAN), t), "1 of 6 `queries`"),
    "all_nan_queries": (lambda q, t: (np.full_like(q, NAN), t), "6 of 6 `queries`"),
    "inf_query_entry": (lambda q, t: (_with(q, (0, 1), INF), t), "`queries`"),
    "nan_table_row": (lambda q, t: (q, _with(t, 7, NAN)), "1 of 30 `item_table` rows"),
    "neg_inf_table_rows": (lambda q, t: (q, _with(t, slice(3, 6), -INF)), "3 of 30"),
    "overflowing_scores": (lambda q, t: (q * 1e30, t * 1e30), "overflowed"),
}


@pytest.mark.parametrize("case", sorted(EVAL_CASES))
def test_evaluation_refuses_non_finite_scores(case):
    make, match = EVAL_CASES[case]
    queries, table = make(*_ranking_problem()[:2])
    with pytest.raises(NonFiniteScoresError, match=match):
        evaluate_ranking(queries, table, _ranking_problem()[2], ks=(5,))


def test_evaluation_ignores_a_non_finite_padding_row():
    queries, table, targets = _ranking_problem()
    clean = evaluate_ranking(queries, table, targets, ks=(5,))
    assert evaluate_ranking(queries, _with(table, 0, NAN), targets, ks=(5,)) == clean


def _callback_run(break_at, how):
    from keras_sce.evaluation.callback import RankingEvaluation

    model = SASRec(num_items=30, max_length=6, hidden_dim=8, num_blocks=1, dropout=0.0)
    inputs = np.random.default_rng(0).integers(1, 30, size=(10, 6))
    model(inputs)
    model.stop_training = False  # as fit() sets it
    callback = RankingEvaluation(inputs, inputs[:, -1], inputs, patience=5, verbose=0)
    callback.set_model(model)
    callback.on_train_begin()
    for epoch in range(3):
        callback.on_epoch_begin(epoch)
        logs = {"loss": 1.0}
        if epoch >= break_at:
            if how == "weights":
                model.item_embedding_layer.embeddings.assign(
                    np.full((30, 8), NAN, "float32")
                )
            else:
                logs["loss"] = NAN
        callback.on_epoch_end(epoch, logs)
        if model.stop_training:
            break
    assert epoch == break_at  # stopped at once
    callback.on_train_end()
    return model, callback


@pytest.mark.parametrize("break_at", [0, 1], ids=["first_epoch", "second_epoch"])
@pytest.mark.parametrize("how", ["weights", "loss"], ids=["nan_weights", "nan_loss"])
def test_early_stopping_stops_on_non_finite_and_keeps_no_nan_best(break_at, how):
    model, callback = _callback_run(break_at, how)
    assert callback.stopped_by == "non_finite" and model.stop_training
    assert np.isnan(callback.records[-1]["ndcg@10"])
    assert np.isfinite(callback.best) == (break_at > 0)
    assert callback.best_epoch == break_at
    if break_at > 0:  # the last finite weights are restored
        assert np.all(np.isfinite(model.item_embedding_layer.embeddings.numpy()))


# -- SASRec positions ----------------------------------------------------------------
def _sasrec():
    return SASRec(num_items=50, max_length=8, hidden_dim=8, num_blocks=1, dropout=0.0)


def test_sasrec_refuses_longer_sequences_at_trace_time():
    model = _sasrec()
    with pytest.raises(ValueError, match="max_length=8"):
        model(np.ones((2, 9), "int32"))
    with pytest.raises(ValueError, match="max_length=8"):
        model.last_hidden(np.ones((2, 16), "int32"))


@pytest.mark.parametrize("jit", [False, True], ids=["graph_assert", "xla_nan"])
def test_sasrec_refuses_longer_sequences_of_unknown_length(jit):
    model = _sasrec()
    model(np.ones((1, 8), "int32"))
    spec = tf.TensorSpec([None, None], tf.int32)
    run = tf.function(
        lambda x: model(x), input_signature=[spec], jit_compile=jit, autograph=False
    )
    assert np.all(np.isfinite(run(tf.ones((2, 8), tf.int32)).numpy()))
    if jit:
        assert np.all(np.isnan(run(tf.ones((2, 9), tf.int32)).numpy()))
    else:
        with pytest.raises(tf.errors.InvalidArgumentError, match="max_length=8"):
            run(tf.ones((2, 9), tf.int32))


# -- integer arguments ---------------------------------------------------------------
INT_CASES = {
    "sce_sizes": lambda n: scalable_cross_entropy(
        *_small(), num_buckets=n(2), bucket_size_x=n(4), bucket_size_y=n(8), seed=n(3),
        padding_id=n(0), chunk_size=n(16),
    ),
    "seed_stream": lambda n: SeedStream(n(3), n(2)).next(),
    "bucket_top_k": lambda n: bucket_top_k(
        tf.ones([2, D]), tf.ones([40, D]), n(3), chunk_size=n(7), exclude_id=n(0)
    ),
    "sampled_softmax": lambda n: sampled_ops.sampled_softmax(
        *_small(), num_sampled=n(5), seed=n(1), padding_id=n(0)
    ),
    "gbce": lambda n: sampled_ops.gbce(*_small(), num_negatives=n(5), seed=n(1)),
    "chunked_ce": lambda n: chunked_cross_entropy(*_small(), chunk_size=n(9)),
    "sce_loss": lambda n: losses.SCELoss(None, bucket_size_y=n(8), seed=n(1), padding_id=n(0)),
    "bce_loss": lambda n: losses.SampledBCELoss(None, num_negatives=n(2), seed=n(1)),
    "ranking": lambda n: evaluate_ranking(
        *_ranking_problem(), ks=(n(1), n(5)), chunk_size=n(7), batch_size=n(4), padding_id=n(0)
    ),
    "sasrec": lambda n: SASRec(n(50), max_length=n(8), hidden_dim=n(8), num_heads=n(2)),
}


def _small():
    rng = np.random.default_rng(1)
    labels = rng.integers(1, 40, size=(3, 4)).astype("int32")
    return rng.normal(size=(3, 4, D)).astype("float32"), labels, rng.normal(size=(40, D))


@pytest.mark.parametrize("kind", [int, np.int32, np.int64], ids=["int", "np.int32", "np.int64"])
@pytest.mark.parametrize("case", sorted(INT_CASES))
def test_numpy_integers_are_accepted_like_ints(case, kind):
    INT_CASES[case](kind)


BAD_INTS = [
    ("bucket_size_y_bool", lambda: scalable_cross_entropy(*_small(), bucket_size_y=True)),
    ("bucket_size_y_float", lambda: scalable_cross_entropy(*_small(), bucket_size_y=8.0)),
    ("padding_id_bool", lambda: scalable_cross_entropy(*_small(), padding_id=False)),
    ("padding_id_np_bool", lambda: full_cross_entropy(*_small(), padding_id=np.bool_(0))),
    ("seed_bool", lambda: SeedStream(True)),
    ("seed_str", lambda: losses.SCELoss(None, seed="3")),
    ("num_negatives_bool", lambda: losses.GBCELoss(None, num_negatives=True)),
    ("num_sampled_float", lambda: losses.SampledSoftmaxLoss(None, num_sampled=5.0)),
    ("exclude_id_bool", lambda: bucket_top_k(tf.ones([2, D]), tf.ones([9, D]), 2, exclude_id=True)),
    ("ks_bool", lambda: evaluate_ranking(*_ranking_problem(), ks=(True,))),
    ("k_float", lambda: evaluate_ranking(*_ranking_problem(), ks=(5.0,))),
    ("max_length_bool", lambda: SASRec(50, max_length=True)),
    ("max_length_float", lambda: SASRec(50, max_length=8.0)),
]


@pytest.mark.parametrize("build", [b for _, b in BAD_INTS], ids=[i for i, _ in BAD_INTS])
def test_bools_and_floats_are_refused_where_an_int_is_expected(build):
    with pytest.raises((TypeError, ValueError), match="int"):
        build()
