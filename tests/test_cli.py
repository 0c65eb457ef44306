"""The main job runs end to end on tiny data."""

from __future__ import annotations

import csv
import os
import subprocess
import sys

import pytest

from keras_sce import cli

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
    assert "| method | ndcg@10 | hr@10 | cov@10 | epochs | sec_per_epoch | peak_mem_mb |" in printed
    rows = _rows(out / "results.csv")
    assert [r["method"] for r in rows] == ["sce", "ce", "gbce", "sampled_softmax", "bce"]
    for row in rows:
        assert 0.0 <= float(row["ndcg@10"]) <= float(row["hr@10"]) <= 1.0
        assert int(row["epochs"]) == 2
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


def test_cli_unknown_loss(tmp_path):
    with pytest.raises(SystemExit, match="unknown loss"):
        cli.main(["--losses", "magic", "--out", str(tmp_path)])


@pytest.mark.slow
def test_python_dash_m_isolated(tmp_path):
    """``python -m keras_sce`` with a loss trained in a child process."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
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
            "sce",
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
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "generated data" in proc.stdout
    assert len(_rows(tmp_path / "results.csv")) == 1


def test_cli_logit_offset_flag_reaches_the_config():
    parser = cli.build_parser()
    args = parser.parse_args(["train"])
    assert cli._config(args, num_users=100).logit_offset == "balanced"
    args = parser.parse_args(["train", "--logit-offset", "0"])
    assert cli._config(args, num_users=100).logit_offset == 0.0
    for bad in ("auto", "nan", "inf"):
        with pytest.raises(SystemExit):
            parser.parse_args(["train", "--logit-offset", bad])
