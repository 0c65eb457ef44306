"""keras_sce: Scalable Cross-Entropy and SparseGrad for Keras 3 (TensorFlow backend).

Public surface:

- ``keras_sce.SCELoss`` — Scalable Cross-Entropy loss (arXiv 2409.18721).
- ``keras_sce.ops`` — the pure-TensorFlow core (bucketing, SCE, reference CE).
- ``keras_sce.SparseGradDense`` — SparseGrad fine-tuning layer (arXiv 2410.07383).

Importing ``keras_sce`` never touches ``tf.keras``; the TensorFlow Recommenders
adapter lives in ``keras_sce.tfrs`` and is imported only on demand.
"""

__version__ = "0.1.0.dev0"

from keras_sce import datasets, evaluation, losses, models, ops, optimizers  # noqa: E402
from keras_sce.layers.sparse_grad_dense import SparseGradDense  # noqa: E402
from keras_sce.losses import SCELoss  # noqa: E402
from keras_sce.saving import load_model  # noqa: E402

# Importing the layer also loads the keras_sce.sparsegrad sub-package.
__all__ = [
    "SCELoss",
    "SparseGradDense",
    "__version__",
    "datasets",
    "evaluation",
    "load_model",
    "losses",
    "models",
    "ops",
    "optimizers",
    "sparsegrad",
]
