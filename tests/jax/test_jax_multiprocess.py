"""Two processes on localhost (`jax.distributed`, Gloo CPU collectives), the item table
split by rows over their 4 devices: SCE and the ranking equal the single-process result.
See tests/jax/multiprocess_case.py."""

from __future__ import annotations

import json
import os
import pathlib
import socket
import subprocess
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def runs():
    env = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "2"}
    port = str(_free_port())
    workers = [
        subprocess.Popen([sys.executable, "-m", "tests.jax.multiprocess_case", str(i), port],
                         cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
        for i in range(2)
    ]
    outputs = []
    try:
        for worker in workers:
            out, err = worker.communicate(timeout=600)
            assert worker.returncode == 0, err[-3000:]
            outputs.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
    return outputs


def test_two_processes_see_four_devices_and_hold_half_the_rows_each(runs):
    assert sorted(run["process"] for run in runs) == [0, 1]
    for run in runs:
        assert run["processes"] == 2 and run["devices"] == 4 and run["local_devices"] == 2
        assert run["local_shard_rows"] == [1024 // 4, 1024 // 4]


def test_sce_over_two_processes_equals_the_single_process_loss_and_gradient(runs):
    for run in runs:
        np.testing.assert_allclose(run["loss"], run["loss_plain"], rtol=1e-6)
        np.testing.assert_allclose(run["grad"], run["grad_plain"], atol=1e-6)
    np.testing.assert_allclose(runs[0]["loss"], runs[1]["loss"], rtol=0)


def test_the_ranking_over_two_processes_equals_the_single_device_one(runs):
    for run in runs:
        assert run["finite"]
        assert run["ids"] == run["ids_plain"] and run["ranks"] == run["ranks_plain"]
        np.testing.assert_allclose(run["scores"], run["scores_plain"], rtol=1e-5)
