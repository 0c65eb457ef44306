"""The full-catalogue ranking on an item table split by rows over 8 host devices (own
process: the device count is fixed when JAX starts). See tests/jax/sharded_eval_case.py."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
ITEMS, DIM = 4096, 16


@pytest.fixture(scope="module")
def case():
    env = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run([sys.executable, "-m", "tests.jax.sharded_eval_case"], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("mesh", ["mesh-1d", "mesh-2d"])
def test_sharded_ranking_equals_the_host_ranking(case, mesh):
    assert case["devices"] == 8
    host, sharded = case["host"], case[mesh]
    assert host["metrics"]["hr@50"] > 0.3 and host["metrics"]["ndcg@10"] > 0.05
    assert sharded["metrics"] == pytest.approx(host["metrics"], abs=1e-12)
    assert sharded["ranks"] == host["ranks"]
    assert sharded["ids"] == host["ids"]
    np.testing.assert_allclose(sharded["scores"], host["scores"], rtol=1e-5, atol=1e-5)


def test_each_device_holds_its_share_of_the_rows(case):
    assert case["mesh-1d"]["shard_shape"] == [ITEMS // 8, DIM]
    assert case["mesh-2d"]["shard_shape"] == [ITEMS // 4, DIM]  # replicated over "batch"


def test_the_compiled_search_holds_no_table_and_no_score_matrix(case):
    compiled = case["compiled"]
    assert compiled["local_rows_in_program"]
    assert not compiled["whole_table_in_program"] and not compiled["scores_in_program"]
    # Per device: the row shard (32 KiB) and the query batch, not the 256 KiB table.
    assert compiled["memory"]["argument"] < ITEMS * DIM * 4 // 4


def test_a_non_finite_row_is_named_without_gathering_the_table(case):
    assert case["non_finite_error"].startswith("1 of 4096 `item_table` rows")
    assert "first at item 777" in case["non_finite_error"]
