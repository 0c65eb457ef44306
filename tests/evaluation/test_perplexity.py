"""Exact streamed next-token metrics against a dense float64 NumPy oracle."""

from __future__ import annotations

import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_sce.evaluation import NonFiniteScoresError
from keras_sce.evaluation.perplexity import (
    NextTokenMetrics,
    _stream,
    evaluate_next_token,
    next_token_metrics,
)
from keras_sce.ops.cross_entropy import full_cross_entropy


def _oracle(hidden, table, targets, bias=None, padding_id=0, ks=(1, 10)):
    hidden, table = np.asarray(hidden, np.float64), np.asarray(table, np.float64)
    targets = np.asarray(targets).reshape(-1)
    hidden = hidden.reshape(-1, table.shape[1])
    keep = targets != padding_id if padding_id is not None else np.ones(targets.size, bool)
    hidden, targets = hidden[keep], targets[keep]
    logits = hidden @ table.T + (0.0 if bias is None else np.asarray(bias, np.float64))
    if padding_id is not None:
        logits[:, padding_id] = -np.inf
    top = logits.max(axis=1, keepdims=True)
    lse = top[:, 0] + np.log(np.exp(logits - top).sum(axis=1))
    target_logit = logits[np.arange(targets.size), targets]
    ranks = (logits >= target_logit[:, None]).sum(axis=1) - 1  # ties against the target
    out = {"tokens": targets.size, "log_likelihood": float(np.sum(target_logit - lse))}
    out["cross_entropy"] = -out["log_likelihood"] / targets.size
    out["perplexity"] = float(np.exp(out["cross_entropy"]))
    for k in ks:
        out[f"acc@{k}"] = float(np.mean(ranks < k))
        out[f"ndcg@{k}"] = float(np.mean(np.where(ranks < k, 1 / np.log2(ranks + 2.0), 0)))
    return out


def _data(n, vocab, dim, seed=0, dtype="float64", padding_id=0):
    rng = np.random.default_rng(seed)
    hidden = rng.normal(size=(n, dim)).astype(dtype)
    table = rng.normal(size=(vocab, dim)).astype(dtype)
    low = 1 if padding_id == 0 else 0
    targets = rng.integers(low, vocab, size=n)
    return hidden, table, targets


def _assert_close(got, want, rtol):
    assert got["tokens"] == want["tokens"]
    for key, value in want.items():
        np.testing.assert_allclose(got[key], value, rtol=rtol, atol=1e-12, err_msg=key)


CASES = [
    pytest.param(37, 1001, 17, 128, id="37x1001x17-chunk128"),
    pytest.param(5, 13, 3, 1, id="chunk1"),
    pytest.param(64, 257, 8, 1000, id="chunk-larger-than-vocab"),
    pytest.param(10, 50, 4, 7, id="chunk7-not-dividing-50"),
]


@pytest.mark.parametrize("n,vocab,dim,chunk", CASES)
@pytest.mark.parametrize("with_bias", [False, True], ids=["no-bias", "bias"])
@pytest.mark.parametrize("padding_id", [0, None], ids=["pad0", "no-pad"])
def test_matches_dense_oracle(n, vocab, dim, chunk, with_bias, padding_id):
    hidden, table, targets = _data(n, vocab, dim, padding_id=padding_id)
    bias = np.random.default_rng(1).normal(size=vocab) if with_bias else None
    got = next_token_metrics(hidden, table, targets, bias=bias, padding_id=padding_id,
                             chunk_size=chunk, batch_size=6)
    _assert_close(got, _oracle(hidden, table, targets, bias, padding_id), rtol=1e-9)


@pytest.mark.parametrize("chunk", [3, 4], ids=["chunk3-holds-padding", "chunk4"])
def test_padding_id_inside_the_vocabulary(chunk):
    hidden, table, targets = _data(21, 11, 3, padding_id=3)
    targets[::4] = 3  # padding targets, skipped
    got = next_token_metrics(hidden, table, targets, padding_id=3, chunk_size=chunk)
    _assert_close(got, _oracle(hidden, table, targets, None, 3), rtol=1e-9)


def test_float32_matches_oracle_and_the_exact_loss():
    hidden, table, targets = _data(37, 1001, 17, dtype="float32")
    got = next_token_metrics(hidden, table, targets, chunk_size=100)
    _assert_close(got, _oracle(hidden, table, targets), rtol=1e-5)
    reference = float(full_cross_entropy(hidden, targets, table, padding_id=0))
    np.testing.assert_allclose(got["cross_entropy"], reference, rtol=1e-5)


@pytest.mark.parametrize("chunk", [1, 64, 250, 4096])
@pytest.mark.parametrize("batch", [7, 40])
def test_chunk_and_batch_invariance(chunk, batch):
    hidden, table, targets = _data(40, 251, 6)
    base = next_token_metrics(hidden, table, targets, chunk_size=251, batch_size=40)
    got = next_token_metrics(hidden, table, targets, chunk_size=chunk, batch_size=batch)
    _assert_close(got, base, rtol=1e-10)


def test_padding_targets_and_row_are_ignored():
    hidden, table, targets = _data(20, 30, 5)
    base = next_token_metrics(hidden, table, targets)
    # Padding positions may hold NaN (a fully masked position); they are skipped.
    nan_rows = np.full((6, 5), np.nan)
    got = next_token_metrics(np.concatenate([hidden, nan_rows]), table,
                             np.concatenate([targets, np.zeros(6, int)]))
    _assert_close(got, base, rtol=1e-12)
    # The padding row never competes, however high (or NaN) it scores.
    table[0] = np.nan
    _assert_close(next_token_metrics(hidden, table, targets), base, rtol=1e-12)


def test_ties_count_against_the_target():
    out = next_token_metrics(np.zeros((3, 4)), np.ones((6, 4)), np.array([1, 2, 5]))
    assert out["acc@1"] == 0.0  # 4 other candidates tie with the target
    np.testing.assert_allclose(out["perplexity"], 5.0)
    np.testing.assert_allclose(out["ndcg@10"], 1 / np.log2(4 + 2))


def test_oov_targets_are_one_class():
    hidden, table, targets = _data(30, 40, 4)
    targets = np.where(targets == 1, 2, targets)
    targets[:10] = 1
    out = next_token_metrics(hidden, table, targets, oov_id=1)
    _assert_close({k: v for k, v in out.items() if k != "oov_rate"},
                  _oracle(hidden, table, targets), rtol=1e-9)
    assert out["oov_rate"] == pytest.approx(10 / 30)


@pytest.mark.parametrize(
    "where", ["table-row", "hidden-row", "bias", "inf-table"],
)
def test_non_finite_scores_raise(where):
    hidden, table, targets = _data(12, 20, 3)
    bias = np.zeros(20)
    if where == "table-row":
        table[7] = np.nan
    elif where == "hidden-row":
        hidden[4, 1] = np.nan
    elif where == "bias":
        bias[11] = np.inf
    else:
        table[5, 0] = np.inf
    with pytest.raises(NonFiniteScoresError, match="NaN or infinite"):
        next_token_metrics(hidden, table, targets, bias=bias, chunk_size=6)


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        (dict(targets=np.array([0, 0, 0])), ValueError, "no non-padding target"),
        (dict(targets=np.array([1, 2, 20])), ValueError, r"outside \[0, 20\)"),
        (dict(targets=np.array([1, 2])), ValueError, "shape"),
        (dict(targets=np.array([1.0, 2.0, 3.0])), TypeError, "integer ids"),
        (dict(bias=np.zeros(19)), ValueError, "bias"),
        (dict(padding_id=20), ValueError, "padding_id"),
        (dict(chunk_size=0), ValueError, "chunk_size"),
        (dict(hidden=np.zeros((3, 4))), ValueError, r"\[\.\.\., 3\]"),
    ],
    ids=["all-padding", "id-out-of-range", "shape-mismatch", "float-targets", "bias-shape",
         "padding-out-of-table", "chunk-zero", "width-mismatch"],
)
def test_bad_inputs_raise(kwargs, error, match):
    args = dict(hidden=np.zeros((3, 3)), table=np.ones((20, 3)), targets=np.array([1, 2, 3]))
    args.update({k: kwargs.pop(k) for k in list(kwargs) if k in args})
    with pytest.raises(error, match=match):
        next_token_metrics(args["hidden"], args["table"], args["targets"], **kwargs)


_SHAPE = re.compile(r"\b(?:f32|f64|s32|s64|pred)\[([0-9,]+)\]")


def test_no_tokens_by_vocabulary_tensor_in_the_compiled_program():
    n, vocab, dim, chunk = 64, 5003, 8, 256
    compiled = tf.function(_stream, jit_compile=True)
    hlo = compiled.experimental_get_compiler_ir(
        tf.random.normal([n, dim]), tf.random.normal([vocab, dim]), tf.zeros([vocab]),
        tf.ones([n], tf.int32), tf.constant(chunk), tf.constant(0),
    )(stage="optimized_hlo")
    sizes = [int(np.prod([int(x) for x in dims.split(",")])) for dims in _SHAPE.findall(hlo)]
    assert max(sizes) <= max(vocab * dim, n * chunk)
    assert max(sizes) < n * vocab


def test_evaluate_next_token_over_a_model_and_a_dataset():
    from keras_sce.datasets.token_corpus import TokenSplit

    rng = np.random.default_rng(3)
    vocab, dim = 23, 4
    ids = rng.integers(1, vocab, size=50).astype("int32")
    split = TokenSplit(ids, np.array([0, 17, 18, 50]), ["a", "b", "c"])
    embed = keras.layers.Embedding(vocab, dim)
    table = rng.normal(size=(vocab, dim)).astype("float32")
    data = split.dataset(6, 4, with_weights=True)
    got = evaluate_next_token(embed, data, table, chunk_size=5)
    windows = split.windows(6)
    hidden = embed(windows[:, :-1]).numpy()
    _assert_close(got, _oracle(hidden, table, windows[:, 1:]), rtol=1e-5)
    assert got["tokens"] == 50 - 3  # every token but each document's first


def test_keras_variables_as_table_and_bias():
    hidden, table, targets = _data(9, 15, 4, dtype="float32")
    bias = np.linspace(-1, 1, 15).astype("float32")
    got = next_token_metrics(hidden, keras.Variable(table), targets, bias=keras.Variable(bias),
                             chunk_size=4)
    _assert_close(got, _oracle(hidden, table, targets, bias), rtol=1e-5)


def test_accumulator_equals_one_call():
    hidden, table, targets = _data(30, 41, 5)
    metrics = NextTokenMetrics(table, chunk_size=9)
    metrics.update(hidden[:11], targets[:11])
    metrics.update(hidden[11:], targets[11:])
    _assert_close(metrics.result(), next_token_metrics(hidden, table, targets), rtol=1e-12)


def test_unigram_model_on_a_token_corpus(tmp_path):
    """End to end: corpus -> tf.data -> streamed metrics equal the closed-form unigram."""
    from keras_sce.datasets.tokens import load_token_corpus

    words = [f"w{'x' * (i % 13)}y{'z' * (i % 5)}" for i in range(400)]
    path = tmp_path / "c.txt"
    path.write_text("\n".join(" ".join(words[j : j + 9]) for j in range(0, 400, 9)))
    corpus = load_token_corpus(path, 40, documents="lines", cache=False,
                               split=(0.6, 0.2, 0.2))
    # A unigram model: hidden state 1, output table log(count + 1), padding row unused.
    log_p = np.log(corpus.counts + 1.0)
    table = log_p[:, None].astype("float32")
    model = lambda x: tf.ones(tf.concat([tf.shape(x), [1]], 0))  # noqa: E731
    got = evaluate_next_token(model, corpus.test.dataset(4, 3), table, chunk_size=7)
    targets = np.concatenate([corpus.test.document(i)[1:] for i in range(
        corpus.test.num_documents)])
    norm = np.log(np.exp(log_p[1:]).sum())
    np.testing.assert_allclose(got["cross_entropy"], -np.mean(log_p[targets] - norm), rtol=1e-5)
    assert got["tokens"] == targets.size
