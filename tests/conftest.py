"""Shared pytest fixtures for keras_sce."""

from __future__ import annotations

import os
import pathlib

import pytest

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def _locate_shared_data() -> pathlib.Path:
    env = os.environ.get("KERAS_SCE_DATA")
    if env:
        return pathlib.Path(env)
    return REPO_ROOT.parent / "shared" / "data"


def require_shared_data(*parts: str) -> pathlib.Path:
    """Returns ``../shared/data/<parts>``; skips without it, fails under ``CI=true``."""
    path = _locate_shared_data().joinpath(*parts)
    if not path.exists():
        message = (
            f"shared data not found at {path} (set KERAS_SCE_DATA or lay ../shared/data "
            "beside the repository)"
        )
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message + "; under CI=true the shared data must be present")
        pytest.skip(message)
    return path


@pytest.fixture
def shared_data_dir() -> pathlib.Path:
    return require_shared_data()


@pytest.fixture(autouse=True)
def _reset_keras_state():
    """Keeps tests independent: fresh Keras names and the float32 policy."""
    import keras

    keras.utils.clear_session()
    keras.mixed_precision.set_global_policy("float32")
    yield
    keras.mixed_precision.set_global_policy("float32")
