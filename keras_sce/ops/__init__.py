"""The core of keras_sce: pure TensorFlow (no Keras imported here).

- `bucket_top_k` — the XLA-compiled, optionally streamed top-k by inner
  product (SCE's item search; the full-ranking evaluation runs the same search).
- `scalable_cross_entropy` — SCE (arXiv 2409.18721).
- `full_cross_entropy` — the exact reference over the whole catalogue.
- `chunked_cross_entropy` — the same exact loss, streamed over catalogue chunks.
- `SeedStream` — reproducible, fresh-at-every-call seeds for the centres.
- `default_num_buckets`, `DEFAULT_CHUNK_SIZE`, `DEFAULT_BUCKET_SIZE_Y` —
  the rules and defaults (`keras_sce.ops.defaults`, which loads no TensorFlow,
  so the command line and the memory model can use them).

The names load their module (and TensorFlow) on first use (PEP 562).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # what static tools (type checkers, the API pages) should see
    from keras_sce.ops.cross_entropy import chunked_cross_entropy, full_cross_entropy
    from keras_sce.ops.defaults import (
        DEFAULT_BUCKET_SIZE_Y,
        DEFAULT_CHUNK_SIZE,
        default_num_buckets,
    )
    from keras_sce.ops.sampling import SeedStream
    from keras_sce.ops.sce import scalable_cross_entropy
    from keras_sce.ops.top_k import bucket_top_k

_NAMES = {
    "DEFAULT_BUCKET_SIZE_Y": "keras_sce.ops.defaults",
    "DEFAULT_CHUNK_SIZE": "keras_sce.ops.defaults",
    "SeedStream": "keras_sce.ops.sampling",
    "bucket_top_k": "keras_sce.ops.top_k",
    "chunked_cross_entropy": "keras_sce.ops.cross_entropy",
    "default_num_buckets": "keras_sce.ops.defaults",
    "full_cross_entropy": "keras_sce.ops.cross_entropy",
    "scalable_cross_entropy": "keras_sce.ops.sce",
}

__all__ = [
    "DEFAULT_BUCKET_SIZE_Y",
    "DEFAULT_CHUNK_SIZE",
    "SeedStream",
    "bucket_top_k",
    "chunked_cross_entropy",
    "default_num_buckets",
    "full_cross_entropy",
    "scalable_cross_entropy",
]


def __getattr__(name: str):
    if name in _NAMES:
        value = getattr(importlib.import_module(_NAMES[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'keras_sce.ops' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_NAMES))
