"""keras_sce.sparsegrad: SparseGrad fine-tuning helpers (arXiv 2410.07383).

- `estimate_bases`, `BasisAccumulator`, `Bases`: frozen orthogonal bases per layer
  group from a few preliminary gradients (streamed higher-order SVD).
- `estimate_support`: the bounded support of the O(k)-state mode.
- `shared_basis`: one frozen variable per distinct basis (shared by many layers).
- `SparseGradOptimizer`, `lazy_adam_update`: the paper's lazy Adam for SparseGrad
  kernels, beside an ordinary dense optimizer for every other variable.
- `sparse_grad_matmul`, `select_top_k`, `rotation_plan`, `resolve_selection`: the
  pure-TensorFlow core.

The layer itself is `keras_sce.SparseGradDense`.
"""

from keras_sce.sparsegrad.bases import (
    Bases,
    BasisAccumulator,
    check_orthogonal,
    estimate_bases,
    estimate_support,
    fix_signs,
    iterate_gradients,
    lora_equivalent_budget,
    shared_basis,
)
from keras_sce.sparsegrad.core import (
    resolve_selection,
    rotation_plan,
    select_top_k,
    sparse_grad_matmul,
)
from keras_sce.sparsegrad.optimizers import (
    SparseGradOptimizer,
    is_sparsegrad_kernel,
    lazy_adam_update,
)

__all__ = [
    "Bases",
    "BasisAccumulator",
    "SparseGradOptimizer",
    "check_orthogonal",
    "estimate_bases",
    "estimate_support",
    "fix_signs",
    "is_sparsegrad_kernel",
    "iterate_gradients",
    "lazy_adam_update",
    "lora_equivalent_budget",
    "resolve_selection",
    "rotation_plan",
    "select_top_k",
    "shared_basis",
    "sparse_grad_matmul",
]

# keras-hub integration (apply / fold).
from keras_sce.sparsegrad.integration import (  # noqa: E402
    KERAS_HUB_TARGETS,
    FeedForwardSlot,
    apply,
    find_feedforward_layers,
    fold,
)

__all__ += ["KERAS_HUB_TARGETS", "FeedForwardSlot", "apply", "find_feedforward_layers", "fold"]
