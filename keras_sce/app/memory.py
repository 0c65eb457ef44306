"""Memory on this machine, in this process, and what training with a loss will need.

Measured: `available_bytes` (what the OS can still give: `MemAvailable` from
`/proc/meminfo`, the cgroup limit when one is set, `os.sysconf` elsewhere),
`rss_bytes` / `peak_rss_bytes` (this process) and `reset_peak_rss` (Linux lets a
process reset its own high-water mark, so the peak of training can be read apart from
the peak of loading the data).

Predicted: `predict_training_bytes` adds up the largest tensors that one training step
of SASRec keeps alive with a given loss, per the shapes each loss materialises:

- full CE: the `N x C` logits, their softmax and their gradient (`N` = non-padding
  rows of the fullest batch, `C` = catalogue rows);
- sampled softmax: `N x (k + 1)` logits and the `k` shared negatives;
- gBCE / BCE: per-row negatives, `N x k` embeddings of width `d` and their gradient;
- SCE: the streamed item search `n_b x (b_y + chunk)`, the bucket logits
  `n_b x b_x x b_y` and the gathered bucket items `n_b x b_y x d`;

plus what every loss shares: the item table with its gradient and Adam's two moments
(Keras Adam makes the table's gradient dense), SASRec's activations, and a runtime
constant. Evaluation (full ranking, streamed) runs between epochs, so the peak is the
larger of a training step and an evaluation. The copy factors were fitted on CPU runs
of the main job (see docs/main-job.md); the estimate is meant to tell "fits" from
"cannot fit", not to be exact to the megabyte.
"""

from __future__ import annotations

import dataclasses
import os
import resource
import sys

from keras_sce.ops.defaults import DEFAULT_CHUNK_SIZE, default_num_buckets

FLOAT_BYTES = 4
# Live copies of a loss's largest tensor during one step, fitted on CPU runs of the
# main job (docs/main-job.md): full CE keeps its logits and their gradient (the softmax
# is fused); per-row negatives keep their embeddings, scores and gradients.
CE_COPIES = 2.0
PER_ROW_NEGATIVE_COPIES = 2.5
LOGIT_COPIES = 3.0  # SCE buckets and sampled softmax: logits, softmax, gradient
# Item table: weights, dense gradient, Adam m and v, the update's temporaries, and the
# NumPy copy that evaluation ranks against.
TABLE_COPIES = 9.0
ACTIVATION_COPIES = 24.0  # per block: attention, feed-forward, norms, dropout masks, grads
EVAL_QUERY_BATCH = 1024  # keras_sce.evaluation scores this many users at once...
EVAL_CHUNK = 8192  # ...against this many items
# Traced graphs, Keras and tf.data state, allocator slack: what a run with a small loss
# and a small table still adds above its baseline (measured, CPU).
RUNTIME_BYTES = 400 * 2**20


def _read_kib(path: str, key: str) -> int | None:
    try:
        with open(path) as handle:
            for line in handle:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _cgroup_room() -> int | None:
    """Bytes left under a cgroup v2 memory limit, or None without one."""
    try:
        with open("/sys/fs/cgroup/memory.max") as handle:
            limit = handle.read().strip()
        if limit == "max":
            return None
        with open("/sys/fs/cgroup/memory.current") as handle:
            used = int(handle.read().strip())
        return max(int(limit) - used, 0)
    except (OSError, ValueError):
        return None


def available_bytes() -> int | None:
    """Memory the OS can still give to a new process, in bytes (None if unknown)."""
    room = _read_kib("/proc/meminfo", "MemAvailable")
    if room is None:
        try:
            room = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, AttributeError):
            room = None
    cgroup = _cgroup_room()
    if cgroup is not None:
        room = cgroup if room is None else min(room, cgroup)
    return room


def rss_bytes() -> int | None:
    """Resident set size of this process now, in bytes (Linux; None elsewhere)."""
    return _read_kib("/proc/self/status", "VmRSS")


def peak_rss_bytes() -> int:
    """Peak resident set size of this process (since start or `reset_peak_rss`)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) * (1 if sys.platform == "darwin" else 1024)


def reset_peak_rss() -> bool:
    """Resets this process's peak RSS to its current RSS (Linux >= 4.0); True if done."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def child_peak_rss_bytes(pid: int) -> int | None:
    """Peak RSS of another (live) process, in bytes (Linux; None if unreadable)."""
    return _read_kib(f"/proc/{pid}/status", "VmHWM")


def max_rows_per_batch(train_sequences, batch_size: int, max_length: int) -> int:
    """Non-padding training positions of the fullest possible batch.

    Each user contributes `min(len - 1, max_length)` next-item targets; a batch of
    the `batch_size` longest users holds the most (sortish batching builds exactly
    such batches).
    """
    lengths = sorted((min(max(len(s) - 1, 0), max_length) for s in train_sequences), reverse=True)
    return max(1, int(sum(lengths[:batch_size])))


@dataclasses.dataclass(frozen=True)
class MemoryEstimate:
    """Predicted training memory of one loss: the total and its parts, in bytes."""

    method: str
    parts: dict

    @property
    def total_bytes(self) -> int:
        """Table + runtime + the larger of a training step and an evaluation."""
        p = self.parts
        step = p["loss"] + p["activations"]
        return int(p["item table + Adam"] + p["runtime"] + max(step, p["evaluation"]))

    @property
    def total_mb(self) -> float:
        return self.total_bytes / 2**20

    def describe(self) -> str:
        parts = ", ".join(f"{k} {v / 2**20:,.0f} MB" for k, v in self.parts.items())
        return f"{self.method}: {self.total_mb:,.0f} MB ({parts})"


def predict_training_bytes(
    method: str,
    *,
    num_items: int,
    hidden_dim: int,
    rows: int,
    batch_size: int,
    max_length: int,
    num_blocks: int = 2,
    num_heads: int = 1,
    num_negatives: int = 256,
    num_buckets: int | None = None,
    bucket_size_x: int | None = None,
    bucket_size_y: int = 256,
    chunk_size: int | None = DEFAULT_CHUNK_SIZE,
) -> MemoryEstimate:
    """Predicts the memory one SASRec training run with `method` needs above its baseline.

    Args:
        method: `sce`, `ce`, `gbce`, `bce` or `sampled_softmax`.
        num_items: catalogue rows `C` (padding row included).
        hidden_dim: embedding width `d`.
        rows: non-padding rows `N` of the fullest batch (see `max_rows_per_batch`).
        batch_size: sequences per batch `B`.
        max_length: sequence length `L`.
        num_blocks: transformer blocks.
        num_heads: attention heads.
        num_negatives: `k` of the sampled losses.
        num_buckets: SCE `n_b` (None: `int(2 * sqrt(N))`).
        bucket_size_x: SCE `b_x` (None: as `n_b`).
        bucket_size_y: SCE `b_y`.
        chunk_size: SCE items per chunk of the streamed search (None: whole table).

    Returns:
        A `MemoryEstimate` with the parts `loss`, `item table + Adam`,
        `activations`, `evaluation` and `runtime`.

    Raises:
        ValueError: for an unknown method.

    Example:

    >>> est = predict_training_bytes("ce", num_items=10**6, hidden_dim=64, rows=6400,
    ...                              batch_size=128, max_length=50)
    >>> round(est.parts["loss"] / 1e9)  # 2 copies of 6400 x 10^6 float32
    51
    """
    c, d, n, f = int(num_items), int(hidden_dim), int(rows), FLOAT_BYTES
    if method == "ce":
        loss = CE_COPIES * n * c * f
    elif method == "sampled_softmax":
        k = int(num_negatives)
        loss = LOGIT_COPIES * (n * (k + 1) + k * d) * f
    elif method in ("gbce", "bce"):
        k = 1 if method == "bce" else int(num_negatives)
        loss = PER_ROW_NEGATIVE_COPIES * n * k * (d + 1) * f
    elif method == "sce":
        n_b = int(num_buckets or default_num_buckets(n))
        b_x = min(int(bucket_size_x or n_b), n)
        b_y = min(int(bucket_size_y), c)
        chunk = c if chunk_size is None else min(int(chunk_size), c)
        search = n_b * (b_y + chunk) + n_b * n  # item search and row search
        buckets = n_b * b_x * (b_y + 1) + n_b * (b_x + b_y) * d
        loss = LOGIT_COPIES * (search + buckets) * f
    else:
        raise ValueError(f"Unknown method {method!r}.")
    b, length = int(batch_size), int(max_length)
    activations = num_blocks * ACTIVATION_COPIES * (b * length * d + num_heads * b * length**2)
    evaluation = EVAL_QUERY_BATCH * (EVAL_CHUNK + length * d) * 3 + c * d
    return MemoryEstimate(
        method,
        {
            "loss": int(loss),
            "item table + Adam": int(TABLE_COPIES * c * d * f),
            "activations": int(activations * f),
            "evaluation": int(evaluation * f),
            "runtime": RUNTIME_BYTES,
        },
    )
