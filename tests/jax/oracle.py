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


def full_ce(hidden, labels, table, padding_id=0):
    """``(loss, d loss / d hidden, d loss / d table, per-row CE)``; padding excluded."""
    x, y, valid = _flat(hidden, labels, padding_id)
    w = np.asarray(table, np.float64)
    logits = x @ w.T
    if padding_id is not None:
        logits[:, padding_id] = -np.inf
    top = logits.max(axis=1, keepdims=True)
    prob = np.exp(logits - top)
    prob /= prob.sum(axis=1, keepdims=True)
    rows = np.arange(len(y))
    row_ce = -np.log(np.where(valid, prob[rows, y], 1.0))
    count = max(int(valid.sum()), 1)
    loss = float(row_ce[valid].sum() / count) if valid.any() else 0.0
    dlogits = prob.copy()
    dlogits[rows, y] -= 1.0
    dlogits *= valid[:, None] / count
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
