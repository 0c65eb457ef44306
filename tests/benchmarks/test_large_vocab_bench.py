"""benchmarks/large_vocab.py: row writer, CSV schema, summary table, one tiny real run."""

from __future__ import annotations

import csv

import pytest

from benchmarks import large_vocab as bench
from benchmarks import large_vocab_report as report


def _row(method="sce", seed=0, ce_kind="", acc10=0.5, ndcg=0.3, mem=100.0, budget="steps 20"):
    row = dict.fromkeys(report.SCHEMA.columns, "")
    row.update({"corpus": "synthetic", "vocab": 300, "method": method, "ce_kind": ce_kind,
                "budget": budget, "seed": seed, "steps": 20, "tokens_seen": 1000,
                "train_seconds": 2.0, "val_tokens": 100, "val_ppl": 50.0, "test_tokens": 100,
                "test_ppl": 60.0, "test_acc@1": 0.2, "test_acc@10": acc10, "ndcg@10": ndcg,
                "sec_per_step": 0.1, "peak_mem_mb": 900.0, "loss_mem_mb": mem,
                "step_mem_mb": 1.0, "gpu_loss_mem_mb": "nan", "oov_rate": 0.01,
                "command": "python x", "loss_hlo_mb": mem / 10, "table_rows": 302})
    return row


def test_rows_round_trip_under_the_fixed_header(tmp_path):
    path = tmp_path / "lv.csv"
    report.append_row(path, _row(seed=0))
    report.append_row(path, _row(seed=1))
    with open(path, newline="") as f:
        reader = csv.reader(f)
        assert tuple(next(reader)) == report.FIELDS + report.ADDED
        assert len(list(reader)) == 2
    assert [r["seed"] for r in report.read_rows(path)] == ["0", "1"]


@pytest.mark.parametrize("change", ["missing", "unknown"])
def test_row_with_wrong_columns_is_refused(tmp_path, change):
    row = _row()
    if change == "missing":
        del row["loss_mem_mb"]
    else:
        row["surprise"] = 1
    with pytest.raises(ValueError, match=change):
        report.append_row(tmp_path / "lv.csv", row)


def test_appending_to_a_file_with_another_header_is_refused(tmp_path):
    path = tmp_path / "old.csv"
    path.write_text("method,kind,runtime_ms\nsce,x,1\n")
    with pytest.raises(ValueError, match="another header"):
        report.append_row(path, _row())


def test_table_averages_seeds_and_states_the_targets(tmp_path):
    rows = [_row(seed=0, acc10=0.50, mem=40.0), _row(seed=1, acc10=0.40, mem=60.0),
            _row("ce", 0, "full", acc10=0.50, ndcg=0.30, mem=1000.0)]
    text = report.write_table(rows, tmp_path / "lv.md")
    assert (tmp_path / "lv.md").read_text() == text
    sce_line = next(line for line in text.splitlines() if "| sce |" in line)
    assert "| 2 |" in sce_line and "0.4500 ± 0.0707" in sce_line
    assert "acc@10 -10.0%" in text  # 0.45 vs 0.50
    assert "SCE / full CE = 0.050" in text  # 50 MB vs 1000 MB
    assert "Compiled loss memory SCE / full CE = 0.0500 (5.0 vs 100.0 MB; target <= 0.1)" in text


def test_a_file_of_the_first_schema_gains_the_new_columns(tmp_path):
    path = tmp_path / "lv.csv"
    first = {k: v for k, v in _row(seed=7).items() if k in report.FIELDS}
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=report.FIELDS)
        writer.writeheader()
        writer.writerow(first)
    report.append_row(path, _row(seed=8))
    old, new = report.read_rows(path)
    assert (old["seed"], old["loss_hlo_mb"], new["seed"], new["loss_hlo_mb"]) == (
        "7", "", "8", "10.0")


def test_sce_calibrated_builds_a_calibrated_loss_and_bad_options_are_refused_early():
    import keras

    from benchmarks.large_vocab_child import make_loss

    table = keras.layers.Embedding(50, 8)
    table.build((None,))
    cfg = dict(method="sce_calibrated", seed=0, bucket_size_y=16,
               calibration='{"num_samples": 32}')
    loss, _ = make_loss(cfg, table, None)
    assert loss.calibration["num_samples"] == 32
    args = bench.parse_args(["--method", "sce_calibrated", "--steps", "1",
                             "--calibration", '{"num_samples": 0}'])
    with pytest.raises(SystemExit, match="--calibration"):  # before any child starts
        bench.child_config(args, "sce_calibrated", 0)


@pytest.mark.parametrize("argv,message", [
    (["--method", "sce"], "budget"),
    ([], "nothing to do"),
    (["--method", "sce", "--steps", "3", "--time", "5"], "not allowed"),
])
def test_bad_command_lines(argv, message, capsys):
    with pytest.raises(SystemExit):
        bench.parse_args(argv)
    assert message in capsys.readouterr().err


def test_a_row_configuration_is_rebuilt_from_its_command():
    from benchmarks.large_vocab_loss_memory import config_of_row

    row = _row("sce_calibrated", seed=3)
    row["command"] = ("python benchmarks/large_vocab.py --corpus /gone/linux.tar.xz --vocab 300 "
                      "--steps 20 --method sce_calibrated --calibration '{\"num_samples\": 64}'")
    cfg = config_of_row(row)
    assert (cfg["method"], cfg["seed"], cfg["table_rows"]) == ("sce_calibrated", 3, 302)
    assert cfg["calibration"] == '{"num_samples": 64}' and cfg["bucket_size_y"] == 256
    with pytest.raises(ValueError, match="not a large_vocab.py command"):
        config_of_row(dict(row, command="python other.py"))
    assert cfg["mix_x"] is False
    mixed = config_of_row(dict(row, method="sce", command=row["command"] + " --mix-x"))
    assert mixed["mix_x"] is True
    assert "mix_x=True" in bench.make_row(mixed, {}, "python x")["options"]
    assert "mix_x" not in bench.make_row(cfg, {}, "python x")["options"]


def test_rows_whose_command_cannot_be_read_are_left_empty(tmp_path, capsys):
    from benchmarks.large_vocab_loss_memory import fill

    path = tmp_path / "lv.csv"
    report.append_row(path, dict(_row(), command="python other.py", loss_hlo_mb=""))
    assert fill(path, report.SCHEMA) == 0
    assert report.read_rows(path)[0]["loss_hlo_mb"] == ""
    assert "row sce seed 0 skipped: " in capsys.readouterr().out


@pytest.mark.slow
def test_loss_memory_is_filled_in_for_rows_written_without_it(tmp_path):
    """Rows of the first schema (no loss_hlo_mb) get the compiled loss memory of their
    own configuration: full CE's [1024, C] logits dominate, SCE's buckets do not."""
    from benchmarks.large_vocab_loss_memory import fill

    path = tmp_path / "lv.csv"
    base = "python benchmarks/large_vocab.py --corpus synthetic --vocab 20000 --steps 3"
    rows = [_row("sce", 0), _row("sce", 1), _row("ce", 0, "full")]
    for row, method in zip(rows, ("sce", "sce", "ce --ce-kind full"), strict=True):
        row.update(command=f"{base} --method {method}", vocab=20000)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=report.FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    assert fill(path, report.SCHEMA) == 3
    sce0, sce1, ce = (float(r["loss_hlo_mb"]) for r in report.read_rows(path))
    logits_mb = 1024 * 20_002 * 4 / 2**20
    assert sce0 == sce1 and 0 < sce0 < logits_mb / 2
    assert logits_mb <= ce < 4 * logits_mb
    assert fill(path, report.SCHEMA) == 0  # nothing left to do


@pytest.mark.slow
def test_tiny_real_run_appends_a_complete_row_and_a_table(tmp_path):
    out = tmp_path / "lv.csv"
    rows = bench.main(["--corpus", "synthetic", "--vocab", "200", "--method", "sce",
                       "--steps", "3", "--eval-tokens", "500", "--out", str(out), "--table"])
    (row,) = rows
    assert row["steps"] == 3 and row["ce_kind"] == ""
    assert 0 < row["test_tokens"] and 1.0 < row["test_ppl"] < 1e6
    assert 0.0 <= row["test_acc@1"] <= row["test_acc@10"] <= 1.0
    assert row["tokens_seen"] > 0 and row["sec_per_step"] > 0 and row["peak_mem_mb"] > 0
    assert 0.0 < row["oov_rate"] < 0.1
    assert row["budget"] == "steps 3" and "--steps 3" in row["command"]
    assert row["table_rows"] == 202 and row["loss_hlo_mb"] > 0
    (read,) = report.read_rows(out)
    assert read["method"] == "sce" and float(read["test_ppl"]) == pytest.approx(row["test_ppl"])
    assert "| synthetic | 200 | sce |" in out.with_suffix(".md").read_text()


def test_table_keeps_loss_options_apart(tmp_path):
    """Two calibrated-SCE proposals (and two b_y) are two lines, never one mean."""
    rows = [_row(seed=0, acc10=0.50), _row("ce", 0, "full", acc10=0.50, ndcg=0.30, mem=1000.0)]
    for proposal, acc in (("uniform", 0.40), ("unigram", 0.30)):
        row = _row(seed=0, acc10=acc)
        row.update(method="sce_calibrated", options="bucket_size_y=256",
                   command=f"python x --calibration '{{\"proposal\": \"{proposal}\"}}'")
        rows.append(row)
    wide = _row(seed=0, acc10=0.48)
    wide["options"] = "bucket_size_y=1024"
    text = report.write_table(rows + [wide], tmp_path / "lv.md")
    lines = [line for line in text.splitlines() if line.startswith("| ") and "sce" in line]
    assert len(lines) == 4
    assert any('"proposal":"unigram"' in line and "0.3000" in line for line in lines)
    assert "SCE bucket_size_y=1024" in text  # one target paragraph per SCE configuration


def test_calibrated_rows_are_checked_against_exact_ce_and_raw_sce(tmp_path):
    rows = [_row(seed=0, acc10=0.40, mem=50.0), _row("ce", 0, "full", acc10=0.50, mem=1000.0)]
    rows[0]["options"] = "bucket_size_y=256"
    rows[1]["test_ppl"] = 100.0
    for seed, ppl in ((0, 104.0), (1, 112.0)):
        row = _row(seed=seed, acc10=0.45, mem=54.0)
        row.update(method="sce_calibrated", test_ppl=ppl,
                   options='bucket_size_y=256 calibration={"num_samples":8}')
        rows.append(row)
    text = report.write_table(rows, tmp_path / "lv.md")
    assert "calibrated SCE bucket_size_y=256 calibration={\"num_samples\":8} (2 seeds):" in text
    assert "test perplexity 108.0 vs exact CE (full) 100.0: +8.0% (target: within +10%)" in text
    assert "acc@10 0.4500 vs raw SCE 0.4000 (target: no worse)" in text
    assert "Compiled loss memory 5.4 vs raw SCE 5.0 MB: +8.0% (target: within +10%)" in text
    ce_line = next(line for line in text.splitlines() if "| ce |" in line)
    assert "±" not in ce_line  # one seed: no spread shown


def test_full_ce_reference_memory_is_compiled_and_used_where_no_full_row_exists(tmp_path):
    """Where full CE cannot train, its compiled-only loss memory is the ratio's reference."""
    out = tmp_path / "lv.csv"
    bench.main(["--corpus", "synthetic", "--vocab", "20000", "--full-ce-memory",
                "--out", str(out)])
    (ref,) = report.REFERENCE_SCHEMA.read(report.reference_path(out))
    logits_mb = 1024 * 20_002 * 4 / 2**20
    assert ref["table_rows"] == "20002" and logits_mb <= float(ref["loss_hlo_mb"])
    assert "--full-ce-memory" not in ref["command"] and "--vocab 20000" in ref["command"]
    rows = [_row(mem=40.0), _row("ce", 0, "chunked", mem=300.0)]
    for row in rows:
        row["vocab"] = 20000
    references = report.read_references(out)
    text = report.write_table(rows, tmp_path / "lv.md", references=references)
    ratio = 4.0 / float(ref["loss_hlo_mb"])
    assert f"SCE / full CE (compiled only, never run) = {ratio:.4f}" in text
    # A full-CE row, when there is one, is the reference instead.
    full = _row("ce", 0, "full", mem=1000.0)
    full["vocab"] = 20000
    text = report.write_table(rows + [full], tmp_path / "lv.md", references=references)
    assert "compiled only" not in text and "SCE / full CE = 0.0400" in text
