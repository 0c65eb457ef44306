"""The option checks and option rules of the losses, in plain Python (no TensorFlow, no Keras).

One definition serves both implementations of the losses: the TensorFlow core
(`keras_sce.ops`, through `keras_sce.ops.checks`) and the `keras.ops` one
(`keras_sce.kops`, which must not import TensorFlow). The same mistake gives the
same message on every backend. Only NumPy and the standard library are imported.
"""

from __future__ import annotations

import functools
import math
import numbers
import warnings

import numpy as np

from keras_sce.ops.defaults import DEFAULT_CHUNK_SIZE  # plain Python, loads no TensorFlow


def as_int(value, name: str, *, minimum=None, allow_none: bool = False):
    """`value` as a Python int: Python and NumPy integers alike, never a bool.

    The one integer check of the package: options such as bucket sizes, seeds,
    `padding_id` or `k` may come from NumPy (`np.int64` from a config array)
    and are accepted like Python ints; they are returned as Python ints so that
    configs stay JSON-serializable and compiled functions do not retrace. Bools
    (`True` is an `int` in Python), floats (even `3.0`) and strings raise.

    Args:
        value: the candidate.
        name: argument name used in the error message.
        minimum: optional smallest allowed value.
        allow_none: pass None through.

    Returns:
        A Python `int` (or None when allowed).

    Raises:
        TypeError: not an integer (or a bool).
        ValueError: below `minimum`.

    Example:

    >>> as_int(np.int64(3), "k")
    3
    """
    if value is None and allow_none:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        allowed = "an int" + (" or None" if allow_none else "")
        raise TypeError(f"`{name}` must be {allowed} (Python or NumPy integer), got {value!r}.")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"`{name}` must be an int >= {minimum}, got {value}.")
    return value


def check_positive_int(value, name: str, allow_none: bool = False):
    """`value` as a Python int >= 1 (see `as_int`); raises ValueError otherwise."""
    try:
        return as_int(value, name, minimum=1, allow_none=allow_none)
    except TypeError as err:
        raise ValueError(f"`{name}` must be a positive int, got {value!r}.") from err


def check_padding_id(padding_id, num_items):
    """`padding_id` is None or a row of the table; returns it as a Python int.

    `num_items` may be None (the table is not known yet): only the sign is checked.
    """
    padding_id = as_int(padding_id, "padding_id", allow_none=True)
    if padding_id is None:
        return None
    if padding_id < 0 or (num_items is not None and padding_id >= num_items):
        raise ValueError(
            f"`padding_id`={padding_id} is not a row of the item table (it has {num_items} rows). "
            "Use padding_id=None when the table has no padding row."
        )
    return padding_id


def check_sce_sizes(num_buckets, bucket_size_x, bucket_size_y, chunk_size) -> tuple:
    """Validates SCE's size options (the op, `SCELoss` and `SCERetrieval`, on every backend).

    Returns them as Python ints (NumPy integers accepted), in the order given.
    """
    return (
        check_positive_int(num_buckets, "num_buckets", allow_none=True),
        check_positive_int(bucket_size_x, "bucket_size_x", allow_none=True),
        check_positive_int(bucket_size_y, "bucket_size_y"),
        check_positive_int(chunk_size, "chunk_size", allow_none=True),
    )


def clamp_bucket_size(requested: int, available: int, name: str, what: str,
                      stacklevel: int = 3) -> int:
    """Clamps a bucket size to what is available, with a warning when it bites.

    A bucket larger than the rows (or items) available would only repeat the same
    ones; clamping to all of them is exact (it covers everything), so it is not a
    wrong answer, but the user asked for something else, hence the warning.
    `stacklevel` is the warning's, counted from this function.
    """
    if available < 1:
        raise ValueError(f"`{name}`: there are no {what} to choose from.")
    if requested > available:
        warnings.warn(
            f"`{name}`={requested} is larger than the {available} {what} available; "
            f"using {available} (every {what[:-1]} is then in every bucket).",
            UserWarning,
            stacklevel=stacklevel,
        )
        return available
    return requested


# -- the exact loss streamed over the catalogue --------------------------------------
# Auto chunk: each [N, chunk] float32 buffer stays near 2**24 elements (64 MB), and
# a chunk never exceeds SCE's default one.
_AUTO_CHUNK_ELEMENTS = 1 << 24
_AUTO_CHUNK_MIN = 128
_AUTO_CHUNK_MAX = DEFAULT_CHUNK_SIZE
_AUTO_CHUNK_UNKNOWN_ROWS = 4096


def auto_chunk_size(num_rows, num_items) -> int:
    """The default catalogue chunk of `chunked_cross_entropy`.

    `clip(2**24 // N, 128, 65536)` items (so an `[N, chunk]` float32 buffer is
    about 64 MB whatever `N`), capped by the catalogue size; 4096 when `N` is
    not known statically.

    Example:

    >>> auto_chunk_size(1024, 10**6)
    16384
    """
    if num_rows is None:
        chunk = _AUTO_CHUNK_UNKNOWN_ROWS
    else:
        chunk = min(max(_AUTO_CHUNK_ELEMENTS // max(int(num_rows), 1), _AUTO_CHUNK_MIN),
                    _AUTO_CHUNK_MAX)
    if num_items is not None:
        chunk = min(chunk, int(num_items))
    return chunk


# -- the sampled softmax ----------------------------------------------------------------
SAMPLERS = ("uniform", "unigram")


def check_sampler(sampler) -> None:
    """`sampler` is one of `SAMPLERS`."""
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}.")


def check_num_sampled(num_sampled: int, num_real: int) -> None:
    """The `num_sampled` distinct negatives fit among the `num_real` real items."""
    if num_sampled > num_real:
        raise ValueError(f"num_sampled={num_sampled} exceeds the {num_real} real items.")


def unigram_log_q(item_counts, num_items, padding_id, distortion) -> np.ndarray:
    """Normalised log sampling probabilities of the real items, `log(count ** distortion)`.

    The padding row is left out (the samplers draw compact ids, see
    `keras_sce.ops.sampling.to_real_ids`); items never seen keep a tiny mass so
    that every id has `Q > 0`.
    """
    if item_counts is None:
        raise ValueError("sampler='unigram' needs item_counts (occurrences per id).")
    counts = [float(c) for c in item_counts]
    if len(counts) != num_items:
        raise ValueError(f"item_counts has {len(counts)} entries for {num_items} items.")
    if padding_id is not None:
        del counts[padding_id]
    log_q = np.log(np.maximum(np.asarray(counts), 1e-3)) * float(distortion)
    return log_q - np.logaddexp.reduce(log_q)


@functools.lru_cache(maxsize=16)
def _log_inclusion_cached(num_real, num_sampled, log_q_bytes):
    log_q = np.frombuffer(log_q_bytes, np.float64)
    q = np.exp(log_q)
    log1m_q = np.log1p(-np.minimum(q, 1.0 - 1e-12))

    def expected(tries):  # sum_i P(i drawn in `tries` draws with replacement)
        return float(np.sum(-np.expm1(tries * log1m_q)))

    lo, hi = float(num_sampled), float(num_sampled)
    for _ in range(200):  # the sum tends to num_real as the draws grow
        if expected(hi) >= num_sampled:
            break
        hi *= 2.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if expected(mid) < num_sampled else (lo, mid)
    return np.log(-np.expm1(hi * log1m_q))


def inclusion_log_probabilities(num_real, num_sampled, log_q):
    """Log probability that each compact id is among the `num_sampled` candidates.

    Uniform: exactly `num_sampled / num_real`. Unigram: `1 - (1 - q_i)^T` with
    `T` the number of draws with replacement whose expected number of distinct
    items is `num_sampled` (TensorFlow's samplers use the same form with the
    actual number of draws); the probabilities then sum to `num_sampled`.
    """
    if log_q is None or num_sampled >= num_real:
        return np.full([num_real], math.log(min(num_sampled / num_real, 1.0)))
    return _log_inclusion_cached(num_real, num_sampled, np.asarray(log_q, np.float64).tobytes())


# -- the binary losses -------------------------------------------------------------------
def balanced_logit_offset(num_negatives: int, beta: float = 1.0) -> float:
    """`log(beta / k)`: the score at which the binary loss has no pull on a shared shift.

    With every score equal to `s`, the derivative of
    `beta * softplus(-s) + k * softplus(s)` is zero at `s = log(beta / k)`:
    the positive's pull up and the `k` negatives' pull down cancel. Adding this
    offset to the scores starts training there, so the model does not have to
    learn the offset itself. `k = 1`, `beta = 1` (SASRec's BCE) gives 0.

    Example:

    >>> round(balanced_logit_offset(4), 4)
    -1.3863
    """
    num_negatives = check_positive_int(num_negatives, "num_negatives")
    if not beta > 0.0:
        raise ValueError(f"beta must be > 0, got {beta}.")
    return math.log(beta / num_negatives)


def resolve_logit_offset(logit_offset, num_negatives, beta=1.0) -> float:
    """The float offset for `logit_offset` (`"balanced"` or a finite real); validates it."""
    if isinstance(logit_offset, str):
        if logit_offset != "balanced":
            raise ValueError(
                f"logit_offset must be a finite float or 'balanced', got {logit_offset!r}."
            )
        return balanced_logit_offset(num_negatives, beta)
    if isinstance(logit_offset, bool) or not isinstance(logit_offset, numbers.Real):
        raise TypeError(
            f"logit_offset must be a finite float or 'balanced', got {logit_offset!r}."
        )
    if not math.isfinite(logit_offset):
        raise ValueError(f"logit_offset must be finite, got {logit_offset}.")
    return float(logit_offset)


def gbce_beta(num_negatives: int, num_items: int, t: float) -> float:
    """gBCE's power `beta = alpha * (t * (1 - 1/alpha) + 1/alpha)`, `alpha = k / (C - 1)`.

    `num_items` counts real items (padding excluded). `t = 0` gives BCE
    (`beta = 1`); `t = 1` gives `beta = alpha`.
    """
    if not 0.0 <= t <= 1.0:
        raise ValueError(f"gBCE calibration t must be in [0, 1], got {t}.")
    if num_items < 2:
        raise ValueError("gBCE needs at least 2 items.")
    alpha = num_negatives / (num_items - 1)
    return alpha * (t * (1.0 - 1.0 / alpha) + 1.0 / alpha)
