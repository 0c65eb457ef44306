"""Exact next-token metrics over the whole vocabulary, streamed over its chunks.

For every target position the full softmax over the vocabulary is evaluated
exactly: `log p(y | h) = <h, w_y> + b_y - logsumexp_j(<h, w_j> + b_j)`, the
logsumexp running over vocabulary chunks (running max and rescaled sum), so the
largest live tensor is `[batch_size, chunk_size]` and no `[tokens, vocabulary]`
matrix is ever built. In the same pass each target's rank is counted (the
candidates scoring at least as high as the target, ties against it), which gives
accuracy@k and NDCG@k over the full vocabulary. Padding targets are dropped and
the padding row is never a candidate; an out-of-vocabulary id is an ordinary
class. A NaN or infinite score raises instead of yielding a silently perfect or
empty metric.

This is the evaluation counterpart of `keras_sce.ops.cross_entropy.chunked_cross_entropy`
(no gradient; adds a bias and the ranks).
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from keras_sce.evaluation.finite import NonFiniteScoresError
from keras_sce.ops import checks
from keras_sce.ops.top_k import exclude_per_row

DEFAULT_KS = (1, 10)


def _stream(hidden, table, bias, targets, chunk_size, padding_id):
    """Per-row log-likelihood, rank and an all-finite flag, one vocabulary pass.

    `targets` hold no padding id; `padding_id` is -1 when there is none.
    """
    return _scan(hidden, table, bias, targets, chunk_size, padding_id, None)


def _stream_excluding(hidden, table, bias, targets, chunk_size, padding_id, exclude):
    """`_stream` with `exclude [n, H]`: ids left out of row n's softmax and
    rank (`-1` = nothing; a row's own target is never left out)."""
    exclude = tf.where(exclude == targets[:, tf.newaxis], -1, exclude)  # the target stays
    return _scan(hidden, table, bias, targets, chunk_size, padding_id, exclude)


def _scan(hidden, table, bias, targets, chunk_size, padding_id, exclude):
    dtype = hidden.dtype
    num_items = tf.shape(table)[0]
    num_rows = tf.shape(hidden)[0]
    num_chunks = (num_items + chunk_size - 1) // chunk_size
    neg_inf = tf.constant(-np.inf, dtype)
    target_logit = tf.reduce_sum(hidden * tf.cast(tf.gather(table, targets), dtype), axis=1)
    target_logit += tf.cast(tf.gather(bias, targets), dtype)

    def body(i, run_max, run_sum, above, finite):
        item_ids = i * chunk_size + tf.range(chunk_size)
        eligible = (item_ids < num_items) & (item_ids != padding_id)
        # A gather with clamped ids (not a slice): every chunk has the same static
        # shape, and XLA makes no padded copy of the table.
        index = tf.minimum(item_ids, num_items - 1)
        rows = tf.cast(tf.gather(table, index), dtype)
        logits = tf.matmul(hidden, rows, transpose_b=True)  # [n, chunk]
        logits += tf.cast(tf.gather(bias, index), dtype)[tf.newaxis, :]
        ok = tf.math.is_finite(logits) | ~eligible[tf.newaxis, :]
        finite = finite & tf.reduce_all(ok)
        logits = tf.where(eligible[tf.newaxis, :], logits, neg_inf)
        if exclude is not None:
            logits = exclude_per_row(logits, i * chunk_size, exclude)
        new_max = tf.maximum(run_max, tf.reduce_max(logits, axis=1))
        shift = tf.where(tf.math.is_finite(new_max), new_max, tf.zeros_like(new_max))
        run_sum = run_sum * tf.exp(run_max - shift) + tf.reduce_sum(
            tf.exp(logits - shift[:, tf.newaxis]), axis=1
        )
        beats = (logits >= target_logit[:, tf.newaxis]) & (
            item_ids[tf.newaxis, :] != targets[:, tf.newaxis]
        )
        above += tf.reduce_sum(tf.cast(beats & eligible[tf.newaxis, :], tf.int64), axis=1)
        return i + 1, new_max, run_sum, above, finite

    _, run_max, run_sum, above, finite = tf.while_loop(
        lambda i, *_: i < num_chunks,
        body,
        (
            tf.constant(0),
            tf.fill([num_rows], neg_inf),
            tf.zeros([num_rows], dtype),
            tf.zeros([num_rows], tf.int64),
            tf.reduce_all(tf.math.is_finite(target_logit)),
        ),
        parallel_iterations=1,
    )
    log_likelihood = target_logit - (run_max + tf.math.log(run_sum))
    return log_likelihood, above, finite


_stream_graph = tf.function(_stream, reduce_retracing=True)
stream_excluding_graph = tf.function(_stream_excluding, reduce_retracing=True)


class NextTokenMetrics:
    """Accumulates exact full-vocabulary next-token metrics batch by batch.

    Args:
        output_table: `float [V, d]` output embeddings (a tensor, array or
            variable); row `padding_id` is never a candidate.
        bias: optional `float [V]` output bias.
        padding_id: target id that is skipped (None: every target counts).
        chunk_size: vocabulary rows scored at once.
        batch_size: target positions scored at once.
        ks: cut-offs of `acc@k` and `ndcg@k`.
        oov_id: optional out-of-vocabulary id, to report the share of such targets.

    Example:

    >>> metrics = NextTokenMetrics(np.eye(3, dtype="float32"))
    >>> metrics.update(np.array([[0, 5, 0]], "float32"), np.array([1]))
    >>> round(metrics.result()["acc@1"], 2)
    1.0
    """

    def __init__(self, output_table, *, bias=None, padding_id=0, chunk_size=8192,
                 batch_size=1024, ks=DEFAULT_KS, oov_id=None):
        self.table = checks.as_table(output_table)  # a variable is read, not copied
        if self.table.shape.rank != 2 or not self.table.dtype.is_floating:
            raise ValueError(
                f"`output_table` must be a float [V, d] matrix, got {self.table.shape} "
                f"{self.table.dtype.name}."
            )
        self.num_items = int(self.table.shape[0])
        self.bias = tf.zeros([self.num_items], self.table.dtype) if bias is None else (
            checks.as_table(bias))
        if tuple(self.bias.shape) != (self.num_items,):
            raise ValueError(f"`bias` must have shape [{self.num_items}], got {self.bias.shape}.")
        for name, value in (("chunk_size", chunk_size), ("batch_size", batch_size)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"`{name}` must be a positive int, got {value!r}.")
        if padding_id is not None and not 0 <= padding_id < self.num_items:
            raise ValueError(f"`padding_id`={padding_id} is not a row of the output table "
                             f"({self.num_items} rows); use None for no padding.")
        self.ks = tuple(sorted({int(k) for k in ks}))
        if not self.ks or self.ks[0] < 1:
            raise ValueError(f"`ks` must hold positive cut-offs, got {ks!r}.")
        self.padding_id, self.chunk_size, self.batch_size = padding_id, chunk_size, batch_size
        self.oov_id = oov_id
        self.reset()

    def reset(self):
        self.count, self.log_likelihood, self.oov = 0, 0.0, 0
        self.hits = dict.fromkeys(self.ks, 0)
        self.ndcg = dict.fromkeys(self.ks, 0.0)

    def update(self, hidden, targets):
        """Adds positions: `hidden [..., d]` and their next tokens `targets [...]`."""
        hidden = tf.convert_to_tensor(hidden)
        if not hidden.dtype.is_floating:
            raise TypeError(f"`hidden` must be floating point, got {hidden.dtype.name}.")
        dim = int(self.table.shape[1])
        if hidden.shape.rank is None or hidden.shape[-1] != dim:
            raise ValueError(f"`hidden` must be [..., {dim}] like the output table, got "
                             f"{hidden.shape}.")
        targets = np.asarray(targets)
        if not np.issubdtype(targets.dtype, np.integer):
            raise TypeError(f"`targets` must hold integer ids, got dtype {targets.dtype}.")
        if targets.shape != tuple(hidden.shape[:-1]):
            raise ValueError(f"`targets` shape {targets.shape} must be `hidden` without its "
                             f"last axis, {tuple(hidden.shape[:-1])}.")
        targets = targets.reshape(-1)
        keep = np.ones(targets.shape, bool) if self.padding_id is None else (
            targets != self.padding_id)
        targets = targets[keep]
        if targets.size and (targets.min() < 0 or targets.max() >= self.num_items):
            raise ValueError(f"`targets` hold ids outside [0, {self.num_items}) (min "
                             f"{targets.min()}, max {targets.max()}).")
        compute = tf.float64 if hidden.dtype == tf.float64 else tf.float32
        rows = tf.boolean_mask(tf.reshape(tf.cast(hidden, compute), [-1, dim]), keep)
        padding = -1 if self.padding_id is None else self.padding_id
        for start in range(0, targets.size, self.batch_size):
            y = targets[start : start + self.batch_size].astype(np.int32)
            loglik, above, finite = _stream_graph(
                rows[start : start + self.batch_size], self.table, self.bias,
                tf.constant(y), tf.constant(self.chunk_size), tf.constant(padding),
            )
            if not bool(finite):
                raise NonFiniteScoresError(
                    "a score (hidden state . output row + bias) is NaN or infinite: the "
                    "hidden states or the output table hold non-finite values, so no "
                    "perplexity or accuracy can be computed."
                )
            ranks = above.numpy()
            self.count += int(y.size)
            self.log_likelihood += float(np.sum(loglik.numpy(), dtype=np.float64))
            for k in self.ks:
                hit = ranks < k
                self.hits[k] += int(hit.sum())
                self.ndcg[k] += float(np.sum(1.0 / np.log2(ranks[hit] + 2.0)))
            if self.oov_id is not None:
                self.oov += int(np.count_nonzero(y == self.oov_id))

    def result(self) -> dict[str, float]:
        """`tokens`, `log_likelihood` (nats, summed), `cross_entropy` (mean
        nats), `perplexity`, `acc@k`, `ndcg@k` (and `oov_rate`)."""
        if self.count == 0:
            raise ValueError("no non-padding target was seen: nothing to evaluate.")
        cross_entropy = -self.log_likelihood / self.count
        out = {
            "tokens": self.count,
            "log_likelihood": self.log_likelihood,
            "cross_entropy": cross_entropy,
            "perplexity": math.exp(cross_entropy) if cross_entropy < 700 else math.inf,
        }
        for k in self.ks:
            out[f"acc@{k}"] = self.hits[k] / self.count
            out[f"ndcg@{k}"] = self.ndcg[k] / self.count
        if self.oov_id is not None:
            out["oov_rate"] = self.oov / self.count
        return out


def next_token_metrics(hidden, output_table, targets, **options) -> dict[str, float]:
    """Exact perplexity, acc@k and NDCG@k of hidden states over the full vocabulary.

    Args:
        hidden: `float [..., d]` hidden states (the model output before the
            output layer).
        output_table: `float [V, d]` output embeddings.
        targets: `int [...]` next-token ids; `padding_id` entries are skipped.
        **options: `bias`, `padding_id` (0), `chunk_size`, `batch_size`,
            `ks` ((1, 10)), `oov_id` of `NextTokenMetrics`.

    Returns:
        See `NextTokenMetrics.result`.

    Raises:
        ValueError: no target left, ids outside the table, mismatched shapes.
        NonFiniteScoresError: a non-finite score (a `ValueError`, as the ranking
            metrics raise).

    Example:

    >>> out = next_token_metrics(np.zeros((2, 4), "float32"), np.ones((5, 4), "float32"),
    ...                          np.array([1, 2]))
    >>> round(out["perplexity"], 4)  # uniform over the 4 non-padding rows
    4.0
    """
    metrics = NextTokenMetrics(output_table, **options)
    metrics.update(hidden, targets)
    return metrics.result()


def evaluate_next_token(model, dataset, output_table, **options) -> dict[str, float]:
    """`next_token_metrics` over a `tf.data` pipeline and a hidden-state model.

    Args:
        model: a callable (e.g. a Keras model) mapping a batch of inputs to
            hidden states `[batch, length, d]`.
        dataset: yields `(inputs, targets)` or `(inputs, targets, weights)`
            (as `keras_sce.datasets.token_corpus.TokenSplit.dataset`); the
            weights are not used, padding targets are skipped.
        output_table: `float [V, d]` output embeddings.
        **options: as in `next_token_metrics`.

    Returns:
        See `NextTokenMetrics.result`.
    """
    metrics = NextTokenMetrics(output_table, **options)
    for batch in dataset:
        inputs, targets = batch[0], batch[1]
        hidden = model(inputs, training=False) if _takes_training(model) else model(inputs)
        metrics.update(hidden, np.asarray(targets))
    return metrics.result()


def _takes_training(model) -> bool:
    import keras

    return isinstance(model, keras.layers.Layer)
