"""SCE with the item table split by rows over 8 host devices (own process: the
device count is fixed when JAX starts). See tests/jax/sharded_case.py."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def case():
    env = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run([sys.executable, "-m", "tests.jax.sharded_case"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_sharded_loss_and_gradients_equal_unsharded(case):
    assert case["devices"] == 8
    plain, sharded = case["op"]["unsharded"], case["op"]["sharded"]
    np.testing.assert_allclose(sharded["loss"], plain["loss"], rtol=1e-6)
    np.testing.assert_allclose(sharded["grad_hidden"], plain["grad_hidden"], atol=1e-6)
    np.testing.assert_allclose(sharded["grad_table_sum"], plain["grad_table_sum"], rtol=1e-5)
    assert sharded["grad_table_rows"] == plain["grad_table_rows"] > 0


def test_no_device_holds_the_whole_table_or_a_score_matrix(case):
    plain, sharded = case["op"]["unsharded"], case["op"]["sharded"]
    table_bytes = 4096 * 16 * 4
    assert sharded["grad_table_shard_shape"] == [4096 // 8, 16]
    assert plain["whole_table_in_program"] and not sharded["whole_table_in_program"]
    assert not plain["scores_in_program"] and not sharded["scores_in_program"]
    per_device = sum(sharded["memory"].values())  # arguments, outputs and temporaries
    assert per_device < table_bytes < plain["memory"]["argument"]


def test_sce_loss_under_model_parallel_trains_and_matches_the_unsharded_op(case):
    run = case["keras"]
    assert run["table_spec"] == "P('model', None)" and run["found_sharding"] == "model"
    assert run["history"][-1] < run["history"][0]
    np.testing.assert_allclose(run["loss_sharded"], run["loss_plain"], rtol=1e-6)
