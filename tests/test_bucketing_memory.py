"""The streamed bucketing step never holds a tensor larger than the table (XLA HLO)."""

from __future__ import annotations

import re

import pytest
import tensorflow as tf

from keras_sce.ops.bucketing import _bucket_top_k_xla

_SHAPE = re.compile(r"\b(?:f32|s32|pred)\[([0-9,]+)\]")


def _largest_hlo_tensor(hlo: str) -> int:
    largest = 0
    for dims in _SHAPE.findall(hlo):
        size = 1
        for dim in dims.split(","):
            size *= int(dim)
        largest = max(largest, size)
    return largest


@pytest.mark.parametrize("num_vectors,chunk", [(10_007, 1000), (4096, 1024)])
def test_streamed_bucket_top_k_makes_no_padded_copy_of_the_table(num_vectors, chunk):
    """Regression: tf.slice(vectors, [begin, 0], [chunk, -1]) inside the XLA while loop
    was lowered through a [2M, 2d] padded copy of the table (4x its size, kept by the
    compiled program: ~1.1 GB extra at C=10^6, d=64)."""
    dim = 16
    centers = tf.random.normal([8, dim])
    vectors = tf.random.normal([num_vectors, dim])
    hlo = _bucket_top_k_xla.experimental_get_compiler_ir(
        centers, vectors, 32, chunk, None, 0
    )(stage="optimized_hlo")
    assert _largest_hlo_tensor(hlo) <= num_vectors * dim
