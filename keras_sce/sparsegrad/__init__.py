"""keras_sce.sparsegrad: SparseGrad fine-tuning (arXiv 2410.07383).

Modules, each one concept (none imports another's private helpers):

- `core`: the pure-TensorFlow rotated matmul and its top-k kernel gradient
  (`sparse_grad_matmul`, `select_top_k`, `rotation_plan`, `resolve_selection`).
- `basis_pool`: frozen bases interned by value (`shared_basis`, `check_orthogonal`).
- `hosvd`: streamed higher-order SVD of gradients (`BasisAccumulator`, `Bases`,
  `fix_signs`).
- `gradients`: the preliminary kernel gradients of a model (`iterate_gradients`).
- `estimation`: `estimate_bases` and `estimate_support` (the O(k)-state mode).
- `budget`: the LoRA-equivalent budget rule (`lora_equivalent_budget`).
- `registry`: which variables are SparseGrad kernels (`register_sparse_kernel`,
  `is_sparsegrad_kernel`).
- `layer`: the `SparseGradDense` layer (also `keras_sce.SparseGradDense`), with its
  argument checks (`layer_arguments`), its bases, support and their storage
  (`layer_weights`) and the conversion from and to `Dense` (`dense_conversion`).
- `lazy_adam`, `optimizer`: the paper's lazy Adam (`lazy_adam_update`) and
  `SparseGradOptimizer`, which routes every other variable to a dense optimizer.
- `slots`, `integration`: the keras-hub (or any block) integration, `apply` / `fold`.
"""

from keras_sce.sparsegrad.basis_pool import check_orthogonal, shared_basis
from keras_sce.sparsegrad.budget import lora_equivalent_budget
from keras_sce.sparsegrad.core import (
    resolve_selection,
    rotation_plan,
    select_top_k,
    sparse_grad_matmul,
)
from keras_sce.sparsegrad.estimation import estimate_bases, estimate_support
from keras_sce.sparsegrad.gradients import iterate_gradients
from keras_sce.sparsegrad.hosvd import Bases, BasisAccumulator, fix_signs
from keras_sce.sparsegrad.integration import apply, fold
from keras_sce.sparsegrad.layer import SparseGradDense
from keras_sce.sparsegrad.lazy_adam import lazy_adam_update, pooled_lazy_adam_update
from keras_sce.sparsegrad.optimizer import SparseGradOptimizer
from keras_sce.sparsegrad.registry import (
    SparseKernel,
    is_sparsegrad_kernel,
    register_sparse_kernel,
    sparse_kernel_spec,
)
from keras_sce.sparsegrad.slots import KERAS_HUB_TARGETS, FeedForwardSlot, find_feedforward_layers

__all__ = [
    "KERAS_HUB_TARGETS",
    "Bases",
    "BasisAccumulator",
    "FeedForwardSlot",
    "SparseGradDense",
    "SparseGradOptimizer",
    "SparseKernel",
    "apply",
    "check_orthogonal",
    "estimate_bases",
    "estimate_support",
    "find_feedforward_layers",
    "fix_signs",
    "fold",
    "is_sparsegrad_kernel",
    "iterate_gradients",
    "lazy_adam_update",
    "lora_equivalent_budget",
    "pooled_lazy_adam_update",
    "register_sparse_kernel",
    "resolve_selection",
    "rotation_plan",
    "select_top_k",
    "shared_basis",
    "sparse_grad_matmul",
    "sparse_kernel_spec",
]
