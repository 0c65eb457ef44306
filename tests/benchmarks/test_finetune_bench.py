"""benchmarks/finetune_sparsegrad.py: the protocol's choices, the report, the options."""

from __future__ import annotations

import shlex
import shutil
from pathlib import Path

import pytest

from benchmarks import finetune_sparsegrad as bench
from benchmarks import finetune_sparsegrad_report as report

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"


def _row(method, seed, lr, val, test, task="rotten_tomatoes", **extra):
    row = dict.fromkeys(report.CSV_FIELDS, "")
    row.update(task=task, method=method, seed=str(seed), learning_rate=str(lr),
               val_accuracy=str(val), test_accuracy=str(test), steps="96", step_ms="100",
               peak_mem_mb="1000", optimizer_state_bytes="8", trainable_params="10")
    row.update({k: str(v) for k, v in extra.items()})
    return row


def test_the_learning_rate_is_chosen_on_seed_zero_validation_only():
    rows = [_row("lora", 0, 1e-3, 0.70, 0.99), _row("lora", 0, 3e-3, 0.75, 0.10),
            _row("lora", 1, 1e-3, 0.99, 0.99)]  # a later seed never decides
    assert report.chosen_learning_rate(rows, "rotten_tomatoes", "lora") == 3e-3
    assert report.chosen_learning_rate(rows, "gcide_pos", "lora") is None
    tie = [_row("full", 0, 1e-4, 0.7, 0.7), _row("full", 0, 5e-5, 0.7, 0.7)]
    assert report.chosen_learning_rate(tie, "rotten_tomatoes", "full") == 5e-5


def test_the_summary_uses_the_rows_at_the_chosen_rate_and_checks_the_targets():
    rows = [_row("full", 0, 1e-4, 0.80, 0.80, step_ms=100), _row("full", 1, 1e-4, 0.8, 0.82,
                                                                  step_ms=100),
            _row("full", 2, 1e-4, 0.80, 0.81, step_ms=100),
            _row("lora", 2, 1e-3, 0.78, 0.77), _row("sparsegrad", 2, 1e-3, 0.80, 0.80,
                                                    step_ms=150, floor_ratio=1.6),
            _row("lora", 0, 1e-3, 0.78, 0.76), _row("lora", 1, 1e-3, 0.78, 0.78),
            _row("lora", 0, 3e-4, 0.70, 0.99),  # not chosen: its test accuracy is ignored
            _row("sparsegrad", 0, 1e-3, 0.80, 0.80, step_ms=150, floor_ratio=1.6),
            _row("sparsegrad", 1, 1e-3, 0.80, 0.80, step_ms=150, floor_ratio=1.6)]
    by = {s["method"]: s for s in report.summarize(rows)}
    assert by["lora"]["learning_rate"] == 1e-3 and by["lora"]["seeds"] == 3
    assert by["lora"]["test_mean"] == pytest.approx(77.0)
    assert by["lora"]["grid"] == 2
    text = report.markdown(rows)
    assert "`sparsegrad` − `lora` = +3.00 points" in text and "target >= 0: met" in text
    # seed by seed: 80 − 76, 80 − 78, 80 − 77
    assert "paired by seed: +3.00 ± 1.00 std over 3 seeds" in text
    assert "`full` − `sparsegrad` = +1.00 points" in text and "target <= 0.5: missed" in text
    assert "step / `full` step = 1.50x" in text and "0.94x the floor" in text
    assert "**0.001: 78.00**" in text  # the chosen rate is marked in the grid


def test_fewer_than_three_seeds_leave_the_accuracy_targets_open():
    rows = [_row("lora", 0, 1e-3, 0.8, 0.70), _row("sparsegrad", 0, 1e-3, 0.8, 0.76)]
    text = report.markdown(rows)
    assert "target >= 0: open (1 of 3 seeds)" in text and "76.00 (1 seed)" in text


def test_a_spread_larger_than_the_gap_asks_for_more_seeds():
    rows = [_row("lora", s, 1e-3, 0.8, a) for s, a in enumerate((0.70, 0.80, 0.75))]
    rows += [_row("sparsegrad", s, 1e-3, 0.8, 0.76) for s in range(3)]
    assert "more seeds needed" in report.markdown(rows)
    rows += [_row("lora", 3, 1e-3, 0.8, 0.70), _row("sparsegrad", 3, 1e-3, 0.8, 0.76)]
    assert "more seeds needed" not in report.markdown(rows)  # more than 3: the mean decides


def test_the_floor_of_a_sparsegrad_row_reads_full_of_the_same_task_and_seed():
    rows = [_row("full", 0, 1e-4, 0.8, 0.8, step_ms=200),
            _row("full", 1, 1e-4, 0.8, 0.8, step_ms=300),
            _row("full", 1, 5e-5, 0.8, 0.8, step_ms=500)]
    row = {"task": "rotten_tomatoes", "seed": 1, "floor_ratio": 1.5}
    bench._fill_floor(row, rows)
    assert row["floor_step_ms"] == 600.0  # the median of seed 1's two full steps, x 1.5
    row = {"task": "gcide_pos", "seed": 1, "floor_ratio": 1.5}
    bench._fill_floor(row, rows)
    assert "floor_step_ms" not in row


def test_a_report_is_written_with_its_plot(tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "ft.csv"
    for row in (_row("full", 0, 1e-4, 0.8, 0.8), _row("sparsegrad", 0, 1e-3, 0.8, 0.79),
                _row("sparsegrad", 0, 1e-3, 0.6, 0.6, task="gcide_pos")):
        report.append_row(path, row)
    text = report.write_report(path, tmp_path / "ft")
    assert "## Rotten Tomatoes" in text and "## GCIDE part of speech" in text
    assert (tmp_path / "ft.png").read_bytes()[:4] == b"\x89PNG"
    assert path.read_text().splitlines()[0] == ",".join(report.SCHEMA.columns)


def test_the_committed_table_is_rebuilt_from_the_committed_csv(tmp_path):
    pytest.importorskip("matplotlib")
    if not (RESULTS / "finetune.csv").exists():
        pytest.skip("benchmarks/results/finetune.csv is not committed yet")
    shutil.copy(RESULTS / "finetune.csv", tmp_path / "ft.csv")
    text = report.write_report(tmp_path / "ft.csv", tmp_path / "ft")
    assert text == (RESULTS / "finetune.md").read_text()


def test_a_protocol_is_a_command_without_method_seed_and_rate():
    args = bench.build_parser().parse_args(["--task", "gcide_pos", "--patience", "3"])
    one = bench.command_of(args, "lora", 1, 1e-3)
    two = bench.command_of(args, "sparsegrad", 2, 3.3e-4)
    assert bench.protocol_of(one) == bench.protocol_of(two) == "--task gcide_pos --patience 3"
    other = bench.build_parser().parse_args(["--task", "gcide_pos"])
    assert bench.protocol_of(bench.command_of(other, "lora", 1, 1e-3)) != bench.protocol_of(one)


def test_a_csv_of_other_options_is_refused(tmp_path, capsys):
    path = tmp_path / "ft.csv"
    args = bench.build_parser().parse_args(["--patience", "5"])
    report.append_row(path, _row("lora", 0, 1e-3, 0.8, 0.8,
                                 command=bench.command_of(args, "lora", 0, 1e-3)))
    with pytest.raises(SystemExit, match="holds rotten_tomatoes runs of other options"):
        bench.main(["--output", str(tmp_path / "ft"), "--methods", "lora"])


def test_only_selective_methods_count_in_the_fold_check():
    rows = [_row("full_mlp", 0, 1e-4, 0.8, 0.8, folded_test_accuracy=0.8),
            _row("sparsegrad", 0, 1e-3, 0.8, 0.8, folded_test_accuracy=0.8)]
    assert "identical to the unfolded one in 1 of 1" in report.folded_check(rows)


def test_a_row_command_parses_back_to_the_run_options():
    args = bench.build_parser().parse_args(["--task", "gcide_pos", "--max-steps", "480",
                                            "--patience", "3"])
    command = bench.command_of(args, "sparsegrad_ok", 2, 1.2345678e-4)
    argv = shlex.split(command)[3:]  # after PYTHONPATH=. python examples/...
    parsed = bench.example.build_parser().parse_args(argv)
    assert (parsed.task, parsed.methods, parsed.seed) == ("gcide_pos", "sparsegrad_ok", 2)
    assert parsed.mlp_lr["sparsegrad_ok"] == 1.2345678e-4  # every digit
    assert (parsed.max_steps, parsed.patience, parsed.eval_every) == (480, 3, 96)


@pytest.mark.parametrize(("argv", "message"), [
    pytest.param(["--methods", "full,dense"], "unknown ['dense']", id="unknown-method"),
    pytest.param(["--mlp-lr", "sparse=1e-3"], "unknown method 'sparse'", id="unknown-lr-method"),
    pytest.param(["--patience", "-1"], "must be >= 0", id="negative-patience"),
    pytest.param(["--eval-every", "0"], "must be >= 1", id="zero-eval-every"),
    pytest.param(["--task", "imdb"], "invalid choice: 'imdb'", id="unknown-task"),
])
def test_bad_options_are_named(argv, message, capsys):
    parser = bench.build_parser()
    with pytest.raises(SystemExit):
        bench.example.parse_methods(parser, parser.parse_args(argv).methods)
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(("argv", "message"), [
    pytest.param(["--grid", "lora"], "expected method=lr", id="grid-without-values"),
    pytest.param(["--grid", "dora=1e-3"], "expected method=lr", id="grid-unknown-method"),
    pytest.param(["--seeds", "0,1"], "seed 0 is the grid's seed", id="grid-seed-again"),
    pytest.param(["--max-steps", "10"], "below --eval-every", id="steps-below-eval"),
])
def test_bad_protocol_options_are_named(argv, message, capsys):
    with pytest.raises(SystemExit):
        bench.main(argv)
    assert message in capsys.readouterr().err


def test_the_grid_option_replaces_one_method_grid():
    grid = bench._parse_grid("lora=1e-4,1e-3")
    assert grid["lora"] == (1e-4, 1e-3) and grid["full"] == bench.DEFAULT_GRID["full"]
    assert set(bench.DEFAULT_GRID) == set(bench.example.METHODS)


def test_the_benchmark_runs_every_default_method_and_the_example_one():
    assert bench.build_parser().parse_args([]).methods.split(",") == list(
        bench.example.DEFAULT_METHODS)
    assert "full" in bench.example.DEFAULT_METHODS and "full_mlp" in bench.example.DEFAULT_METHODS
    assert bench.example.build_parser().parse_args([]).methods == "sparsegrad"


def test_an_unknown_task_or_a_missing_file_fails_clearly(tmp_path):
    from examples import finetune_tasks

    with pytest.raises(ValueError, match="Unknown task 'imdb'"):
        finetune_tasks.load_task("imdb", "unused", 32)
    with pytest.raises(FileNotFoundError, match="gcide_pos data not found"):
        finetune_tasks.load_task("gcide_pos", "unused", 32, path=tmp_path / "none.xz")


def _fake_runs(monkeypatch, fail=()):
    """run_config replaced: a run's validation accuracy is its learning rate x 100."""
    calls = []

    def run_config(fn, job, *, name, env=None, timeout=None):
        args, method, seed, lr = job
        calls.append((method, seed, lr))
        if (method, seed, lr) in fail:
            return {"status": "failed", "cause": "boom"}
        row = _row(method, seed, lr, 0, 0, command=bench.command_of(args, method, seed, lr))
        return {**row, "val_accuracy": lr * 100, "test_accuracy": 0.5, "steps": 96,
                "status": "ok", "cause": ""}

    monkeypatch.setattr(bench.harness, "run_config", run_config)
    return calls


def test_the_protocol_runs_the_grid_then_the_seeds_at_the_chosen_rate(tmp_path, monkeypatch):
    calls = _fake_runs(monkeypatch)
    out = str(tmp_path / "ft")
    common = ["--output", out, "--methods", "lora,full", "--grid", "lora=1e-3,3e-3;full=1e-4",
              "--seeds", "1,2", "--max-extensions", "0"]
    bench.main([*common, "--jobs", "2"])
    grid = [c for c in calls if c[1] == 0]
    seeds = [c for c in calls if c[1] != 0]
    assert sorted(grid) == [("full", 0, 1e-4), ("lora", 0, 1e-3), ("lora", 0, 3e-3)]
    assert sorted(seeds) == [("full", 1, 1e-4), ("full", 2, 1e-4), ("lora", 1, 3e-3),
                             ("lora", 2, 3e-3)]
    for method in ("lora", "full"):  # a method's seeds come after its whole grid
        first_seed = min(calls.index(c) for c in seeds if c[0] == method)
        assert first_seed > max(calls.index(c) for c in grid if c[0] == method)
    calls.clear()
    bench.main(common)
    assert calls == []  # resumed: nothing left to run
    assert len(report.read_rows(out + ".csv")) == 7


def test_a_best_rate_at_the_edge_extends_the_grid_before_the_seeds(tmp_path, monkeypatch):
    calls = _fake_runs(monkeypatch)  # validation accuracy grows with the rate: top edge
    bench.main(["--output", str(tmp_path / "ft"), "--methods", "lora",
                "--grid", "lora=1e-4,3e-4", "--seeds", "1", "--max-extensions", "2"])
    assert calls == [("lora", 0, 1e-4), ("lora", 0, 3e-4), ("lora", 0, 9e-4),
                     ("lora", 0, 2.7e-3), ("lora", 1, 2.7e-3)]


def test_a_failed_grid_run_holds_the_method_seeds_and_fails(tmp_path, monkeypatch):
    calls = _fake_runs(monkeypatch, fail={("lora", 0, 3e-3)})
    with pytest.raises(SystemExit, match="1 runs failed"):
        bench.main(["--output", str(tmp_path / "ft"), "--methods", "lora",
                    "--grid", "lora=1e-3,3e-3", "--seeds", "1"])
    assert sorted(calls) == [("lora", 0, 1e-3), ("lora", 0, 3e-3)]  # no seed 1 at 1e-3
