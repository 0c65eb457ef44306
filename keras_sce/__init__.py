"""keras_sce: Scalable Cross-Entropy and SparseGrad for Keras 3 (TensorFlow backend).

Public surface:

- `keras_sce.SCELoss` — Scalable Cross-Entropy loss (arXiv 2409.18721).
- `keras_sce.ops` — the pure-TensorFlow core (bucketing, SCE, reference CE).
- `keras_sce.SparseGradDense` — SparseGrad fine-tuning layer (arXiv 2410.07383).
- `keras_sce.load_model` — `keras.saving.load_model` that re-binds the losses.
- `keras_sce.suggest_buckets` — SCE bucket sizes for a memory budget.
- `keras_sce.optimizers` — row-sparse optimizers for item tables (`LazyAdam`).

Importing `keras_sce` is cheap: the sub-packages (and TensorFlow with them) load on
first use of a name below (PEP 562), so `keras-sce --help` and option errors answer
at once, and the main job can load TensorFlow quietly. Keras learns the package's
serializable classes when their module loads: a `.keras` file that holds them is
read with `keras_sce.load_model` (or after touching `keras_sce.SCELoss` /
`keras_sce.SparseGradDense`). Importing `keras_sce` never touches `tf.keras`;
the TensorFlow Recommenders adapter lives in `keras_sce.tfrs`, imported on demand.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0.dev0"

_SUBMODULES = (
    "datasets",
    "evaluation",
    "layers",
    "losses",
    "models",
    "ops",
    "optimizers",
    "sparsegrad",
)
_ATTRIBUTES = {
    "SCELoss": "keras_sce.losses",
    "SparseGradDense": "keras_sce.sparsegrad.layer",
    "load_model": "keras_sce.saving",
    "suggest_buckets": "keras_sce.tuning",
}

__all__ = ["__version__", *_SUBMODULES, *_ATTRIBUTES]


def __getattr__(name: str):
    if name in _SUBMODULES:
        module = importlib.import_module(f"keras_sce.{name}")
    elif name in _ATTRIBUTES:
        module = getattr(importlib.import_module(_ATTRIBUTES[name]), name)
    else:
        raise AttributeError(f"module 'keras_sce' has no attribute {name!r}")
    globals()[name] = module  # later lookups skip this function
    return module


def __dir__():
    return sorted(set(globals()) | set(__all__))
