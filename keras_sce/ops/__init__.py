"""The core of keras_sce: pure TensorFlow (no Keras layers imported here).

- :func:`bucket_top_k` — the XLA-compiled, optionally streamed, per-bucket top-k.
- :func:`scalable_cross_entropy` — SCE (arXiv 2409.18721).
- :func:`full_cross_entropy` — the exact reference over the whole catalogue.
- :func:`chunked_cross_entropy` — the same exact loss, streamed over catalogue chunks.
- :class:`SeedStream` — reproducible, fresh-at-every-call seeds for the centres.
"""

from keras_sce.ops.bucketing import bucket_top_k
from keras_sce.ops.cross_entropy import chunked_cross_entropy, full_cross_entropy
from keras_sce.ops.sce import SeedStream, default_num_buckets, scalable_cross_entropy

__all__ = [
    "SeedStream",
    "bucket_top_k",
    "chunked_cross_entropy",
    "default_num_buckets",
    "full_cross_entropy",
    "scalable_cross_entropy",
]
