"""The TFRS comparison: in-batch softmax vs `SCERetrieval`, rows in `benchmarks/results/`.

Runs `examples/tfrs_retrieval.py` (the example teaches the model; this script keeps
its figures) with `--out benchmarks/results/tfrs_retrieval.csv` unless `--out` is
given, and records each row's command as this script's. Every option is the
example's (`python benchmarks/tfrs_comparison.py --help`). The script sets
`TF_USE_LEGACY_KERAS=1` itself, as the example does.

Usage:

    python benchmarks/tfrs_comparison.py --dataset Beauty --epochs 12 --validation \\
        --patience 3 --sce-bucket-size-y 1024 --append
    python benchmarks/tfrs_comparison.py --table-only   # the Markdown table from the CSV
"""

from __future__ import annotations

import importlib.util
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_CSV = ROOT / "benchmarks" / "results" / "tfrs_retrieval.csv"
PROGRAM = "python benchmarks/tfrs_comparison.py"


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if not any(a == "--out" or a.startswith("--out=") for a in argv):
        argv += ["--out", str(DEFAULT_CSV)]
    sys.path.insert(0, str(ROOT / "examples"))  # the example's sibling modules
    spec = importlib.util.spec_from_file_location("tfrs_retrieval_example",
                                                  ROOT / "examples" / "tfrs_retrieval.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)  # sets TF_USE_LEGACY_KERAS before TensorFlow loads

    recorded = list(argv)
    if recorded[-2:] == ["--out", str(DEFAULT_CSV)]:
        del recorded[-2:]  # the default is not part of the command a reader runs
    return example.main(argv, program=PROGRAM, recorded_argv=recorded)

if __name__ == "__main__":
    main()
