"""Malformed command-line options of ``keras-sce train``: refused before any training.

One case per line: the arguments, then a fragment the one-line error must contain
(it names the option). Every case must exit with status 2, print exactly one line on
stderr starting with ``keras-sce: error:``, and start no training.
"""

from __future__ import annotations

import pytest

from keras_sce import cli
from keras_sce.app import main_job

# Generated data small enough to build in a blink: 40 items, so the catalogue-bound
# options have something to exceed.
SMALL = ["--synthetic-users", "30", "--synthetic-items", "40", "--num-negatives", "8",
         "--bucket-size-y", "8"]

CASES = [
    # (id, arguments, fragment of the message)
    ("lr-nan", ["--lr", "nan"], "argument --lr: must be a finite number"),
    ("lr-inf", ["--lr", "inf"], "argument --lr: must be a finite number"),
    ("lr-zero", ["--lr", "0"], "argument --lr: must be a finite number > 0"),
    ("lr-negative", ["--lr", "-0.1"], "argument --lr: must be a finite number > 0"),
    ("lr-text", ["--lr", "fast"], "argument --lr: expected a number, got 'fast'"),
    ("epochs-zero", ["--epochs", "0"], "argument --epochs: must be an integer >= 1"),
    ("epochs-float", ["--epochs", "1.5"], "argument --epochs: expected an integer"),
    ("batch-size-zero", ["--batch-size", "0"], "argument --batch-size: must be an integer >= 1"),
    ("max-length-zero", ["--max-length", "0"], "argument --max-length: must be an integer >= 1"),
    ("hidden-dim-zero", ["--hidden-dim", "0"], "argument --hidden-dim: must be an integer >= 1"),
    ("blocks-zero", ["--blocks", "0"], "argument --blocks: must be an integer >= 1"),
    ("heads-zero", ["--heads", "0"], "argument --heads: must be an integer >= 1"),
    ("heads-not-dividing", ["--heads", "3"], "--heads 3 must divide --hidden-dim 64"),
    ("dropout-one", ["--dropout", "1"], "argument --dropout: must be in [0, 1)"),
    ("dropout-negative", ["--dropout", "-0.1"], "argument --dropout: must be in [0, 1)"),
    ("dropout-nan", ["--dropout", "nan"], "argument --dropout: must be a finite number"),
    ("patience-negative", ["--patience", "-1"], "argument --patience: must be an integer >= 0"),
    ("max-minutes-zero", ["--max-minutes", "0"], "argument --max-minutes: must be a finite"),
    ("bucket-size-y-zero", ["--bucket-size-y", "0"], "argument --bucket-size-y: must be an"),
    ("num-buckets-zero", ["--num-buckets", "0"], "argument --num-buckets: must be an integer"),
    ("bucket-size-x-negative", ["--bucket-size-x", "-2"], "argument --bucket-size-x: must be"),
    ("num-negatives-zero", ["--num-negatives", "0"], "argument --num-negatives: must be an"),
    ("length-buckets-negative", ["--length-buckets", "-1"], "argument --length-buckets: must"),
    ("seed-negative", ["--seed", "-1"], "argument --seed: must be an integer in [0, 2**31)"),
    ("logit-offset-word", ["--logit-offset", "auto"], "argument --logit-offset: expected"),
    ("logit-offset-nan", ["--logit-offset", "nan"], "argument --logit-offset: expected"),
    ("verbose-three", ["--verbose", "3"], "argument --verbose: invalid choice: 3"),
    ("format-unknown", ["--format", "xml"], "argument --format: invalid choice: 'xml'"),
    ("format-without-data", ["--format", "sasrec"], "--format sasrec needs --data PATH"),
    ("losses-empty", ["--losses", ""], "argument --losses: expected comma-separated names"),
    ("losses-hole", ["--losses", "sce,,ce"], "argument --losses: expected comma-separated"),
    ("losses-unknown", ["--losses", "magic"], "argument --losses: unknown loss 'magic'"),
    ("losses-repeated", ["--losses", "sce,ce,sce"], "argument --losses: 'sce' is given twice"),
    ("synthetic-users-zero", ["--synthetic-users", "0"], "argument --synthetic-users: must be"),
    ("synthetic-items-one", ["--synthetic-items", "1"], "argument --synthetic-items: must be"),
    ("delimiter-two-chars", ["--delimiter", ";;"], "argument --delimiter: must be one character"),
    ("user-col-empty", ["--user-col", " "], "argument --user-col: must be a non-empty"),
    ("min-rating-nan", ["--min-rating", "nan"], "argument --min-rating: must be a finite"),
    ("unknown-option", ["--bogus"], "unrecognized arguments: --bogus"),
    ("data-missing", ["--data", "{tmp}/nope.txt"], "--data {tmp}/nope.txt: no such file"),
    ("out-is-a-file", ["--out", "{file}"], "--out {file}: exists and is not a folder"),
    ("out-under-a-file", ["--out", "{file}/sub"], "--out {file}/sub: cannot write there"),
    # Checked against the data (40 items), still before any training.
    ("num-negatives-over-catalogue", [*SMALL, "--num-negatives", "41"],
     "--num-negatives 41 exceeds the catalogue: the data has 40 items, so at most 40"),
    ("bucket-size-y-over-catalogue", [*SMALL, "--bucket-size-y", "50"],
     "--bucket-size-y 50 exceeds the catalogue: the data has 40 items, so at most 40"),
]


@pytest.fixture
def no_training(monkeypatch):
    """Fails the test if any loss starts training (in a child or in this process)."""

    def refuse(*args, **kwargs):
        raise AssertionError("training started although an option is invalid")

    monkeypatch.setattr(main_job, "_run_loss", refuse)
    monkeypatch.setattr(main_job, "_train_one", refuse)


@pytest.mark.parametrize(("argv", "fragment"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_malformed_option_is_refused_on_one_line(argv, fragment, tmp_path, capsys, no_training):
    file = tmp_path / "a_file"
    file.write_text("")
    fill = {"tmp": str(tmp_path), "file": str(file)}
    argv = [a.format(**fill) for a in argv]
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "out")]
    status = cli.main(["train", *argv])
    err = capsys.readouterr().err
    assert status == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("keras-sce: error: ")
    assert fragment.format(**fill) in lines[0]
