"""examples/sharded_two_tower.py, tiny: SCELoss with the item table split over a 2-D mesh
(own process: the example forces 8 host devices before JAX starts)."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_sharded_two_tower_example_trains_and_evaluates_on_the_sharded_table():
    # This checkout's keras_sce first (a script's own folder is what Python puts first).
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": path}
    command = [sys.executable, "examples/sharded_two_tower.py", "--devices", "8",
               "--batch-devices", "2", "--items", "1024", "--users", "256", "--epochs", "4",
               "--batch-size", "64", "--bucket-size-y", "64", "--chunk-size", "128"]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    run = json.loads(result.stdout.strip().splitlines()[-1])
    assert run["devices"] == 8 and run["mesh"] == {"batch": 2, "model": 4}
    assert run["table_spec"] == "P('model', None)" and run["table_shard_rows"] == 1024 // 4
    assert run["sharded_evaluation"]
    assert run["loss"][-1] < run["loss"][0]
    assert run["after"]["hr@50"] > run["before"]["hr@50"] + 0.1
    assert run["after"]["ndcg@10"] > run["before"]["ndcg@10"]
