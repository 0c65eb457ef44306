"""The options of `finetune_sparsegrad.py`'s runs: methods, data, model, budget, rates.

Shared by the example and by ``benchmarks/finetune_sparsegrad.py`` (which adds its
grid's options to the same parser).
"""

from __future__ import annotations

import argparse

from finetune_tasks import TASKS

#: `full` trains the whole model (as in the paper), `full_mlp` only the MLP layers.
METHODS = ("full", "full_mlp", "lora", "meprop", "sparsegrad", "sparsegrad_ok",
           "sparsegrad_pool")
DEFAULT_METHODS = METHODS[:6]
DEFAULT_MLP_LR = {"full": 5e-5, "full_mlp": 1e-4, "lora": 1e-3, "meprop": 1e-3,
                  "sparsegrad": 1e-3, "sparsegrad_ok": 1e-3, "sparsegrad_pool": 1e-3}


def _parse_lrs(text: str) -> dict:
    lrs = dict(DEFAULT_MLP_LR)
    for item in filter(None, (t.strip() for t in (text or "").split(","))):
        if "=" in item:
            name, value = item.split("=", 1)
            if name not in METHODS:
                raise argparse.ArgumentTypeError(f"unknown method {name!r} in --mlp-lr")
            lrs[name] = float(value)
        else:
            lrs = {name: float(item) for name in METHODS}
    return lrs


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def build_parser(description: str) -> argparse.ArgumentParser:
    """The options of one fine-tuning run (data, model, budget, learning rates)."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--task", default="rotten_tomatoes", choices=TASKS)
    p.add_argument("--data", default=None,
                   help="the task's data file (Rotten Tomatoes CSV, GCIDE gcide.txt.xz)")
    p.add_argument("--checkpoint", default=None, help="keras-hub preset or local HF folder")
    p.add_argument("--methods", default="sparsegrad", help=f"comma-separated, from {METHODS}")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sequence-length", type=int, default=32)
    p.add_argument("--num-train", type=_non_negative, default=0,
                   help="training examples (0 = the task's default: 3,072 / 10,000)")
    p.add_argument("--num-val", type=_non_negative, default=0,
                   help="validation examples (0 = the task's default: all / 5,000)")
    p.add_argument("--num-test", type=_non_negative, default=0,
                   help="test examples (0 = the task's default: all / 5,000)")
    p.add_argument("--max-steps", type=_positive, default=960,
                   help="training steps at most (rounded down to a multiple of --eval-every)")
    p.add_argument("--eval-every", type=_positive, default=96,
                   help="steps between two validations")
    p.add_argument("--patience", type=_non_negative, default=2,
                   help="validations without a better validation accuracy before training "
                   "stops; 0 trains --max-steps steps. Either way the weights of the best "
                   "validation are restored")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--eval-batch-size", type=int, default=128)
    p.add_argument("--rank", type=int, default=4, help="LoRA rank; k = rank * (in + out)")
    p.add_argument("--support-factor", type=int, default=2,
                   help="sparsegrad_ok support size per layer, in units of k")
    p.add_argument("--pool-factor", type=float, default=1.5,
                   help="sparsegrad_pool moment-pool size per kernel, in units of k")
    p.add_argument("--basis-steps", type=int, default=8)
    p.add_argument("--selection", default="approx", choices=("approx", "top_k"),
                   help="top-k kernel: on CPU/GPU approx_max_k is exact, and tf.math.top_k "
                   "inside the full XLA train step is pathologically slow on CPU (~1 s per layer)")
    p.add_argument("--head-lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--mlp-lr", type=_parse_lrs, default=dict(DEFAULT_MLP_LR),
                   help="MLP learning rate: one value, or method=value,...")
    p.add_argument("--no-jit", action="store_true", help="disable XLA")
    p.add_argument("--threads", type=int, default=1, help="TensorFlow threads per run")
    return p


def parse_methods(parser, text: str) -> list[str]:
    """The comma-separated ``--methods``; a parser error names an unknown one."""
    methods = list(dict.fromkeys(m.strip() for m in text.split(",") if m.strip()))
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        parser.error(f"--methods: unknown {unknown}; choose from {METHODS}")
    return methods
