"""A float64 NumPy oracle of calibrated SCE's normaliser, shared by the TensorFlow and
JAX suites: each row's seen set, the exact Z, and the checks of the estimate."""

from __future__ import annotations

import numpy as np


def seen_parts(hidden, labels, table, centers, bucket_size_y, padding_id=0):
    """`(exact_part [N], unseen [N, C])` for fixed centres, all rows in every bucket.

    A row's seen set is the bucket with its largest raw loss, its positive and the
    padding row; `exact_part` is the mass of the seen set (padding excluded),
    `unseen[i, k]` is `exp(s_ik)` for every other item (0 for seen ones).
    """
    h, w = np.asarray(hidden, np.float64), np.asarray(table, np.float64)
    y = np.asarray(labels).astype(int)
    n, c = len(y), w.shape[0]
    e = np.exp(h @ w.T)
    scores = np.asarray(centers, np.float64) @ w.T
    scores[:, padding_id] = -np.inf
    buckets = np.argsort(-scores, axis=1, kind="stable")[:, :bucket_size_y]
    seen = np.zeros((n, c), bool)
    for i in range(n):
        lse = [np.log(e[i, b[b != y[i]]].sum() + e[i, y[i]]) for b in buckets]
        seen[i, buckets[int(np.argmax(lse))]] = True
    seen[np.arange(n), y] = True
    e[:, padding_id] = 0.0
    return (e * seen).sum(1), np.where(seen, 0.0, e)


def check_estimates(row_losses, hidden, labels, table, exact_part, unseen, q, num_samples,
                    padding_id=0):
    """Asserts that the calibrated row losses `[seeds, N]` estimate `log Z` as derived.

    `Z_hat = exp(row_loss + s_y)` is unbiased (the mean over seeds within 4.5 standard
    errors of the exact Z), its variance is the derived `Var(Z_hat)` (summed over rows,
    25%), and the log gap obeys Jensen: `0 <= log Z - E[log Z_hat] <= Var / (2 Z A)`.
    """
    h, w = np.asarray(hidden, np.float64), np.asarray(table, np.float64)
    y = np.asarray(labels).astype(int)
    positive = np.sum(h * w[y], axis=1)
    z_hat = np.exp(np.asarray(row_losses, np.float64) + positive)
    seeds = z_hat.shape[0]
    rest = unseen.sum(1)
    var = ((unseen**2 / np.where(q > 0, q, 1.0)).sum(1) - rest**2) / num_samples
    valid = y != padding_id
    z_hat, z, a, var = z_hat[:, valid], (exact_part + rest)[valid], exact_part[valid], var[valid]
    se = z_hat.std(0, ddof=1) / np.sqrt(seeds)
    assert np.all(np.abs(z_hat.mean(0) - z) < 4.5 * se + 1e-5 * z)
    np.testing.assert_allclose(z_hat.var(0, ddof=1).sum(), var.sum(), rtol=0.25)
    log_gap = np.log(z) - np.log(z_hat)
    gap, gap_se = log_gap.mean(0), log_gap.std(0, ddof=1) / np.sqrt(seeds)
    bound = var / (2 * z * a)
    assert np.all(gap > -4.5 * gap_se - 1e-5)
    assert np.all(gap < bound + 4.5 * gap_se + 1e-5)
    assert np.all(var / (2 * z**2) <= bound)
