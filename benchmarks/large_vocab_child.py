"""One large-vocabulary training run, meant for a fresh process (see large_vocab.py).

The model is the GPT-2 backbone of ``examples/keras_hub_causal_lm.py`` (``d=64``, 2
blocks, 2 heads, windows of 64 tokens, 16 windows = 1,024 target positions per
step), its tied ``ReversibleEmbedding`` being the output table of every loss. The
run trains for a number of steps or seconds, then scores held-out documents
exactly over the whole vocabulary (``evaluate_next_token``, streamed).

Memory (`keras_sce.app.harness.MemoryWindow`): ``peak_mem_mb`` is the process's
peak resident size; ``loss_mem_mb`` the peak during training above the resident
size once the model, the loss, the optimizer's variables and the data pipeline
exist (so it holds what a training step needs: tracing, activations, the loss's own
buffers and gradients; only the loss differs between methods); ``step_mem_mb`` the
same above the resident size after the first step (without tracing and the
compiled program). On a GPU, ``gpu_loss_mem_mb`` is the allocator's peak during
training above its bytes in use at the same baseline (NaN on a CPU-only machine).
The loss's own compiled memory is ``loss_hlo_mb`` (``large_vocab_loss_memory.py``).
"""

from __future__ import annotations

import json
import math
import statistics
import time

import numpy as np

SEQUENCE_LENGTH, BATCH_SIZE, EVAL_BATCH, HIDDEN_DIM = 64, 16, 64, 64
MIB = 2**20
FULL_CE_COPIES = 3  # logits, softmax, gradient: [N, C] floats each


def load_corpus(cfg):
    """``gcide``, ``synthetic`` (the example's tiny corpus) or a source-code tarball."""
    from keras_sce.datasets import load_gcide_corpus, load_token_corpus

    if cfg["corpus"] == "synthetic":
        from examples.keras_hub_causal_lm import synthetic_corpus

        return synthetic_corpus(num_types=cfg["vocab"], seed=0)
    if cfg["corpus"] == "gcide":
        return load_gcide_corpus(cfg["corpus_path"], cfg["vocab"])
    return load_token_corpus(cfg["corpus_path"], cfg["vocab"], tokenizer="code",
                             suffixes=(".c", ".h"))


def full_ce_bytes(num_rows: int, num_items: int) -> int:
    """Predicted size of full CE's logits, softmax and gradient (``[N, C]`` each)."""
    return FULL_CE_COPIES * 4 * num_rows * num_items


def make_loss(cfg, table_layer, corpus):
    """The Keras loss of ``cfg["method"]`` and the CE kind ("full", "chunked" or "")."""
    import keras_sce
    from keras_sce.losses import GBCELoss, ItemTableLoss, SampledBCELoss, SampledSoftmaxLoss
    from keras_sce.ops import chunked_cross_entropy

    class ChunkedCrossEntropyLoss(ItemTableLoss):
        """Exact CE streamed over vocabulary chunks (ops.chunked_cross_entropy)."""

        def _compute(self, y_true, y_pred, table, sample_weight):
            return chunked_cross_entropy(y_pred, y_true, table, padding_id=self.padding_id,
                                         sample_weight=sample_weight)

    method, seed = cfg["method"], cfg["seed"]
    if method in ("sce", "sce_calibrated"):
        options = dict(bucket_size_y=cfg["bucket_size_y"], mix_x=cfg.get("mix_x", False),
                       seed=seed)
        if cfg.get("num_buckets"):
            options.update(num_buckets=cfg["num_buckets"], bucket_size_x=cfg["bucket_size_x"])
        if method == "sce_calibrated":
            calibration = json.loads(cfg["calibration"])
            if calibration.get("proposal") == "unigram" and "item_counts" not in calibration:
                # the training split's counts (padding 0; the OOV row's count included)
                calibration["item_counts"] = corpus.counts.tolist()
            options["calibration"] = calibration
        return keras_sce.SCELoss(table_layer, **options), ""
    if method == "ce":
        kind = cfg["ce_kind"]
        if kind == "auto":
            fits = full_ce_bytes(SEQUENCE_LENGTH * BATCH_SIZE, corpus.vocabulary_size)
            kind = "full" if fits <= cfg["full_ce_max_mb"] * 2**20 else "chunked"
        if kind == "full":
            return keras_sce.losses.FullCrossEntropyLoss(table_layer), kind
        return ChunkedCrossEntropyLoss(table_layer, name="chunked_ce_loss"), kind
    if method == "sampled_softmax":
        return SampledSoftmaxLoss(table_layer, num_sampled=cfg["num_sampled"], sampler="unigram",
                                  item_counts=corpus.counts.tolist(), seed=seed), ""
    if method == "bce":
        return SampledBCELoss(table_layer, num_negatives=cfg["num_negatives"], seed=seed), ""
    if method == "gbce":
        return GBCELoss(table_layer, num_negatives=cfg["num_negatives"], seed=seed), ""
    raise SystemExit(f"unknown method {method!r}")


def eval_batches(split, tokens: int) -> int:
    """Batches of the split's first windows (in document order) holding ``tokens`` targets."""
    _, lengths = split.window_bounds(SEQUENCE_LENGTH)
    windows = int(np.searchsorted(np.cumsum(lengths - 1), tokens)) + 1
    return max(1, math.ceil(min(windows, lengths.size) / EVAL_BATCH))


def run(cfg: dict) -> dict:
    import keras

    from examples.keras_hub_causal_lm import build_backbone, make_optimizer, to_features
    from keras_sce.app.harness import MemoryWindow, gpu_memory_bytes
    from keras_sce.datasets import OOV_ID
    from keras_sce.evaluation import evaluate_next_token

    keras.utils.set_random_seed(cfg["seed"])
    corpus = load_corpus(cfg)
    backbone = build_backbone(corpus.vocabulary_size, hidden_dim=HIDDEN_DIM, num_layers=2,
                              num_heads=2, sequence_length=SEQUENCE_LENGTH)
    loss, ce_kind = make_loss(cfg, backbone.token_embedding, corpus)
    optimizer = make_optimizer(cfg["optimizer"], cfg["learning_rate"])
    backbone.compile(optimizer=optimizer, loss=loss, jit_compile=cfg["jit"])
    optimizer.build(backbone.trainable_variables)
    train = corpus.train.dataset(SEQUENCE_LENGTH, BATCH_SIZE, shuffle=True, seed=cfg["seed"],
                                 drop_remainder=True).repeat().map(to_features)
    iterator_probe = next(iter(train))  # the pipeline exists before the baseline
    del iterator_probe
    starts, lengths = corpus.train.window_bounds(SEQUENCE_LENGTH)
    targets_per_window = float(np.mean(lengths - 1))

    clock = _clock(cfg.get("seconds"), MemoryWindow)
    clock.window = MemoryWindow.open()  # the baseline: everything but the training steps
    steps = cfg.get("steps") or 10**9
    backbone.fit(train, epochs=1, steps_per_epoch=steps, shuffle=False, verbose=0,
                 callbacks=[clock])
    first, rest = clock.window, clock.rest.close()  # step one (with tracing), the others
    loss_peak = max(first.peak_bytes, rest.peak_bytes)
    train_seconds = clock.elapsed

    gpu_peak = gpu_memory_bytes()[1]
    table = backbone.token_embedding.embeddings
    row = dict(gpu_loss_mem_mb=round((gpu_peak - first.gpu_baseline_bytes) / MIB, 1),
               ce_kind=ce_kind, steps=clock.steps,
               tokens_seen=int(round(clock.steps * BATCH_SIZE * targets_per_window)),
               train_seconds=round(train_seconds, 2),
               sec_per_step=round(statistics.median(clock.times[1:] or clock.times), 4),
               peak_mem_mb=round(max(first.peak_before_bytes, loss_peak) / MIB, 1),
               loss_mem_mb=round((loss_peak - first.baseline_bytes) / MIB, 1),
               step_mem_mb=round(rest.attributable_mb, 1),
               final_loss=round(float(clock.last_loss), 4),
               table_rows=int(corpus.vocabulary_size))
    for name, split in (("val", corpus.validation), ("test", corpus.test)):
        batches = eval_batches(split, cfg["eval_tokens"])
        data = split.dataset(SEQUENCE_LENGTH, EVAL_BATCH).take(batches).map(to_features)
        out = evaluate_next_token(backbone, data, table, oov_id=OOV_ID)
        row[f"{name}_tokens"] = out["tokens"]
        row[f"{name}_ppl"] = round(out["perplexity"], 3)
        if name == "test":
            row.update({key: round(out[name], 5) for key, name in (
                ("test_acc@1", "acc@1"), ("test_acc@10", "acc@10"), ("ndcg@10", "ndcg@10"),
                ("oov_rate", "oov_rate"))})
    return row


def _clock(seconds, window_class):
    """A Keras callback: step times, a wall-clock budget; closes ``window`` after step one
    and opens ``rest`` (a ``window_class``) for the steps after it."""
    import keras

    class Clock(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seconds, self.times, self.steps, self.last_loss = seconds, [], 0, math.nan
            self.window = self.rest = None

        def on_train_begin(self, logs=None):
            self.begin = time.perf_counter()

        def on_train_batch_begin(self, batch, logs=None):
            self.step_begin = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            now = time.perf_counter()
            self.times.append(now - self.step_begin)
            self.steps += 1
            self.last_loss = (logs or {}).get("loss", math.nan)
            if self.steps == 1:  # the peak so far includes tracing and compilation
                self.window.close()
                self.rest = window_class.open(gpu=False)  # the GPU peak spans all steps
            self.elapsed = now - self.begin
            if self.seconds is not None and self.elapsed >= self.seconds:
                self.model.stop_training = True

    return Clock()
