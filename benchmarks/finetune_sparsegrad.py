"""SparseGrad against full fine-tuning, LoRA and MeProp on real tasks: accuracy, memory, time.

Runs ``examples/finetune_sparsegrad.py``'s fine-tuning (``run_one``: early stopping on
validation accuracy, best weights restored) for every (method, learning rate, seed)
of the protocol, each in a fresh process (`keras_sce.app.harness`), so that its peak
memory is its own:

1. the learning-rate grid: seed 0 at every learning rate of the method's grid
   (``--grid``); where the best seed-0 validation accuracy is at an edge of the grid,
   one more rate past that edge (the grid's own step), up to ``--max-extensions``
   times; the learning rate with the best seed-0 validation accuracy is the method's
   (`finetune_sparsegrad_report.chosen_learning_rate`);
2. the other seeds (``--seeds``) at the chosen learning rate only; a method's seeds
   start as soon as its grid is done.

Per run: ``peak_mem_mb`` is the peak resident size during ``fit`` (XLA compilation and
the validations included; the kernel's counter is reset when training begins, after the
data and the model are loaded and prepared), ``fit_attributable_mb`` that peak above the
resident size when ``fit`` starts (``fit_rss_start_mb``), ``loaded_rss_mb`` the resident
size once the data and the model are loaded (before the preparation),
``prep_peak_mem_mb`` the peak of the preparation alone (basis and support estimation for
SparseGrad) above the resident size at its start, ``step_ms`` the median CPU time of a
training step, and, on SparseGrad rows, ``floor_step_ms``: the step of `full` (same task
and seed) times the matrix-product floor (`benchmarks/sparsegrad_step.matmul_floor`,
formulation `auto`).
Rows are appended to ``<output>.csv`` as they land and the protocol resumes
where it stopped; the script then writes a Markdown summary (mean ± std over seeds,
the grid, the targets) and a PNG (``benchmarks/finetune_sparsegrad_report.py``).

Usage (the protocol of the committed results)::

    PYTHONPATH=. python benchmarks/finetune_sparsegrad.py --task rotten_tomatoes --jobs 2
    PYTHONPATH=. python benchmarks/finetune_sparsegrad.py --task gcide_pos --jobs 2
    PYTHONPATH=. python benchmarks/finetune_sparsegrad.py --report-only
"""

from __future__ import annotations

import concurrent.futures
import shlex
import sys
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks import finetune_sparsegrad_report as report  # noqa: E402
from benchmarks.sparsegrad_step import matmul_floor  # noqa: E402
from examples import finetune_sparsegrad as example  # noqa: E402
from keras_sce.app import harness, memory, runner  # noqa: E402

MIB = 2**20
#: Learning rates of the MLP (or whole-model, LoRA) parameters tried with seed 0.
DEFAULT_GRID = {
    "full": (2e-5, 5e-5, 1e-4), "full_mlp": (3e-5, 1e-4, 3e-4), "lora": (3e-4, 1e-3, 3e-3),
    "meprop": (3e-4, 1e-3, 3e-3), "sparsegrad": (3e-4, 1e-3, 3e-3),
    "sparsegrad_ok": (3e-4, 1e-3, 3e-3), "sparsegrad_pool": (3e-4, 1e-3, 3e-3),
}


class _PrepMemory:
    """Context manager: the attributable peak RSS of the preparation."""

    def __enter__(self):
        self.window = harness.MemoryWindow.open(gpu=False, trim=True)
        return self

    def __exit__(self, *exc):
        self.window.close()
        return False

    @property
    def attributable_mb(self) -> float:
        if not self.window.reset:
            return float("nan")
        return round((self.window.peak_bytes - self.window.baseline_bytes) / MIB, 1)


def _memory_callback(label: str):
    """A Keras callback holding a `MemoryWindow` over ``fit``."""
    import keras

    class TrainingMemory(keras.callbacks.Callback):
        window = None

        def on_train_begin(self, logs=None):
            self.window = harness.MemoryWindow.open(gpu=False, trim=True)
            print(f"[{label}] RSS when the peak counter is reset: "
                  f"{self.window.baseline_bytes / MIB:.0f} MiB", flush=True)

        def on_train_end(self, logs=None):
            self.window.close()

    return TrainingMemory()


def command_of(args, method: str, seed: int, lr: float) -> str:
    """The example's command line that reproduces one run (options off their default)."""
    defaults = example.build_parser().parse_args([])
    parts = ["PYTHONPATH=.", "python", "examples/finetune_sparsegrad.py", "--task", args.task,
             "--methods", method, "--seed", str(seed), "--mlp-lr", f"{method}={lr!r}"]
    for name in ("data", "checkpoint", "sequence_length", "num_train", "num_val", "num_test",
                 "max_steps", "eval_every", "patience", "batch_size", "eval_batch_size",
                 "rank", "support_factor", "pool_factor", "basis_steps", "selection",
                 "head_lr", "weight_decay", "threads"):
        value = getattr(args, name)
        if value != getattr(defaults, name):
            parts += ["--" + name.replace("_", "-"), str(value)]
    if args.no_jit:
        parts.append("--no-jit")
    return " ".join(shlex.quote(p) if p != "PYTHONPATH=." else p for p in parts)


def protocol_of(command: str) -> str:
    """A row's command without its method, seed and learning rate: the shared options."""
    words = shlex.split(command)
    kept, skip = [], 0
    for i, word in enumerate(words):
        if skip:
            skip -= 1
        elif word in ("--methods", "--seed", "--mlp-lr"):
            skip = 1
        elif i >= 3:  # after PYTHONPATH=. python examples/finetune_sparsegrad.py
            kept.append(word)
    return " ".join(kept)


def floor_ratio(args) -> float:
    """SparseGrad's matrix products over full fine-tuning's at this run's shapes."""
    import keras_hub

    from examples.rotten_tomatoes import resolve_checkpoint

    config = keras_hub.models.BertBackbone.from_preset(
        resolve_checkpoint(args.checkpoint), load_weights=False).get_config()
    full, sparse = matmul_floor(config["num_layers"], config["hidden_dim"],
                                config["intermediate_dim"], args.batch_size,
                                args.sequence_length, "auto")
    return sparse / full


def run_job(job) -> dict:
    """One (args, method, seed, lr) in this (fresh) process: the example's row + memory."""
    import copy

    args, method, seed, lr = job
    args = copy.copy(args)
    args.mlp_lr = {**args.mlp_lr, method: lr}
    probe, prep = _memory_callback(f"{method} lr {lr:g} seed {seed}"), _PrepMemory()
    row = example.run_one(args, method, seed, callbacks=[probe], prep_context=prep)
    window = probe.window
    row["peak_mem_mb"] = round(window.peak_bytes / MIB, 1) if window.reset else float("nan")
    row["prep_peak_mem_mb"] = prep.attributable_mb
    # Above the resident size when fit starts (the preparation's leftovers excluded:
    # they are the preparation's, reported by prep_peak_mem_mb), and above the
    # loaded model (before the preparation).
    row["fit_attributable_mb"] = round((window.peak_bytes - window.baseline_bytes) / MIB, 1)
    row["loaded_rss_mb"] = round(prep.window.baseline_bytes / MIB, 1)
    row["fit_rss_start_mb"] = round(window.baseline_bytes / MIB, 1)
    row["process_peak_mem_mb"] = round(memory.peak_rss_bytes() / MIB, 1)
    row["command"] = command_of(args, method, seed, lr)
    if method in report.SPARSE_METHODS:
        row["floor_ratio"] = round(floor_ratio(args), 4)
    return row


def _parse_grid(text: str) -> dict:
    grid = dict(DEFAULT_GRID)
    for item in filter(None, (t.strip() for t in (text or "").split(";"))):
        name, _, values = item.partition("=")
        if name not in example.METHODS or not values:
            raise ValueError(f"--grid: expected method=lr,lr,... got {item!r}")
        grid[name] = tuple(float(v) for v in values.split(","))
    return grid


def build_parser():
    p = example.build_parser(__doc__.split("\n\n")[0])
    p.set_defaults(methods=",".join(example.DEFAULT_METHODS))
    p.add_argument("--seeds", default="1,2", help="seeds run at the chosen learning rate")
    p.add_argument("--grid", default="",
                   help="learning-rate grids replacing the defaults: 'method=lr,lr;...'")
    p.add_argument("--max-extensions", type=int, default=2,
                   help="rates added past an edge of a method's grid when the best seed-0 "
                   "validation accuracy is there (each one step of the grid's own ratio)")
    p.add_argument("--output", default="benchmarks/results/finetune",
                   help="prefix of the .csv/.md/.png outputs")
    p.add_argument("--jobs", type=int, default=1, help="runs in parallel (one process each)")
    p.add_argument("--report-only", action="store_true")
    return p


def _fill_floor(row, rows):
    """``floor_step_ms`` of a SparseGrad row: `full`'s step (same task, seed) x the floor.

    The median over `full`'s rows of that seed (the grid seed has one per learning
    rate; the step does not depend on it). The report recomputes the floor of a
    summary from `full`'s chosen-rate rows, so a row left without one is no loss.
    """
    import statistics

    if row.get("floor_ratio") in (None, ""):
        return
    steps = [float(r["step_ms"]) for r in rows if r["task"] == row["task"]
             and r["method"] == "full" and int(r["seed"]) == int(row["seed"])]
    if steps:
        row["floor_step_ms"] = round(statistics.median(steps) * float(row["floor_ratio"]), 1)


def run_protocol(args, methods, seeds, grid, csv_path) -> None:
    """Runs the protocol's runs the CSV lacks; appends each row as it lands."""
    runner.import_tensorflow_quietly()

    rows = report.read_rows(csv_path)
    mine = protocol_of(command_of(args, "full", 1, 1.0))
    other = sorted({protocol_of(r["command"]) for r in rows if r["task"] == args.task} - {mine})
    if other:
        raise SystemExit(f"{csv_path} holds {args.task} runs of other options ({other[0]!r}); "
                         f"these are {mine!r}. Write to another --output.")
    done = {(r["task"], r["method"], int(r["seed"]), float(r["learning_rate"])) for r in rows}
    threads = str(args.threads)
    env = dict(TF_NUM_INTRAOP_THREADS=threads, TF_NUM_INTEROP_THREADS=threads,
               OMP_NUM_THREADS=threads)
    lock = threading.Lock()
    failed = []  # (method, seed, lr) of the failed runs; a failed grid run holds its seeds

    def launch(method, seed, lr):
        start = time.time()
        row = harness.run_config(run_job, (args, method, seed, lr),
                                 name=f"{args.task} {method} lr {lr:g} seed {seed}", env=env)
        with lock:
            if row["status"] != "ok":
                print(f"run {method} lr {lr:g} seed {seed} failed: {row['cause']}", flush=True)
                failed.append((method, seed, lr))
                return
            _fill_floor(row, rows)
            report.append_row(csv_path, row)
            rows.append({k: str(v) for k, v in row.items()})
            print(f"{args.task} {method} lr {lr:g} seed {seed}: val {row['val_accuracy']:.4f} "
                  f"test {row['test_accuracy']:.4f} after {row['steps']} steps "
                  f"({time.time() - start:.0f}s)", flush=True)

    def grid_runs(method):
        return [(method, report.GRID_SEED, lr) for lr in grid[method]
                if (args.task, method, report.GRID_SEED, lr) not in done]

    def extension(method):
        """One more grid run past an edge of the grid that holds the best rate, or None."""
        with lock:
            tried = sorted({float(r["learning_rate"]) for r in rows if r["task"] == args.task
                            and r["method"] == method and int(r["seed"]) == report.GRID_SEED})
            lr = report.chosen_learning_rate(rows, args.task, method)
        if lr is None or len(tried) < 2 or len(tried) - len(grid[method]) >= args.max_extensions:
            return None
        if lr == tried[0]:
            new = tried[0] * tried[0] / tried[1]
        elif lr == tried[-1]:
            new = tried[-1] * tried[-1] / tried[-2]
        else:
            return None
        return (method, report.GRID_SEED, float(f"{new:.2g}"))

    def after_grid(method):
        """The grid of `method` is done: extend it past an edge, or start its seeds."""
        more = extension(method)
        if more is None:
            return seed_runs(method)
        pending[method].append(more)
        return [more]

    def seed_runs(method):
        with lock:
            lr = report.chosen_learning_rate(rows, args.task, method)
        if lr is None:
            return []
        return [(method, s, lr) for s in seeds if (args.task, method, s, lr) not in done]

    # `full` first: the SparseGrad rows' floor reads its step.
    order = sorted(methods, key=lambda m: m != "full")
    pending = {m: grid_runs(m) for m in order}
    with concurrent.futures.ThreadPoolExecutor(max(1, args.jobs)) as pool:
        running = {}
        queue = [job for m in order for job in pending[m]]
        queue += [job for m in order if not pending[m] for job in after_grid(m)]
        while queue or running:
            while queue and len(running) < max(1, args.jobs):
                job = queue.pop(0)
                running[pool.submit(launch, *job)] = job
            finished, _ = concurrent.futures.wait(
                running, return_when=concurrent.futures.FIRST_COMPLETED)
            for future in finished:
                method, seed, lr = running.pop(future)
                future.result()
                if (method, seed, lr) in pending[method]:
                    pending[method].remove((method, seed, lr))
                    grid_failed = any(m == method and s == report.GRID_SEED
                                      for m, s, _ in failed)
                    if not pending[method] and not grid_failed:  # the grid is done
                        queue[:0] = after_grid(method)  # first: seeds may wait on it
    if failed:
        raise SystemExit(f"{len(failed)} runs failed (above): {failed}; run again to retry "
                         "them (the seeds of a method follow its whole grid).")


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    csv_path = f"{args.output}.csv"
    if not args.report_only:
        methods = example.parse_methods(parser, args.methods)
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
        try:
            grid = _parse_grid(args.grid)
        except ValueError as error:
            parser.error(str(error))
        if report.GRID_SEED in seeds:
            parser.error(f"--seeds: seed {report.GRID_SEED} is the grid's seed")
        if args.max_steps < args.eval_every:
            parser.error("--max-steps is below --eval-every: no validation would run")
        run_protocol(args, methods, seeds, grid, csv_path)
    print(report.write_report(csv_path, args.output))
    return 0


if __name__ == "__main__":
    sys.exit(main())
