"""Float64 NumPy references for the JAX suite: full CE (with its gradients) and SCE
with fixed centres, written from the method's description (arXiv 2409.18721)."""

from __future__ import annotations

import numpy as np


def _flat(hidden, labels, padding_id):
    x = np.asarray(hidden, np.float64).reshape(-1, np.shape(hidden)[-1])
    y = np.asarray(labels).reshape(-1)
    valid = np.ones_like(y, bool) if padding_id is None else y != padding_id
    return np.where(valid[:, None], x, 0.0), y, valid


def _logsumexp(values):
    top = np.max(values)
    return top + np.log(np.sum(np.exp(values - top)))


def full_ce(hidden, labels, table, padding_id=0, row_weight=None):
    """``(loss, d loss / d hidden, d loss / d table, per-row CE)``; padding excluded.

    ``row_weight`` (one per flat row) weighs the mean, e.g. 0/1 for the rows a
    bucket covers.
    """
    x, y, valid = _flat(hidden, labels, padding_id)
    if row_weight is not None:
        valid = valid & (np.asarray(row_weight) > 0)
    weight = valid.astype(np.float64)
    if row_weight is not None:
        weight = weight * np.asarray(row_weight, np.float64)
    w = np.asarray(table, np.float64)
    logits = x @ w.T
    if padding_id is not None:
        logits[:, padding_id] = -np.inf
    top = logits.max(axis=1, keepdims=True)
    prob = np.exp(logits - top)
    prob /= prob.sum(axis=1, keepdims=True)
    rows = np.arange(len(y))
    row_ce = -np.log(np.where(valid, prob[rows, y], 1.0))
    count = weight.sum() if valid.any() else 1.0
    loss = float((weight * np.where(valid, row_ce, 0.0)).sum() / count) if valid.any() else 0.0
    dlogits = prob.copy()
    dlogits[rows, y] -= 1.0
    dlogits *= weight[:, None] / count
    grad_x = (dlogits @ w).reshape(np.shape(hidden))
    grad_w = dlogits.T @ x
    return loss, grad_x, grad_w, np.where(valid, row_ce, 0.0)


def sce_fixed_centres(hidden, labels, table, centres, b_x, b_y, padding_id=0):
    """SCE's loss for the given centres (lowest index wins ties, as top-k does)."""
    x, y, valid = _flat(hidden, labels, padding_id)
    w = np.asarray(table, np.float64)
    c = np.asarray(centres, np.float64)
    row_scores = np.where(valid[None, :], c @ x.T, -np.inf)
    bucket_rows = np.argsort(-row_scores, axis=1, kind="stable")[:, :b_x]
    item_scores = c @ w.T
    if padding_id is not None:
        item_scores[:, padding_id] = -np.inf
    bucket_items = np.argsort(-item_scores, axis=1, kind="stable")[:, :b_y]
    row_loss = np.full(len(y), -np.inf)
    for rows, items in zip(bucket_rows, bucket_items, strict=True):
        for r in rows:
            if not valid[r]:
                continue
            pos = x[r] @ w[y[r]]
            negatives = x[r] @ w[items[items != y[r]]].T
            loss = _logsumexp(np.append(negatives, pos)) - pos
            row_loss[r] = max(row_loss[r], loss)
    kept = np.isfinite(row_loss)
    return float(row_loss[kept].mean()) if kept.any() else 0.0


def sampled_softmax_given(hidden, labels, table, candidates, log_expected, padding_id=0):
    """Sampled softmax with logQ correction for the given real candidate ids.

    `log_expected[i]` is the log inclusion probability of real item `i` (any value
    on the padding row); negatives equal to a row's positive are removed.
    """
    x, y, valid = _flat(hidden, labels, padding_id)
    w = np.asarray(table, np.float64)
    log_expected = np.asarray(log_expected, np.float64)
    losses = []
    for r in np.flatnonzero(valid):
        pos = x[r] @ w[y[r]] - log_expected[y[r]]
        negatives = x[r] @ w[candidates].T - log_expected[candidates]
        negatives = negatives[candidates != y[r]]
        losses.append(_logsumexp(np.append(negatives, pos)) - pos)
    return float(np.mean(losses)) if losses else 0.0


def _softplus(s):
    return np.logaddexp(0.0, s)


def binary_given(hidden, labels, table, negatives, beta=1.0, offset=0.0, padding_id=0):
    """(g)BCE for the given per-row negative ids `[N, k]` (a hit on the positive ignored)."""
    x, y, valid = _flat(hidden, labels, padding_id)
    w = np.asarray(table, np.float64)
    negatives = np.asarray(negatives).reshape(len(y), -1)
    losses = []
    for r in np.flatnonzero(valid):
        pos = x[r] @ w[y[r]] + offset
        neg = x[r] @ w[negatives[r]].T + offset
        losses.append(beta * _softplus(-pos) + _softplus(neg)[negatives[r] != y[r]].sum())
    return float(np.mean(losses)) if losses else 0.0


def numeric_gradients(loss, hidden, table, step=1e-6):
    """Central finite differences of a float64 `loss(hidden, table)`, both arguments."""
    grads = []
    for which, value in enumerate((hidden, table)):
        value = np.asarray(value, np.float64)
        grad = np.zeros_like(value)
        for index in np.ndindex(value.shape):
            up, down = value.copy(), value.copy()
            up[index] += step
            down[index] -= step
            args_up = (up, table) if which == 0 else (hidden, up)
            args_down = (down, table) if which == 0 else (hidden, down)
            grad[index] = (loss(*args_up) - loss(*args_down)) / (2 * step)
        grads.append(grad)
    return grads
