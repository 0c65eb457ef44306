"""TensorFlow Recommenders adapter: SCE as a TFRS retrieval task.

Import this sub-package only in a process that runs TFRS, i.e. with the
environment variable `TF_USE_LEGACY_KERAS=1` set before anything touches
`tf.keras`. `import keras_sce` never imports it (nor `tf.keras`); importing
it without the variable raises an `ImportError` that says what to do.

- `SCERetrieval` — a `tfrs.tasks.base.Task` (a tf_keras layer) computing
  Scalable Cross-Entropy (arXiv 2409.18721) of query embeddings against the whole
  candidate table; the TFRS door onto the same core as `keras_sce.SCELoss`. What
  it may be bound to, and how the table is read, is `keras_sce.tfrs.candidate_table`.
"""

from keras_sce.tfrs._stack import check_legacy_keras_stack

check_legacy_keras_stack("keras_sce.tfrs")

from keras_sce.tfrs.sce_retrieval import SCERetrieval  # noqa: E402

__all__ = ["SCERetrieval", "check_legacy_keras_stack"]
