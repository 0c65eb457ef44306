"""Train SASRec with one loss and evaluate it over the full catalogue.

Shared by the main job (`keras_sce.cli`) and the benchmarks: builds the loss by
name, trains with Keras `fit` and full-ranking early stopping, then reports
test metrics, epochs, seconds per training epoch and memory
(`keras_sce.app.harness.MemoryWindow`): the process peak RSS and the part of it
attributable to training (peak RSS above the RSS just before the model is built, i.e.
above TensorFlow + the data; the model, its table and the optimizer are counted), and
on a GPU the allocator's peak above the same point.
"""

from __future__ import annotations

import dataclasses
import os
import time

import numpy as np

from keras_sce.app import harness, memory, runner
from keras_sce.ops.defaults import default_num_buckets

METHODS = ("sce", "ce", "gbce", "bce", "sampled_softmax")


@dataclasses.dataclass
class TrainConfig:
    """Hyper-parameters of one SASRec training run (defaults follow the SCE paper)."""

    max_length: int = 50
    hidden_dim: int = 64
    num_blocks: int = 2
    num_heads: int = 1
    dropout: float = 0.3
    learning_rate: float = 1e-3
    # "lazy_adam": keras_sce.optimizers.LazyAdam (only the table rows a step touches
    # move, so a step costs O(rows), not O(catalogue)); "adam": Keras Adam (dense).
    optimizer: str = "lazy_adam"
    batch_size: int = 128
    max_epochs: int = 200
    patience: int = 10
    eval_every: int = 1
    max_minutes: float | None = None
    seed: int = 0
    # SCE
    bucket_size_y: int = 256
    num_buckets: int | None = None
    bucket_size_x: int | None = None
    mix_x: bool = False
    # calibrated SCE: None (SCE as published) or the options of
    # keras_sce.ops.calibration.Calibration (a dict)
    calibration: dict | None = None
    # sampled baselines
    num_negatives: int = 256
    sampled_softmax_sampler: str = "uniform"
    gbce_t: float = 0.75
    # gBCE / BCE: constant added to every score in the loss ("balanced" or a float;
    # 0.0 is the published loss). See keras_sce.ops.sampled.balanced_logit_offset.
    logit_offset: str | float = "balanced"
    jit_compile: bool = False
    valid_users: int | None = None
    length_buckets: int | None = None
    verbose: int = 2


def peak_memory_mb() -> float:
    """Peak resident set size of this process in MiB."""
    return memory.peak_rss_bytes() / 2**20


OPTIMIZERS = ("lazy_adam", "adam")


def make_optimizer(config: TrainConfig):
    """The optimizer of every run: `config.optimizer` at `config.learning_rate`."""
    import keras

    from keras_sce.optimizers import LazyAdam

    if config.optimizer == "lazy_adam":
        return LazyAdam(config.learning_rate)
    if config.optimizer == "adam":
        return keras.optimizers.Adam(config.learning_rate)
    raise ValueError(f"Unknown optimizer {config.optimizer!r}; choose from {OPTIMIZERS}.")


def _fault_injection_callback(method: str):
    """Test hook (`keras_sce.app.runner.FAULT_ENV`): die after the first training batch."""
    import keras

    class FaultInjection(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            runner.inject_fault_if_requested(method)

    return FaultInjection()


def sce_bucket_rule(split, config: TrainConfig) -> int:
    """`int(2 * sqrt(T))`, T = expected non-padding positions per batch."""
    lengths = np.array([min(max(len(s) - 1, 0), config.max_length) for s in split.train])
    tokens = config.batch_size * float(lengths[lengths > 0].mean())
    return default_num_buckets(tokens)


def make_loss(method: str, model, split, config: TrainConfig):
    """The Keras loss for `method` bound to `model`'s item table."""
    from keras_sce import losses

    table = model.item_embedding_layer
    if method == "sce":
        rule = sce_bucket_rule(split, config)
        return losses.SCELoss(
            table,
            num_buckets=config.num_buckets or rule,
            bucket_size_x=config.bucket_size_x or rule,
            bucket_size_y=min(config.bucket_size_y, split.num_items - 1),
            mix_x=config.mix_x,
            seed=config.seed,
            calibration=config.calibration,
        )
    if method == "ce":
        return losses.FullCrossEntropyLoss(table)
    if method == "sampled_softmax":
        counts = split.data.item_counts() if config.sampled_softmax_sampler == "unigram" else None
        return losses.SampledSoftmaxLoss(
            table,
            num_sampled=min(config.num_negatives, split.num_items - 1),
            sampler=config.sampled_softmax_sampler,
            item_counts=counts,
            seed=config.seed,
        )
    if method == "gbce":
        return losses.GBCELoss(
            table,
            num_negatives=min(config.num_negatives, split.num_items - 1),
            t=config.gbce_t,
            seed=config.seed,
            logit_offset=config.logit_offset,
        )
    if method == "bce":
        return losses.SampledBCELoss(
            table, num_negatives=1, seed=config.seed, logit_offset=config.logit_offset
        )
    raise ValueError(f"Unknown method {method!r}; choose from {METHODS}.")


def train_and_evaluate(split, method: str, config: TrainConfig, *, log=print) -> dict:
    """Trains SASRec on `split.train` with `method` and evaluates on test.

    Early stopping monitors full-ranking NDCG@10 on the validation targets; the
    best weights are then evaluated on the test targets (history = train +
    validation item, excluded from the ranking).

    Returns:
        A dict with the test metrics (`ndcg@10`, `hr@10`, `cov@10`, ... at
        K in 1, 5, 10, 20, 50), `epochs`, `best_epoch`, `sec_per_epoch`,
        `catalogue` (item table rows), `peak_mem_mb` (process peak RSS),
        `baseline_mem_mb` (RSS before the model was built), `train_mem_mb` (peak
        above that baseline), `gpu_train_mem_mb` (the GPU allocator's, NaN without
        a GPU), `stopped_by` and the per-evaluation `records`.
    """
    import keras

    from keras_sce.datasets import evaluation_arrays, training_dataset
    from keras_sce.evaluation import DEFAULT_KS, evaluate_ranking
    from keras_sce.evaluation.callback import RankingEvaluation
    from keras_sce.models import SASRec

    if method not in METHODS:
        raise ValueError(f"Unknown method {method!r}; choose from {METHODS}.")
    # Memory above this point (TensorFlow, the data) is the process baseline; the peak
    # is reset (Linux) so that the training peak is read apart from the loading peak.
    window = harness.MemoryWindow.open()
    keras.utils.set_random_seed(config.seed)
    model = SASRec(
        split.num_items,
        max_length=config.max_length,
        hidden_dim=config.hidden_dim,
        num_blocks=config.num_blocks,
        num_heads=config.num_heads,
        dropout=config.dropout,
    )
    model.build((None, config.max_length))
    loss = make_loss(method, model, split, config)
    model.compile(
        optimizer=make_optimizer(config),
        loss=loss,
        jit_compile=config.jit_compile,
    )
    train_ds = training_dataset(
        split,
        config.max_length,
        config.batch_size,
        seed=config.seed,
        length_buckets=config.length_buckets,
    )
    v_inputs, v_targets, v_hist = evaluation_arrays(split, "valid", config.max_length)
    if config.valid_users and config.valid_users < v_targets.shape[0]:
        pick = np.random.default_rng(config.seed).choice(
            v_targets.shape[0], config.valid_users, replace=False
        )
        v_inputs, v_targets, v_hist = v_inputs[pick], v_targets[pick], v_hist[pick]
    evaluation = RankingEvaluation(
        v_inputs,
        v_targets,
        v_hist,
        patience=config.patience,
        every=config.eval_every,
        max_seconds=None if config.max_minutes is None else 60.0 * config.max_minutes,
        verbose=1 if config.verbose else 0,
    )
    callbacks = [evaluation]
    if os.environ.get(runner.FAULT_ENV):
        callbacks.append(_fault_injection_callback(method))
    start = time.perf_counter()
    model.fit(
        train_ds,
        epochs=config.max_epochs,
        callbacks=callbacks,
        verbose=config.verbose,
        shuffle=False,  # the dataset reshuffles itself every epoch
    )
    wall = time.perf_counter() - start
    t_inputs, t_targets, t_hist = evaluation_arrays(split, "test", config.max_length)
    test = evaluate_ranking(
        model.last_hidden(t_inputs),
        keras.ops.convert_to_numpy(model.item_embedding_layer.embeddings),
        t_targets,
        exclude=t_hist,
        ks=DEFAULT_KS,
    )
    window.close()
    train_seconds = evaluation.train_seconds
    # The first epoch includes tracing; report the median of the rest when possible.
    steady = train_seconds[1:] if len(train_seconds) > 1 else train_seconds
    result = {
        "method": method,
        "seed": config.seed,
        "epochs": evaluation.epochs_run,
        "best_epoch": evaluation.best_epoch,
        "best_val_ndcg@10": float(evaluation.best),
        "sec_per_epoch": float(np.median(steady)),
        "train_seconds_total": float(sum(train_seconds)),
        "wall_seconds": wall,
        "catalogue": int(split.num_items),
        "peak_mem_mb": window.process_peak_mb,
        "baseline_mem_mb": window.baseline_bytes / 2**20,
        "train_mem_mb": window.attributable_mb,
        "gpu_train_mem_mb": window.gpu_attributable_mb,
        "stopped_by": evaluation.stopped_by,
        "records": evaluation.records,
        **test,
    }
    result["model"] = model
    return result
