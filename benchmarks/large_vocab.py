"""SCE against exact and sampled losses on real large vocabularies (10^5-10^6 tokens).

Each run trains the GPT-2 backbone of ``examples/keras_hub_causal_lm.py`` (d=64, 2
blocks, windows of 64, 1,024 target positions per step) with one loss, for a number
of steps (``--steps``) or seconds (``--time``), in a fresh child process, then scores
about ``--eval-tokens`` held-out positions (validation and test documents) exactly
over the whole vocabulary; the out-of-vocabulary id is one class and its share is
reported. One CSV row per run is appended to ``--out``, with ``loss_hlo_mb``, the
compiled memory of the loss alone (``benchmarks/large_vocab_loss_memory.py``);
``--fill-loss-memory`` computes that column for rows written without it; ``--table``
summarises the CSV as Markdown and a PNG (quality against memory and against time).
See ``benchmarks/large_vocab_child.py`` for the memory columns and docs/large-vocab.md
for the protocol and targets.

Methods: ``sce``; ``sce_calibrated`` (``SCELoss(calibration=...)``, options by ``--calibration``);
``ce`` (full softmax where ``[N, C]`` logits fit ``--full-ce-max-mb``, the exact
chunked form otherwise; the ``ce_kind`` column says which); ``sampled_softmax``
(``num_sampled`` unigram negatives with logQ correction); ``bce`` and ``gbce``.

Usage::

    python benchmarks/large_vocab.py --corpus gcide --vocab 100000 --method sce --steps 3000
    python benchmarks/large_vocab.py --corpus linux-source-6.1.tar.xz --vocab 1000000 \\
        --method sce --time 1800
    python benchmarks/large_vocab.py --fill-loss-memory --table
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks import large_vocab_report as report  # noqa: E402
from keras_sce.app import harness, runner  # noqa: E402

RESULTS = REPO_ROOT / "benchmarks" / "results"
DEFAULT_CSV = RESULTS / "large_vocab.csv"
DEFAULT_GCIDE = REPO_ROOT.parent / "shared" / "data" / "text" / "gcide.txt.xz"
METHODS = ("sce", "sce_calibrated", "ce", "sampled_softmax", "bce", "gbce")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--corpus", default="gcide",
                   help="'gcide', 'synthetic' (tiny, for tests) or a .c/.h source tarball path")
    p.add_argument("--corpus-path", default=str(DEFAULT_GCIDE), help="the GCIDE file")
    p.add_argument("--vocab", type=int, default=100_000, help="K kept token types")
    p.add_argument("--method", choices=METHODS, action="append",
                   help="repeatable; one child process per method and seed")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--steps", type=int, help="train this many steps")
    budget.add_argument("--time", type=float, help="train this many seconds")
    p.add_argument("--seed", type=int, action="append", help="repeatable (default 0)")
    p.add_argument("--optimizer", choices=("adam", "lazy_adam"), default="adam")
    p.add_argument("--learning-rate", type=float, default=1e-3)
    p.add_argument("--bucket-size-y", type=int, default=256)
    p.add_argument("--mix-x", action="store_true",
                   help="SCE's centres as random mixtures of the batch's rows (the paper's mix_x)")
    p.add_argument("--sce-memory-budget-mb", type=float,
                   help="choose SCE's buckets with keras_sce.suggest_buckets for this budget")
    p.add_argument("--calibration", default="{}",
                   help="sce_calibrated's options as JSON, e.g. '{\"num_samples\": 512}' "
                   "(default: the defaults of keras_sce.ops.calibration.Calibration)")
    p.add_argument("--ce-kind", choices=("auto", "full", "chunked"), default="auto")
    p.add_argument("--full-ce-max-mb", type=float, default=2048,
                   help="auto: full CE when 3 [N, C] float32 buffers fit in this")
    p.add_argument("--num-sampled", type=int, default=1024, help="sampled softmax negatives")
    p.add_argument("--num-negatives", type=int, default=256, help="BCE / gBCE negatives")
    p.add_argument("--eval-tokens", type=int, default=50_000,
                   help="held-out positions scored (about; per split)")
    p.add_argument("--jit", action="store_true", help="compile the train step with XLA")
    p.add_argument("--timeout", type=float, default=7200, help="seconds per child")
    p.add_argument("--out", default=str(DEFAULT_CSV), help="CSV to append to")
    p.add_argument("--table", action="store_true",
                   help="write <out>.md and <out>.png from the CSV (after any runs)")
    p.add_argument("--fill-loss-memory", action="store_true",
                   help="compute loss_hlo_mb for the CSV's rows that lack it (after any runs)")
    p.add_argument("--no-loss-memory", action="store_true",
                   help="leave loss_hlo_mb empty in new rows (fill it later)")
    p.add_argument("--full-ce-memory", action="store_true",
                   help="compile (never run) full CE's loss for --corpus and --vocab and "
                        "record its loss_hlo_mb in <out>_full_ce_memory.csv: the memory "
                        "ratios' reference where full CE cannot train")
    args = p.parse_args(argv)
    if args.method and args.steps is None and args.time is None:
        p.error("give a budget: --steps N or --time SECONDS")
    if not (args.method or args.table or args.fill_loss_memory or args.full_ce_memory):
        p.error("nothing to do: give --method (with a budget), --fill-loss-memory, "
                "--full-ce-memory and/or --table")
    return args


def child_config(args, method: str, seed: int, check_files: bool = True) -> dict:
    cfg = dict(corpus=args.corpus, vocab=args.vocab, method=method, seed=seed,
               steps=args.steps, seconds=args.time, optimizer=args.optimizer,
               learning_rate=args.learning_rate, bucket_size_y=args.bucket_size_y,
               mix_x=args.mix_x,
               calibration=args.calibration, ce_kind=args.ce_kind,
               full_ce_max_mb=args.full_ce_max_mb, num_sampled=args.num_sampled,
               num_negatives=args.num_negatives, eval_tokens=args.eval_tokens, jit=args.jit)
    if args.corpus == "gcide":
        cfg["corpus_path"] = args.corpus_path
    elif args.corpus != "synthetic":
        if check_files and not Path(args.corpus).exists():
            raise SystemExit(f"--corpus {args.corpus!r}: no such file (and not 'gcide' or "
                             "'synthetic').")
        cfg["corpus_path"] = args.corpus
    if method == "sce_calibrated":
        runner.import_tensorflow_quietly()
        from keras_sce.ops.calibration import resolve_calibration

        try:  # refused here, before any child starts
            options = json.loads(args.calibration)
            if options.get("proposal") == "unigram":  # the child passes the corpus counts
                options.setdefault("item_counts", [0, 1])
            resolve_calibration(options)
        except (ValueError, TypeError) as error:
            raise SystemExit(f"--calibration {args.calibration!r}: {error}") from None
    if args.sce_memory_budget_mb and method.startswith("sce"):
        from keras_sce.tuning import suggest_buckets

        n_b, b_x, b_y = suggest_buckets(1024, args.vocab + 2,
                                        int(args.sce_memory_budget_mb * 2**20))
        cfg.update(num_buckets=n_b, bucket_size_x=b_x, bucket_size_y=b_y)
    return cfg


def run_child(cfg: dict, timeout: float) -> dict:
    """Runs one configuration in a fresh Python process; its measured columns.

    The parent waits on the child's result and on its process (an out-of-memory kill,
    a crash or the timeout is an error naming the configuration, never a hang).
    """
    from benchmarks.large_vocab_child import run

    what = f"run {cfg['method']} seed {cfg['seed']}"
    result = harness.require_ok(harness.run_config(run, cfg, name=what, timeout=timeout), what)
    return {k: v for k, v in result.items() if k not in ("status", "cause")}


def loss_memory(cfg: dict, table_rows: int) -> float:
    """``loss_hlo_mb`` of one configuration (NaN, with a message, if it cannot compile)."""
    from benchmarks.large_vocab_loss_memory import loss_hlo_mb

    try:
        return loss_hlo_mb([dict(cfg, table_rows=table_rows)])[0]
    except RuntimeError as error:
        print(f"loss_hlo_mb of {cfg['method']}: {str(error).splitlines()[0]}", file=sys.stderr)
        return math.nan


def corpus_name(cfg: dict) -> str:
    """The CSV's `corpus`: the name, or a tarball's file name."""
    return cfg["corpus"] if cfg["corpus"] in ("gcide", "synthetic") else Path(cfg["corpus"]).name


def full_ce_reference(args, command: str) -> dict:
    """Full CE's compiled loss memory for the corpus and vocabulary, appended to the
    reference CSV (compiled in a child, never executed: no ``[1024, K]`` buffer is
    allocated)."""
    from benchmarks.large_vocab_loss_memory import loss_hlo_mb

    cfg = child_config(args, "ce", 0, check_files=False)
    cfg.update(ce_kind="full", table_rows=args.vocab + 2)  # + padding and OOV ids
    row = dict(corpus=corpus_name(cfg), vocab=args.vocab, table_rows=cfg["table_rows"],
               loss_hlo_mb=loss_hlo_mb([cfg])[0], command=command)
    report.REFERENCE_SCHEMA.append(report.reference_path(args.out), row)
    print(f"full CE, {row['corpus']} K={row['vocab']}: compiled loss {row['loss_hlo_mb']} MB",
          flush=True)
    return row


def make_row(cfg: dict, result: dict, command: str) -> dict:
    budget = f"steps {cfg['steps']}" if cfg.get("steps") else f"time {cfg['seconds']:g}s"
    keys = ("bucket_size_y", "num_buckets", "mix_x") if cfg["method"].startswith("sce") else (
        ("num_sampled",) if cfg["method"] == "sampled_softmax" else
        ("num_negatives",) if cfg["method"] in ("bce", "gbce") else ())
    options = " ".join(f"{k}={cfg[k]}" for k in keys if cfg.get(k))
    if cfg["method"] == "sce_calibrated":
        options += " " + report.calibration_label(cfg["calibration"])
    return dict(corpus=corpus_name(cfg), vocab=cfg["vocab"], method=cfg["method"], budget=budget,
                seed=cfg["seed"], optimizer=cfg["optimizer"], options=options,
                machine=f"{platform.machine()} nproc={os.cpu_count()}", command=command,
                **result)


def main(argv=None):
    args = parse_args(argv)
    command = "python benchmarks/large_vocab.py " + shlex.join(
        a for a in (argv if argv is not None else sys.argv[1:])
        if a not in ("--table", "--fill-loss-memory", "--no-loss-memory", "--full-ce-memory"))
    rows = []
    for method in args.method or ():
        for seed in args.seed or [0]:
            cfg = child_config(args, method, seed)
            result = run_child(cfg, args.timeout)
            result["loss_hlo_mb"] = "" if args.no_loss_memory else loss_memory(
                cfg, result["table_rows"])
            row = make_row(cfg, result, command)
            report.append_row(args.out, row)
            rows.append(row)
            print(f"{method} seed {seed}: test ppl {row['test_ppl']}, acc@10 "
                  f"{row['test_acc@10']}, loss mem {row['loss_mem_mb']} MB "
                  f"(compiled loss {row['loss_hlo_mb']} MB), "
                  f"{row['sec_per_step']} s/step ({row['ce_kind'] or '-'})", flush=True)
    if args.full_ce_memory:
        full_ce_reference(args, command)
    if args.fill_loss_memory:
        from benchmarks.large_vocab_loss_memory import fill_main

        fill_main(args.out)
    if args.table:
        out = Path(args.out)
        print(report.write_table(report.read_rows(out), out.with_suffix(".md"),
                                 out.with_suffix(".png"),
                                 references=report.read_references(out)))
    return rows


if __name__ == "__main__":
    main()
