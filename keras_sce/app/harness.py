"""One way to run and record an experiment, shared by the main job and every benchmark.

- `run_config`: one configuration in a fresh child process (`keras_sce.app.runner`);
  a crash, an out-of-memory kill or a timeout becomes a failure row with its cause.
- `MemoryWindow`: attributable peak memory. On the CPU it is the process's peak
  resident size (Linux `VmHWM`, reset through `/proc/self/clear_refs`) above its
  resident size when the window opens; open it once what the measurement should
  not count (the model, the data) exists. On a GPU it is the allocator's peak above
  its bytes in use at the same point: TensorFlow's `get_memory_info` (the peak is
  reset when the window opens), or JAX's `memory_stats` when the Keras backend is
  JAX (JAX cannot reset its peak: the reading is exact only when the window's peak is
  the process's highest so far).
- `compiled_memory_bytes`: the memory XLA assigns to a compiled function (its buffer
  assignment minus its inputs), compiled in a child process and never executed, so a
  program too large to run can still be measured (`keras_sce.app.xla_memory`).
- `CsvSchema`: append rows under a stable header; columns are only ever added.
- `markdown_table` and `plot_panels`: the Markdown and PNG writers.

Example:

>>> schema = CsvSchema("demo", ("method", "peak_mem_mb"))
>>> print(markdown_table([{"method": "sce", "peak_mem_mb": 12.5}],
...                      [("method", "method", "s"), ("peak_mem_mb", "MB", ".1f")]))
| method | MB |
|---|---:|
| sce | 12.5 |
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
from collections.abc import Callable

from keras_sce.app import memory, runner
from keras_sce.app.records import CsvSchema, markdown_table, plot_panels
from keras_sce.app.xla_memory import buffer_assignment_bytes, compiled_memory_bytes

__all__ = ["CsvSchema", "MemoryWindow", "buffer_assignment_bytes", "compiled_memory_bytes",
           "cpu_name", "gpu_card", "gpu_memory_bytes", "markdown_table", "plot_panels",
           "require_ok", "run_config"]

MIB = 2**20


# ------------------------------------------------------------------ running a configuration


def run_config(fn: Callable, config, *, name: str, timeout: float | None = None,
               env: dict | None = None) -> dict:
    """Runs `fn(config)` in a fresh process; its dict result, or a failure row.

    Args:
        fn: a module-level function returning a dict (the row's measured columns).
        config: its argument (picklable).
        name: the configuration's name in messages.
        timeout: seconds before the child is killed (None: no limit).
        env: environment variables set for the child only.

    Returns:
        `fn`'s dict plus `status="ok"` and `cause=""`; or, when the child raised,
        was killed or timed out, `status="failed"`, the `cause` in one line,
        `traceback` and `peak_mem_mb` (the child's peak as last seen, or None).
    """
    result = runner.run_in_child(fn, config, name=name, timeout=timeout, env=env)
    if result.ok:
        return {**result.value, "status": "ok", "cause": ""}
    peak = None if result.peak_rss_bytes is None else round(result.peak_rss_bytes / MIB, 1)
    return {"status": "failed", "cause": result.cause, "traceback": result.traceback or "",
            "peak_mem_mb": peak}


def require_ok(row: dict, what: str) -> dict:
    """`row` when it succeeded; raises `RuntimeError` naming `what` and the cause."""
    if row.get("status") != "ok":
        raise RuntimeError(f"{what} failed: {row.get('cause')}\n{row.get('traceback', '')}")
    return row


# ------------------------------------------------------------------ memory


def gpu_memory_bytes(reset: bool = False) -> tuple[float, float]:
    """(bytes in use, peak bytes) of the first GPU's allocator; NaNs without a GPU.

    Args:
        reset: reset the peak first (TensorFlow; JAX has no reset).
    """
    nan = (math.nan, math.nan)
    if os.environ.get("KERAS_BACKEND") == "jax" or "jax" in sys.modules and (
            "tensorflow" not in sys.modules):
        import jax

        gpus = [d for d in jax.devices() if d.platform == "gpu"]
        stats = gpus[0].memory_stats() if gpus else None
        if not stats:
            return nan
        return float(stats["bytes_in_use"]), float(stats.get("peak_bytes_in_use", math.nan))
    import tensorflow as tf

    if not tf.config.list_physical_devices("GPU"):
        return nan
    if reset:
        tf.config.experimental.reset_memory_stats("GPU:0")
    info = tf.config.experimental.get_memory_info("GPU:0")
    return float(info["current"]), float(info["peak"])


def _malloc_trim() -> None:
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc: nothing to hand back


@dataclasses.dataclass
class MemoryWindow:
    """Attributable peak memory between `open` and `close` (see the module docstring).

    Attributes:
        baseline_bytes: resident size when the window opened.
        peak_before_bytes: the process's peak resident size before the window.
        peak_bytes: peak resident size inside the window (set by `close`).
        reset: whether the kernel reset its peak counter (False: `peak_bytes` also
            covers the time before the window).
        gpu_baseline_bytes / gpu_peak_bytes: the same for the GPU allocator (NaN
            without a GPU, or when `gpu=False`).
    """

    baseline_bytes: int
    peak_before_bytes: int
    reset: bool
    gpu_baseline_bytes: float = math.nan
    gpu_peak_bytes: float = math.nan
    peak_bytes: int | None = None
    gpu: bool = True

    @classmethod
    def open(cls, gpu: bool = True, trim: bool = False) -> MemoryWindow:
        """Starts a window now: baseline read, peak counters reset.

        Args:
            gpu: also read the GPU allocator (NaN without a GPU).
            trim: first hand the C heap's free pages back to the OS (glibc
                `malloc_trim`), so that the baseline holds no freed memory.
        """
        if trim:
            _malloc_trim()
        peak_before = memory.peak_rss_bytes()
        baseline = memory.rss_bytes() or peak_before  # no VmRSS: growth above the peak
        window = cls(baseline, peak_before, memory.reset_peak_rss(), gpu=gpu)
        if gpu:
            window.gpu_baseline_bytes = gpu_memory_bytes(reset=True)[0]
        return window

    def close(self) -> MemoryWindow:
        """Reads the peaks reached since `open`; returns `self`."""
        self.peak_bytes = memory.peak_rss_bytes()
        if self.gpu:
            self.gpu_peak_bytes = gpu_memory_bytes()[1]
        return self

    def _peak(self) -> int:
        if self.peak_bytes is None:
            raise RuntimeError("MemoryWindow: call close() before reading the peak.")
        return self.peak_bytes

    @property
    def attributable_mb(self) -> float:
        """Peak resident size in the window above its baseline, in MiB."""
        return max(self._peak() - self.baseline_bytes, 0) / MIB

    @property
    def process_peak_mb(self) -> float:
        """The process's peak resident size over its whole life so far, in MiB."""
        return max(self._peak(), self.peak_before_bytes) / MIB

    @property
    def gpu_attributable_mb(self) -> float:
        """The GPU allocator's peak in the window above its baseline, in MiB (NaN: none)."""
        self._peak()
        return (self.gpu_peak_bytes - self.gpu_baseline_bytes) / MIB


# ------------------------------------------------------------------ the machine


def cpu_name() -> str:
    """The CPU's model name (Linux `/proc/cpuinfo`; the platform's answer elsewhere)."""
    import platform

    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_card() -> tuple[str, int]:
    """(name, total memory in bytes) of GPU 0, from `nvidia-smi`.

    Raises:
        RuntimeError: when `nvidia-smi` is missing or fails.
    """
    import subprocess

    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total",
                               "--format=csv,noheader,nounits"],
                              capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError) as error:
        raise RuntimeError(f"no GPU found (nvidia-smi: {error})") from None
    name, total = done.stdout.strip().splitlines()[0].rsplit(",", 1)
    return name.strip(), int(float(total)) * MIB
