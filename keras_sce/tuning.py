"""Choosing SCE's bucket sizes for a memory budget.

`sce_memory_bytes` is a cost model of one SCE loss + gradient evaluation
(`keras_sce.ops.scalable_cross_entropy` with its gradients with respect to the
hidden states and the item table), and `suggest_buckets` inverts it: the
authors' rule for the buckets and rows per bucket, and the largest items-per-bucket
that fits the budget. Plain Python: nothing here imports TensorFlow.

What the model counts, fitted to XLA's buffer assignment of the compiled loss +
gradient on the CPU (`f` = `dtype_bytes` per float, 4 per int32 index). The item
search and the bucket logits are two phases whose buffers XLA reuses, so the peak is
the larger of the two plus what lives throughout:

- bucket-logits phase: the logits `n_b x b_x x b_y` and their gradient (`2f`
  per element; XLA fuses the gathered rows `n_b x (b_x + b_y) x d` into the
  products);
- item-search phase: `n_b x (b_y + chunk)` candidates (scores, the merged
  scores, their ids: `2f + 4` per element), or `n_b x C` scores when the
  search is not chunked;
- throughout: the table gradient's sparse rows `(N + n_b b_y) x d` with their
  ids, the gradient and the positive rows of the hidden states (`N x d` each),
  and the row projection `n_b x N` (scores and ids).

The sum is multiplied by 1.1 as a margin. Inputs (hidden states, table, targets)
are not counted: they exist anyway. `tests/test_tuning.py` and
`benchmarks/large_vocab_buckets.py` compare the model with the measured buffer
assignment; the eager (non-XLA) path fuses less and may need more.
"""

from __future__ import annotations

from keras_sce.ops.defaults import DEFAULT_CHUNK_SIZE, default_num_buckets

# The smallest and largest items per bucket `suggest_buckets` considers.
MIN_BUCKET_SIZE_Y = 64
MAX_BUCKET_SIZE_Y = 4096
_MARGIN = 1.1


def _check_int(value, name, minimum=1):
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"`{name}` must be an int >= {minimum}, got {value!r}.")
    return value


def authors_rule(num_rows: int) -> int:
    """`int(2 * sqrt(N))`: the authors' number of buckets and rows per bucket."""
    return default_num_buckets(_check_int(num_rows, "num_rows"))


def sce_memory_bytes(num_rows, num_items, num_buckets, bucket_size_x, bucket_size_y, *,
                     dim=64, dtype_bytes=4, chunk_size=DEFAULT_CHUNK_SIZE) -> int:
    """Bytes of one SCE loss + gradient evaluation beyond its inputs (the cost model).

    Args:
        num_rows: `N`, rows of the flattened batch (batch x length, padding included).
        num_items: `C`, rows of the item table (padding row included).
        num_buckets: `n_b`.
        bucket_size_x: `b_x` (clamped to `N` as the op does).
        bucket_size_y: `b_y` (clamped to `C - 1` as the op does).
        dim: `d`, the width of the hidden states and of the table.
        dtype_bytes: bytes per float of the computation: 4 (float32, also for
            float16 / bfloat16 hidden states, which the op computes in float32)
            or 8 (float64).
        chunk_size: items per chunk of the streamed item search; None for the
            unchunked `n_b x C` projection.

    Returns:
        The predicted bytes (an int).
    """
    n, c = _check_int(num_rows, "num_rows"), _check_int(num_items, "num_items", 2)
    n_b = _check_int(num_buckets, "num_buckets")
    b_x = min(_check_int(bucket_size_x, "bucket_size_x"), n)
    b_y = min(_check_int(bucket_size_y, "bucket_size_y"), c - 1)
    d, f = _check_int(dim, "dim"), _check_int(dtype_bytes, "dtype_bytes")
    chunk = c if chunk_size is None else min(_check_int(chunk_size, "chunk_size"), c)
    index = 4
    logits_phase = 2 * f * n_b * b_x * b_y
    if chunk_size is None:
        search_phase = f * n_b * c + (2 * f + index) * n_b * b_y
    else:
        search_phase = (2 * f + index) * n_b * (b_y + chunk)
    throughout = ((n + n_b * b_y) * (d * f + index) + 2 * n * d * f
                  + n_b * n * (f + index))
    return int(_MARGIN * (max(logits_phase, search_phase) + throughout))


def suggest_buckets(num_rows, num_items, memory_budget_bytes, *, dim=64, dtype_bytes=4,
                    chunk_size=DEFAULT_CHUNK_SIZE, max_bucket_size_y=MAX_BUCKET_SIZE_Y):
    """SCE bucket sizes `(n_b, b_x, b_y)` that fit a memory budget.

    Starts from the authors' rule `n_b = b_x = int(2 * sqrt(N))` and the
    smallest `b_y` (64, or `C - 1` for a smaller catalogue), then doubles
    `b_y` (64, 128, ..., up to `max_bucket_size_y` and `C - 1`, the last step
    landing on the cap itself) while `sce_memory_bytes` stays within the
    budget. More items per bucket means harder negatives and a tighter bound on
    the full cross-entropy, at the cost of the `n_b x b_x x b_y` logits.

    Args:
        num_rows: `N` rows per batch (batch x length, padding included: the
            op's shapes are static).
        num_items: `C` rows of the item table (padding row included).
        memory_budget_bytes: bytes the loss + gradient may use beyond its
            inputs (hidden states, table, targets).
        dim: `d`.
        dtype_bytes: bytes per float.
        chunk_size: the loss's `chunk_size` (None: unchunked search).
        max_bucket_size_y: the largest `b_y` to consider (the paper goes up to
            4096).

    Returns:
        `(num_buckets, bucket_size_x, bucket_size_y)`: pass them to
        `keras_sce.SCELoss(..., num_buckets=, bucket_size_x=, bucket_size_y=,
        chunk_size=chunk_size)`.

    Raises:
        ValueError: a bad argument, or a budget below what the smallest
            configuration needs (the message gives that size).

    Examples:
        >>> from keras_sce.tuning import suggest_buckets
        >>> suggest_buckets(1024, 100_002, 64 * 2**20)
        (64, 64, 512)
    """
    n = _check_int(num_rows, "num_rows")
    c = _check_int(num_items, "num_items", 2)
    budget = memory_budget_bytes
    if not isinstance(budget, int | float) or isinstance(budget, bool) or not budget > 0:
        raise ValueError(f"`memory_budget_bytes` must be a positive number, got {budget!r}.")
    cap = min(_check_int(max_bucket_size_y, "max_bucket_size_y"), c - 1)
    n_b = authors_rule(n)
    b_x = min(n_b, n)

    def cost(b_y):
        return sce_memory_bytes(n, c, n_b, b_x, b_y, dim=dim, dtype_bytes=dtype_bytes,
                                chunk_size=chunk_size)

    b_y = min(MIN_BUCKET_SIZE_Y, cap)
    if cost(b_y) > budget:
        raise ValueError(
            f"`memory_budget_bytes`={budget:,.0f} is below the smallest SCE configuration "
            f"for N={n:,} rows and C={c:,} items (n_b = b_x = {n_b}, b_y = {b_y}, "
            f"chunk_size={chunk_size}): it needs {cost(b_y):,} bytes. Raise the budget, "
            "use smaller batches, or a smaller `chunk_size`."
        )
    while b_y < cap:
        grown = min(2 * b_y, cap)
        if cost(grown) > budget:
            break
        b_y = grown
    return n_b, b_x, b_y
