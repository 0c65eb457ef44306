"""Helpers shared by the tests that run the example scripts on tiny data."""

from __future__ import annotations

import importlib.util
import pathlib
import sys

import numpy as np

EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples"


def load_example(name):
    """Imports ``examples/<name>.py`` as a module (with its sibling helpers importable)."""
    sys.path.insert(0, str(EXAMPLES))  # for the shared `seqrec_data` helper
    try:
        spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(EXAMPLES))
    return module


def write_tiny_seqrec(path, *, num_users, num_items, min_len, max_len, seed=0):
    """SASRec-format file where each user walks through consecutive item ids.

    Sequence lengths are drawn from ``[min_len, max_len)``: an easy next-item pattern.
    """
    rng = np.random.default_rng(seed)
    lines = []
    for user in range(1, num_users + 1):
        start, length = rng.integers(1, num_items + 1), rng.integers(min_len, max_len)
        items = [(start + t - 1) % num_items + 1 for t in range(length)]
        lines.append(" ".join(map(str, [user, *items])))
    path.write_text("\n".join(lines) + "\n")
