"""SCE in `keras.ops`: the backend-neutral core (JAX, and any Keras 3 backend).

- `scalable_cross_entropy` — SCE (arXiv 2409.18721), as `keras_sce.ops`
  computes it on TensorFlow.
- `bucket_top_k` — the per-bucket top-k item search, streamed over chunks.
- `full_cross_entropy` — the exact softmax cross-entropy over the catalogue.
- `batch_fingerprint` — a per-batch int for fresh, jit-friendly seeds.
- `keras_sce.kops.sharded` — the search and table reads of a table split by rows
  over devices (JAX, `jax.shard_map`).

These functions import no TensorFlow. `keras_sce.kops.loss` (the Keras loss that
`keras_sce.SCELoss` becomes off TensorFlow) builds on `SCELoss`, which does.
"""

from keras_sce.kops._tensors import batch_fingerprint
from keras_sce.kops.cross_entropy import full_cross_entropy
from keras_sce.kops.sce import scalable_cross_entropy
from keras_sce.kops.search import bucket_top_k

__all__ = ["batch_fingerprint", "bucket_top_k", "full_cross_entropy", "scalable_cross_entropy"]
