"""SparseGrad against full fine-tuning and LoRA on Rotten Tomatoes: accuracy, memory, time.

Runs ``examples/finetune_sparsegrad.py``'s fine-tuning (``run_one``) for every
(method, seed) of the grid, each in a fresh process (`keras_sce.app.harness`), so
that its peak memory is its own: ``peak_mem_mb`` is the peak resident size during
``fit`` (XLA compilation included; the kernel's counter is reset when training
begins, after the data and the model are loaded), ``process_peak_mem_mb`` the peak
from then to the end of the run (evaluation and folding included). Rows are appended
to ``<output>.csv`` as they land, and the grid resumes where it stopped; at the end
the script writes a Markdown table (mean ± std over seeds) with the targets checked,
and a PNG (``benchmarks/finetune_sparsegrad_report.py``).

Usage (the protocol of the committed results)::

    PYTHONPATH=. python benchmarks/finetune_sparsegrad.py --jobs 2 \\
        --output benchmarks/results/finetune_rotten_tomatoes
    PYTHONPATH=. python benchmarks/finetune_sparsegrad.py --report-only
"""

from __future__ import annotations

import concurrent.futures
import sys
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks import finetune_sparsegrad_report as report  # noqa: E402
from examples import finetune_sparsegrad as example  # noqa: E402
from keras_sce.app import harness, memory, runner  # noqa: E402

MIB = 2**20


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


def run_job(job) -> dict:
    """One (args, method, seed) in this (fresh) process: the example's row + memory."""
    args, method, seed = job
    probe = _memory_callback(f"{method} seed {seed}")
    row = example.run_one(args, method, seed, callbacks=[probe])
    window = probe.window
    row["peak_mem_mb"] = round(window.peak_bytes / MIB, 1) if window.reset else float("nan")
    row["process_peak_mem_mb"] = round(memory.peak_rss_bytes() / MIB, 1)
    return row


def build_parser():
    p = example.build_parser(__doc__.split("\n\n")[0])
    p.set_defaults(methods=",".join(example.DEFAULT_METHODS))
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--output", default="benchmarks/results/finetune_rotten_tomatoes",
                   help="prefix of the .csv/.md/.png outputs")
    p.add_argument("--jobs", type=int, default=1, help="runs in parallel (one process each)")
    p.add_argument("--report-only", action="store_true")
    return p


def run_grid(args, methods, seeds, csv_path) -> None:
    """Runs the (method, seed) pairs the CSV lacks; appends each row as it lands."""
    runner.import_tensorflow_quietly()  # for Keras's progress bar, without the start-up lines
    import keras

    done = {(r["method"], int(r["seed"])) for r in report.read_rows(csv_path)}
    # Seed-major order: every method gets its first seed before any gets a second.
    grid = [(m, s) for s in seeds for m in methods if (m, s) not in done]
    print(f"{len(done)} runs already in {csv_path}; {len(grid)} to go")
    threads = str(args.threads)
    env = dict(TF_NUM_INTRAOP_THREADS=threads, TF_NUM_INTEROP_THREADS=threads,
               OMP_NUM_THREADS=threads)
    progress = keras.utils.Progbar(len(grid), unit_name="run")
    lock = threading.Lock()
    finished = [0]

    def launch(pair):
        method, seed = pair
        start = time.time()
        row = harness.run_config(run_job, (args, method, seed), name=f"{method} seed {seed}",
                                 env=env)
        with lock:
            finished[0] += 1
            if row["status"] != "ok":
                print(f"run {method} seed {seed} failed: {row['cause']}")
            else:
                report.append_row(csv_path, row)
                print(f"{method} seed {seed}: test accuracy {row['test_accuracy']:.4f} "
                      f"({time.time() - start:.0f}s)")
            progress.update(finished[0])

    with concurrent.futures.ThreadPoolExecutor(max(1, args.jobs)) as pool:
        list(pool.map(launch, grid))


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    csv_path = f"{args.output}.csv"
    if not args.report_only:
        methods = example.parse_methods(parser, args.methods)
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
        run_grid(args, methods, seeds, csv_path)
    print(report.write_report(csv_path, args.output))
    return 0


if __name__ == "__main__":
    sys.exit(main())
