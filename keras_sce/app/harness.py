"""One way to run and record an experiment, shared by the main job and every benchmark.

- `run_config`: one configuration in a fresh child process (`keras_sce.app.runner`);
  a crash, an out-of-memory kill or a timeout becomes a failure row with its cause.
- `MemoryWindow`: attributable peak memory. On the CPU it is the process's peak
  resident size (Linux ``VmHWM``, reset through ``/proc/self/clear_refs``) above its
  resident size when the window opens; open it once what the measurement should
  not count (the model, the data) exists. On a GPU it is the allocator's peak above
  its bytes in use at the same point: TensorFlow's ``get_memory_info`` (the peak is
  reset when the window opens), or JAX's ``memory_stats`` when the Keras backend is
  JAX (JAX cannot reset its peak: the reading is exact only when the window's peak is
  the process's highest so far).
- `compiled_memory_bytes`: the memory XLA assigns to a compiled function (its buffer
  assignment minus its inputs), compiled in a child process and never executed, so a
  program too large to run can still be measured.
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

import csv
import dataclasses
import functools
import math
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from keras_sce.app import memory, runner

MIB = 2**20


# ------------------------------------------------------------------ running a configuration


def run_config(fn: Callable, config, *, name: str, timeout: float | None = None,
               env: dict | None = None) -> dict:
    """Runs ``fn(config)`` in a fresh process; its dict result, or a failure row.

    Args:
        fn: a module-level function returning a dict (the row's measured columns).
        config: its argument (picklable).
        name: the configuration's name in messages.
        timeout: seconds before the child is killed (None: no limit).
        env: environment variables set for the child only.

    Returns:
        ``fn``'s dict plus ``status="ok"`` and ``cause=""``; or, when the child raised,
        was killed or timed out, ``status="failed"``, the ``cause`` in one line,
        ``traceback`` and ``peak_mem_mb`` (the child's peak as last seen, or None).
    """
    result = runner.run_in_child(fn, config, name=name, timeout=timeout, env=env)
    if result.ok:
        return {**result.value, "status": "ok", "cause": ""}
    peak = None if result.peak_rss_bytes is None else round(result.peak_rss_bytes / MIB, 1)
    return {"status": "failed", "cause": result.cause, "traceback": result.traceback or "",
            "peak_mem_mb": peak}


def require_ok(row: dict, what: str) -> dict:
    """``row`` when it succeeded; raises ``RuntimeError`` naming ``what`` and the cause."""
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


@dataclasses.dataclass
class MemoryWindow:
    """Attributable peak memory between `open` and `close` (see the module docstring).

    Attributes:
        baseline_bytes: resident size when the window opened.
        peak_before_bytes: the process's peak resident size before the window.
        peak_bytes: peak resident size inside the window (set by `close`).
        reset: whether the kernel reset its peak counter (False: ``peak_bytes`` also
            covers the time before the window).
        gpu_baseline_bytes / gpu_peak_bytes: the same for the GPU allocator (NaN
            without a GPU, or when ``gpu=False``).
    """

    baseline_bytes: int
    peak_before_bytes: int
    reset: bool
    gpu_baseline_bytes: float = math.nan
    gpu_peak_bytes: float = math.nan
    peak_bytes: int | None = None
    gpu: bool = True

    @classmethod
    def open(cls, gpu: bool = True) -> MemoryWindow:
        """Starts a window now: baseline read, peak counters reset."""
        peak_before = memory.peak_rss_bytes()
        baseline = memory.rss_bytes() or 0
        window = cls(baseline, peak_before, memory.reset_peak_rss(), gpu=gpu)
        if gpu:
            window.gpu_baseline_bytes = gpu_memory_bytes(reset=True)[0]
        return window

    def close(self) -> MemoryWindow:
        """Reads the peaks reached since `open`; returns ``self``."""
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


# ------------------------------------------------------------------ compiled program memory

XLA_PROBE = "xla_memory_probe"


def buffer_assignment_bytes(text: str) -> int:
    """XLA's "Total bytes used" of a buffer-assignment dump minus its parameters (inputs).

    Raises:
        ValueError: when ``text`` has no "Total bytes used" line.
    """
    import re

    total = re.search(r"^Total bytes used: (\d+)", text, re.M)
    if total is None:
        raise ValueError("no 'Total bytes used' line in the XLA buffer assignment dump")
    params = re.findall(r"^allocation \d+: size (\d+), parameter \d+", text, re.M)
    return int(total.group(1)) - sum(int(size) for size in params)


def _compile_each(build: Callable, configs: list, dump_dir: str, execute: bool) -> list:
    import tensorflow as tf

    out = []
    for config in configs:
        fn, specs, *make_inputs = build(config)

        @functools.wraps(fn)  # fn's signature (tf.function needs one without *args)...
        def xla_memory_probe(*args, fn=fn):
            return fn(*args)

        xla_memory_probe.__name__ = XLA_PROBE  # ...under a name the dump filter knows
        before = set(os.listdir(dump_dir))
        probe = tf.function(xla_memory_probe, jit_compile=True, autograph=False)
        if execute:  # compiles, then runs on build's inputs; the first output is kept
            value = float(tf.nest.flatten(probe(*make_inputs[0]()))[0])
        else:
            probe.experimental_get_compiler_ir(*specs)(stage="optimized_hlo")  # compile only
        new = [f for f in set(os.listdir(dump_dir)) - before
               if XLA_PROBE in f and f.endswith("buffer-assignment.txt")]
        if len(new) != 1:
            raise RuntimeError(f"expected one XLA buffer assignment for {config}, found {new}")
        num_bytes = buffer_assignment_bytes((Path(dump_dir) / new[0]).read_text())
        out.append((num_bytes, value) if execute else num_bytes)
    return out


def compiled_memory_bytes(build: Callable, configs: Sequence, *, execute: bool = False,
                          timeout: float | None = 1800) -> list:
    """Bytes XLA assigns to each configuration's compiled program (inputs excluded).

    One fresh CPU-only process compiles ``fn`` for each configuration, with
    ``(fn, specs[, make_inputs]) = build(config)``: ``specs`` are the
    ``tf.TensorSpec`` of ``fn``'s arguments (variables it reads are inputs too).

    Args:
        build: a module-level function (pickled by name).
        configs: its arguments (picklable).
        execute: also run each program once on ``make_inputs()`` (else it is only
            compiled, so a program too large to run can be measured).
        timeout: seconds for the whole child.

    Returns:
        One byte count per configuration; with ``execute``, ``(bytes, first output)``.

    Raises:
        RuntimeError: when the child fails (its cause and traceback in the message).
    """
    with tempfile.TemporaryDirectory() as dump_dir:
        env = {"CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "3",
               "XLA_FLAGS": f"--xla_dump_to={dump_dir} --xla_dump_hlo_module_re=.*{XLA_PROBE}.*"}
        result = runner.run_in_child(_compile_each, build, list(configs), dump_dir, execute,
                                     name="xla memory", timeout=timeout, env=env)
    if not result.ok:
        raise RuntimeError(f"compiling for memory failed: {result.cause}\n{result.traceback}")
    return result.value


# ------------------------------------------------------------------ CSV


@dataclasses.dataclass(frozen=True)
class CsvSchema:
    """The columns of one results CSV: a stable core and columns added later.

    A file whose header lacks a core column is another file and is refused; one that
    lacks an added column is rewritten once with that column (empty in old rows)
    appended to its header; columns a file has beyond the schema are kept (empty in
    new rows). Column names are never changed.

    Attributes:
        name: the schema's name in messages.
        fields: the core columns, in order.
        added: columns added since (after the core in a new file).
    """

    name: str
    fields: tuple
    added: tuple = ()

    @property
    def columns(self) -> tuple:
        return tuple(self.fields) + tuple(self.added)

    def check_row(self, row: dict) -> None:
        """Raises ``ValueError`` naming missing and unknown columns of ``row``."""
        missing = [c for c in self.columns if c not in row]
        unknown = [k for k in row if k not in self.columns]
        if missing or unknown:
            raise ValueError(f"{self.name} row: missing columns {missing}, unknown {unknown}")

    def header_of(self, path) -> list[str] | None:
        """The header of an existing file in this schema (None: no file); refuses others."""
        path = Path(path)
        if not path.exists() or not path.stat().st_size:
            return None
        with open(path, newline="") as handle:
            header = next(csv.reader(handle), [])
        lacking = [c for c in self.fields if c not in header]
        if lacking:
            raise ValueError(f"{path} has another header ({header[:4]}...; lacks {lacking[:3]}); "
                             "write to a new file")
        return header

    def append(self, path, row: dict) -> None:
        """Appends one row (header written for a new file, widened for an old one)."""
        self.check_row(row)
        header = self.header_of(path)
        if header is None or any(c not in header for c in self.columns):
            rows = self.read(path) if header is not None else []
            self.write(path, [*rows, row], header=header)
            return
        with open(path, "a", newline="") as handle:
            csv.DictWriter(handle, fieldnames=header, restval="").writerow(row)

    def read(self, path) -> list[dict]:
        """All rows of ``path`` as dicts of strings (columns it lacks are empty)."""
        with open(path, newline="") as handle:
            return [{**dict.fromkeys(self.columns, ""), **r} for r in csv.DictReader(handle)]

    def write(self, path, rows, header=None) -> None:
        """Writes ``rows`` as the whole file, atomically (a reader never sees half a file).

        The header is ``header`` (an existing file's) widened by the schema's columns it
        lacks, or the schema's columns.
        """
        columns = list(header or ())
        columns += [c for c in self.columns if c not in columns]
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns, restval="",
                                    extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, path)


# ------------------------------------------------------------------ Markdown and PNG


def _format(value, fmt: str) -> str:
    if value is None or value == "":
        return "-"
    try:
        if fmt != "s" and isinstance(value, str):
            value = float(value)
        if isinstance(value, float) and not math.isfinite(value):
            return "-"
        return format(value, fmt)
    except (TypeError, ValueError):
        return str(value)


def markdown_table(rows, columns) -> str:
    """A Markdown table; ``columns`` are ``(key, title, format)`` (``"s"``: as text).

    Numeric columns are right-aligned; empty, None and non-finite cells show ``-``.
    """
    lines = ["| " + " | ".join(title for _, title, _ in columns) + " |",
             "|" + "|".join("---" if fmt == "s" else "---:" for _, _, fmt in columns) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(_format(row.get(k), f) for k, _, f in columns) + " |")
    return "\n".join(lines)


def plot_panels(panels, path, title: str = "", ncols: int | None = None) -> bool:
    """Writes a PNG of one or more panels; False (and no file) without matplotlib.

    Args:
        panels: dicts with ``series`` (``{label: (xs, ys)}`` or ``(xs, ys, style)``),
            and optional ``xlabel``, ``ylabel``, ``title``, ``xlog``, ``ylog``.
        path: the PNG file.
        title: the figure's title.
        ncols: panels per row (default: all in one row).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    ncols = ncols or len(panels)
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.8 * ncols, 3.8 * nrows), squeeze=False)
    for ax, panel in zip(axes.flat, panels, strict=False):
        for label, series in panel["series"].items():
            xs, ys, style = (*series, "o-")[:3]
            ax.plot(xs, ys, style, label=label)
        ax.set(xlabel=panel.get("xlabel", ""), ylabel=panel.get("ylabel", ""),
               title=panel.get("title", ""))
        if panel.get("xlog"):
            ax.set_xscale("log")
        if panel.get("ylog"):
            ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
        if panel["series"]:
            ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
