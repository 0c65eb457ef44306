"""SCE in `keras.ops`: the backend-neutral core (JAX, and any Keras 3 backend).

- `scalable_cross_entropy` — SCE (arXiv 2409.18721), as `keras_sce.ops`
  computes it on TensorFlow, calibrated on request (`keras_sce.kops.calibration`).
- `bucket_top_k` — the per-bucket top-k item search, streamed over chunks.
- `full_cross_entropy`, `chunked_cross_entropy` — the exact softmax cross-entropy
  over the catalogue (materialised, or streamed over catalogue chunks).
- `sampled_softmax`, `sampled_bce`, `gbce` — the sampled baselines.
- `batch_fingerprint` — a per-batch int for fresh, jit-friendly seeds.
- `Calibration` — calibrated SCE's options (also `keras_sce.ops.calibration.Calibration`;
  this path imports no TensorFlow).
- `keras_sce.kops.sharded` — the search and table reads of a table split by rows
  over devices (JAX, `jax.shard_map`), and the full-catalogue ranking on it.

These functions import no TensorFlow. `keras_sce.kops.loss` and
`keras_sce.kops.losses` (the Keras losses that `keras_sce.SCELoss` and the
baseline losses become off TensorFlow) build on the TensorFlow classes, which do.
"""

from keras_sce._calibration import Calibration
from keras_sce.kops._tensors import batch_fingerprint
from keras_sce.kops.binary import gbce, sampled_bce
from keras_sce.kops.cross_entropy import chunked_cross_entropy, full_cross_entropy
from keras_sce.kops.sampled import sampled_softmax
from keras_sce.kops.sce import scalable_cross_entropy
from keras_sce.kops.search import bucket_top_k

__all__ = [
    "Calibration",
    "batch_fingerprint",
    "bucket_top_k",
    "chunked_cross_entropy",
    "full_cross_entropy",
    "gbce",
    "sampled_bce",
    "sampled_softmax",
    "scalable_cross_entropy",
]
