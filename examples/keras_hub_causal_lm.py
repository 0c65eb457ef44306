"""A keras-hub GPT-2 language model trained with SCELoss over the full vocabulary.

keras-hub's ``GPT2Backbone`` outputs the hidden sequence ``[B, T, d]`` and keeps its
(tied) output table in ``backbone.token_embedding``, a ``ReversibleEmbedding``. So the
backbone itself is the model to compile: ``SCELoss(backbone.token_embedding)``
compares the hidden states with that table inside the loss, never building the
``[B * T, V]`` logits, and trains the table through a sparse gradient (only the rows
SCE looked at). Padding targets (id 0) are ignored by the loss.

The default run is a word-level next-token task on GCIDE (a 100,000-word vocabulary
plus padding and out-of-vocabulary ids, a small backbone, a few hundred steps);
``--tiny`` runs on a synthetic corpus in seconds. Both end with the exact
perplexity, accuracy@k and NDCG@10 over the whole vocabulary on held-out documents
(``keras_sce.evaluation.evaluate_next_token``, streamed over vocabulary chunks).

Usage::

    python examples/keras_hub_causal_lm.py                    # GCIDE, K=100,000
    python examples/keras_hub_causal_lm.py --tiny             # synthetic, seconds
    python examples/keras_hub_causal_lm.py --optimizer lazy_adam --steps 2000
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

DEFAULT_GCIDE = REPO_ROOT.parent / "shared" / "data" / "text" / "gcide.txt.xz"


def synthetic_corpus(num_types: int = 300, num_documents: int = 600, seed: int = 0):
    """A small ``TokenCorpus`` whose next token is usually a fixed function of the last.

    Each document starts at a random word; with probability 0.85 the next word is
    the current word's fixed successor, otherwise a random word (1% of the words
    are the out-of-vocabulary id). Documents go to train / validation / test in
    the ratio 8:1:1.
    """
    from keras_sce.datasets import OOV_ID, TokenCorpus, TokenSplit

    rng = np.random.default_rng(seed)
    first_word = OOV_ID + 1
    successor = rng.permutation(num_types) + first_word
    docs = []
    for _ in range(num_documents):
        ids = [int(rng.integers(first_word, first_word + num_types))]
        for _ in range(int(rng.integers(8, 48)) - 1):
            if rng.random() < 0.85:
                ids.append(int(successor[ids[-1] - first_word]) if ids[-1] != OOV_ID else 2)
            elif rng.random() < 0.07:
                ids.append(OOV_ID)
            else:
                ids.append(int(rng.integers(first_word, first_word + num_types)))
        docs.append(np.asarray(ids, np.int32))
    cut = [int(num_documents * 0.8), int(num_documents * 0.9)]
    splits = {}
    parts = np.split(np.arange(num_documents), cut)
    for name, part in zip(("train", "validation", "test"), parts, strict=True):
        lengths = [docs[i].size for i in part]
        splits[name] = TokenSplit(
            np.concatenate([docs[i] for i in part]), np.concatenate([[0], np.cumsum(lengths)]),
            [f"doc{i}" for i in part], num_types=num_types,
        )
    vocabulary = ["<pad>", "<unk>"] + [f"w{i}" for i in range(num_types)]
    counts = np.bincount(splits["train"].ids, minlength=len(vocabulary)).astype(np.int64)
    return TokenCorpus(vocabulary, counts, splits, source="synthetic", num_train_types=num_types)


def build_backbone(vocabulary_size: int, *, hidden_dim=64, num_layers=2, num_heads=2,
                   sequence_length=64, dropout=0.0):
    """A small randomly initialised ``keras_hub.models.GPT2Backbone``."""
    import keras_hub

    return keras_hub.models.GPT2Backbone(
        vocabulary_size=vocabulary_size, num_layers=num_layers, num_heads=num_heads,
        hidden_dim=hidden_dim, intermediate_dim=4 * hidden_dim, dropout=dropout,
        max_sequence_length=sequence_length,
    )


def to_features(inputs, targets):
    """``(inputs, targets)`` windows -> the backbone's input dict and the targets."""
    import tensorflow as tf

    mask = tf.cast(tf.not_equal(targets, 0), "int32")  # the tail of a short window
    return {"token_ids": inputs, "padding_mask": mask}, targets


def make_optimizer(name: str, learning_rate: float):
    """``adam`` (Keras Adam, dense moments) or ``lazy_adam`` (row-sparse Adam)."""
    import keras

    if name == "adam":
        return keras.optimizers.Adam(learning_rate)
    if name == "lazy_adam":  # only the rows of the tied table that a step touches move
        from keras_sce.optimizers import LazyAdam

        return LazyAdam(learning_rate)
    raise SystemExit(f"--optimizer must be 'adam' or 'lazy_adam', got {name!r}.")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--tiny", action="store_true", help="synthetic corpus, tiny model, seconds")
    p.add_argument("--corpus", default=str(DEFAULT_GCIDE), help="GCIDE file (gcide.txt.xz)")
    p.add_argument("--vocab", type=int, default=100_000, help="K kept words (GCIDE)")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--length", type=int, default=64, help="tokens per window")
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--bucket-size-y", type=int, default=256)
    p.add_argument("--learning-rate", type=float, default=1e-3)
    p.add_argument("--optimizer", default="lazy_adam", choices=("lazy_adam", "adam"))
    p.add_argument("--eval-batches", type=int, default=40,
                   help="held-out batches scored exactly (validation and test each)")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def main(argv=None) -> dict:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = parse_args(argv)
    if args.tiny:
        args.steps, args.batch_size, args.length = min(args.steps, 120), 16, 16
        args.dim, args.layers, args.bucket_size_y = 32, 1, 64
    import keras

    import keras_sce
    from keras_sce.datasets import OOV_ID, load_gcide_corpus
    from keras_sce.evaluation import evaluate_next_token

    keras.utils.set_random_seed(args.seed)
    if args.tiny:
        corpus = synthetic_corpus(seed=args.seed)
    else:
        if not Path(args.corpus).exists():
            raise SystemExit(f"--corpus {args.corpus} not found (GCIDE: gcide.txt.xz).")
        corpus = load_gcide_corpus(args.corpus, args.vocab)
    print(corpus.report_table())

    def batches(split, shuffle):
        data = split.dataset(args.length, args.batch_size, shuffle=shuffle, seed=args.seed)
        return data.map(to_features)

    # The whole recipe: the backbone is the model, its tied table is the loss's table.
    backbone = build_backbone(corpus.vocabulary_size, hidden_dim=args.dim,
                              num_layers=args.layers, sequence_length=args.length)
    loss = keras_sce.SCELoss(backbone.token_embedding, bucket_size_y=args.bucket_size_y,
                             seed=args.seed)
    backbone.compile(optimizer=make_optimizer(args.optimizer, args.learning_rate), loss=loss)
    start = time.perf_counter()
    history = backbone.fit(batches(corpus.train, True).repeat(), epochs=1,
                           steps_per_epoch=args.steps, shuffle=False, verbose=2)
    train_seconds = time.perf_counter() - start

    table = backbone.token_embedding.embeddings
    results = {"train_seconds": train_seconds, "loss": history.history["loss"][-1]}
    for name, split in (("validation", corpus.validation), ("test", corpus.test)):
        data = batches(split, False).take(args.eval_batches)
        metrics = evaluate_next_token(backbone, data, table, oov_id=OOV_ID)
        results.update({f"{name}_{key}": value for key, value in metrics.items()})
    print(f"trained {args.steps} steps in {train_seconds:.1f} s; exact metrics over all "
          f"{corpus.vocabulary_size:,} ids:")
    for name in ("validation", "test"):
        print(f"  {name:10s} tokens {results[name + '_tokens']:,}  perplexity "
              f"{results[name + '_perplexity']:.1f}  acc@1 {results[name + '_acc@1']:.4f}  "
              f"acc@10 {results[name + '_acc@10']:.4f}  ndcg@10 {results[name + '_ndcg@10']:.4f}"
              f"  OOV {results[name + '_oov_rate']:.2%}")
    results["backbone"], results["corpus"], results["loss_fn"] = backbone, corpus, loss
    return results


if __name__ == "__main__":
    main()
