"""Calibrated SCE on a small Zipfian next-item task (CPU, a few minutes).

A bigram source over ``C`` items (id 0 is padding): item popularity is Zipfian; each
item belongs to one of ``K`` clusters; the next item is drawn with probability
``alpha`` from the previous item's cluster (by popularity inside it), otherwise from
the global popularity. The true conditional is known, so the table reports the
Bayes perplexity as a floor. A model ``hidden = Dense(Embedding(prev))`` scored
against a separate output table is trained for the same number of steps with each
loss; held-out targets are then scored with the full softmax over the catalogue:
perplexity (``exp`` of the mean negative log-likelihood), acc@1 and acc@10.
``loss_gap`` is the mean, over 10 draws on the held-out batch, of each method's row
loss minus the exact full CE of the same rows (the rows the draw's buckets cover):
how far the loss a method optimises is from the full CE (raw SCE: a lower bound;
calibrated: the Jensen gap of log Z_hat). ``covered_fraction``: share of held-out
rows that some bucket covers (SCE trains only those).
For the calibrated models the gap is also measured for several ``m`` (the Jensen
gap shrinks as ``1/m``). ``naive`` adds ``m`` uniform samples to every row's denominator with weight
``log((C - 1) / m)`` excluding nothing (neither the bucket's items nor the positive).

Usage::

    TF_NUM_INTRAOP_THREADS=2 python benchmarks/calibration_pilot.py \\
        --out benchmarks/results/calibration_pilot
"""

from __future__ import annotations

import argparse
import math
import os
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_sce import ops  # noqa: E402
from keras_sce.app import harness  # noqa: E402

# train_seconds: steps 2..S (the first compiles); only ratios within one run mean much.
FIELDS = ["method", "steps", "val_perplexity", "val_nll", "acc_at_1", "acc_at_10",
          "loss_gap", "covered_fraction", "train_seconds"]


class Source:
    """The bigram source: Zipfian popularity, clusters, known conditional."""

    def __init__(self, num_items, clusters, alpha, zipf, seed):
        rng = np.random.default_rng(seed)
        self.num_items, self.alpha, self.rng = num_items, alpha, rng
        pop = np.zeros(num_items)
        pop[1:] = rng.permutation(1.0 / np.arange(1, num_items) ** zipf)
        self.pop = pop / pop.sum()
        self.cluster = rng.integers(0, clusters, size=num_items)
        self.order = np.argsort(self.cluster[1:], kind="stable") + 1  # real ids by cluster
        cum = np.cumsum(self.pop[self.order])
        sizes = np.bincount(self.cluster[self.order], minlength=clusters)
        ends = np.cumsum(sizes)
        self.cum, self.ends = cum, ends
        self.start_mass = np.concatenate([[0.0], cum[ends[:-1] - 1]])
        self.mass = cum[ends - 1] - self.start_mass
        self.global_cdf = np.cumsum(self.pop)

    def draw(self, n):
        prev = np.searchsorted(self.global_cdf, self.rng.random(n) * self.global_cdf[-1],
                               side="right")
        c = self.cluster[prev]
        local = self.start_mass[c] + self.rng.random(n) * self.mass[c]
        in_cluster = self.order[np.minimum(np.searchsorted(self.cum, local, side="right"),
                                           self.num_items - 2)]
        glob = np.searchsorted(self.global_cdf, self.rng.random(n) * self.global_cdf[-1],
                               side="right")
        nxt = np.where(self.rng.random(n) < self.alpha, in_cluster, glob)
        return prev.astype("int32"), np.minimum(nxt, self.num_items - 1).astype("int32")

    def true_nll(self, prev, nxt):
        c = self.cluster[prev]
        same = self.cluster[nxt] == c
        p = (1 - self.alpha) * self.pop[nxt] + self.alpha * same * self.pop[nxt] / self.mass[c]
        return float(-np.log(p).mean())


def naive_rows(hidden, labels, table, num_samples, seed, **sce):
    """Raw SCE rows plus m uniform samples with weight (C-1)/m, nothing excluded."""
    _, details = ops.scalable_cross_entropy(hidden, labels, table, seed=seed,
                                            return_details=True, **sce)
    num_real = table.shape[0] - 1
    ids = tf.random.stateless_uniform([num_samples], tf.random.experimental.stateless_fold_in(
        seed, 1), 1, num_real + 1, dtype=tf.int32)
    pos = tf.reduce_sum(hidden * tf.gather(table, labels), -1)
    sampled = tf.matmul(hidden, tf.gather(table, ids), transpose_b=True)
    log_w = math.log(num_real / num_samples)
    exact = details["row_loss"] + pos
    log_z = tf.reduce_logsumexp(tf.concat([exact[:, None], sampled + log_w], 1), 1)
    return log_z - pos, details["row_covered"]


def make_rows(method, args, counts):
    """``f(hidden, labels, table, seed) -> (row losses [N], rows that count [N])``."""
    sce = dict(bucket_size_y=args.bucket_size_y, chunk_size=None)
    if method == "full_ce":
        def full(h, y, w, s):
            logits = tf.matmul(h, w, transpose_b=True)
            logits = tf.concat([tf.fill([tf.shape(h)[0], 1], float("-inf")), logits[:, 1:]], 1)
            rows = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)
            return rows, tf.ones_like(y, tf.bool)
        return full
    if method == "naive":
        return lambda h, y, w, s: naive_rows(h, y, w, args.num_samples, s, **sce)
    cal = None
    if method == "sce_cal_uniform":
        cal = {"num_samples": args.num_samples}
    elif method == "sce_cal_unigram":
        cal = {"num_samples": args.num_samples, "proposal": "unigram", "item_counts": counts,
               "power": 0.75, "uniform_mix": 0.05}

    def sce_rows(h, y, w, s):
        _, details = ops.scalable_cross_entropy(h, y, w, seed=s, calibration=cal,
                                                return_details=True, **sce)
        return details["row_loss"], details["row_covered"]
    return sce_rows


def make_loss(method, args, counts):
    """The training loss: the mean of the row losses over the rows that count."""
    rows_fn = make_rows(method, args, counts)

    def loss(h, y, w, s):
        rows, kept = rows_fn(h, y, w, s)
        kept = tf.cast(kept, rows.dtype)
        return tf.math.divide_no_nan(tf.reduce_sum(rows * kept), tf.reduce_sum(kept))
    return loss


def run(method, args, source, train, val, counts):
    keras.utils.set_random_seed(args.seed)
    c, d = args.num_items, args.dim
    embed = keras.layers.Embedding(c, d, name="inputs")
    mix = keras.layers.Dense(d, name="mix")
    out = keras.layers.Embedding(c, d, name="outputs")
    embed.build((None,)), mix.build((None, d)), out.build((None,))
    variables = embed.trainable_variables + mix.trainable_variables + out.trainable_variables
    optimizer = keras.optimizers.Adam(args.learning_rate)
    optimizer.build(variables)
    loss_fn = make_loss(method, args, counts)
    stream = ops.SeedStream(args.seed)

    @tf.function(jit_compile=True)
    def step(prev, nxt):
        with tf.GradientTape() as tape:
            loss = loss_fn(mix(embed(prev)), nxt, out.embeddings.value, stream.next())
        grads = tape.gradient(loss, [v.value for v in variables])
        optimizer.apply_gradients(zip(grads, variables, strict=True))
        return loss

    prev, nxt = train
    for i in range(args.steps):  # the first step compiles: time the others
        if i == 1:
            start = time.perf_counter()
        sl = slice(i * args.batch, (i + 1) * args.batch)
        step(tf.constant(prev[sl]), tf.constant(nxt[sl]))
    seconds = time.perf_counter() - start
    vp, vn = val
    hidden = mix(embed(tf.constant(vp)))
    table = out.embeddings.value
    logits = tf.matmul(hidden, table, transpose_b=True).numpy().astype(np.float64)
    logits[:, 0] = -np.inf
    lse = np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1)) + logits.max(1)
    target = logits[np.arange(len(vn)), vn]
    nll = float((lse - target).mean())
    rank = (logits > target[:, None]).sum(1)
    exact_rows = lse - target

    def gap(rows_fn):  # on the rows each draw covers, so the two means compare
        draws, covered = [], []
        for k in range(10):
            rows, kept = rows_fn(hidden, tf.constant(vn), table, tf.constant([99, k], tf.int64))
            kept = kept.numpy()
            draws.append(float((rows.numpy()[kept] - exact_rows[kept]).mean()))
            covered.append(kept.mean())
        return float(np.mean(draws)), float(np.mean(covered))

    sweep = []
    if method.startswith("sce_cal_"):  # the estimator's gap on this model, as m grows
        for m in args.gap_samples:
            sub = argparse.Namespace(**dict(vars(args), num_samples=m))
            sweep.append(dict(method=method, num_samples=m,
                              loss_gap=gap(make_rows(method, sub, counts))[0]))
    loss_gap, covered = gap(make_rows(method, args, counts))
    return dict(method=method, steps=args.steps, val_perplexity=math.exp(nll), val_nll=nll,
                acc_at_1=float((rank < 1).mean()), acc_at_10=float((rank < 10).mean()),
                loss_gap=loss_gap, covered_fraction=covered, train_seconds=seconds), sweep


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num-items", type=int, default=20_000)
    parser.add_argument("--clusters", type=int, default=200)
    parser.add_argument("--alpha", type=float, default=0.7)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument("--bucket-size-y", type=int, default=256)
    parser.add_argument("--num-samples", type=int, default=256)
    parser.add_argument("--gap-samples", default="64,256,1024,4096,16384",
                        type=lambda v: [int(x) for x in v.split(",") if x])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--methods", default="full_ce,sce,sce_cal_uniform,sce_cal_unigram,naive")
    parser.add_argument("--out", default=None, help="write <out>.csv and <out>.md")
    args = parser.parse_args()
    source = Source(args.num_items, args.clusters, args.alpha, 1.0, args.seed)
    train = source.draw(args.steps * args.batch)
    val = source.draw(4096)
    counts = np.bincount(train[1], minlength=args.num_items).astype(float)
    rows, sweeps = [], []
    for method in args.methods.split(","):
        row, sweep = run(method, args, source, train, val, counts)
        rows.append(row)
        sweeps += sweep
        for r in [row, *sweep]:
            print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in r.items()), flush=True)
    bayes = math.exp(source.true_nll(*val))
    header = (f"C={args.num_items}, K={args.clusters}, alpha={args.alpha}, d={args.dim}, "
              f"batch={args.batch}, steps={args.steps}, lr={args.learning_rate}, "
              f"b_y={args.bucket_size_y}, m={args.num_samples}, seed={args.seed}; "
              f"Bayes perplexity of the source: {bayes:.1f}")
    print(header)
    if args.out:
        os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
        harness.CsvSchema("calibration_pilot", FIELDS).write(args.out + ".csv", rows)
        with open(args.out + ".md", "w") as f:
            f.write(header + "\n\n| " + " | ".join(FIELDS) + " |\n")
            f.write("|" + "---|" * len(FIELDS) + "\n")
            for r in rows:
                f.write("| " + " | ".join(f"{r[k]:.4g}" if isinstance(r[k], float) else str(r[k])
                                          for k in FIELDS) + " |\n")
            f.write("\nGap of the calibrated estimator (mean of 10 draws minus the exact "
                    "full CE, held-out batch) on each calibrated model, by samples m:\n\n"
                    "| method | m | loss_gap |\n|---|---|---|\n")
            for r in sweeps:
                f.write(f"| {r['method']} | {r['num_samples']} | {r['loss_gap']:.4g} |\n")


if __name__ == "__main__":
    main()
