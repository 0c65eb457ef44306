"""Why gBCE without a logit offset stalls on Amazon Beauty: the shared-direction diagnostic.

Trains SASRec (the Beauty benchmark's configuration) with gBCE for a few hundred steps,
once with ``logit_offset=0.0`` (the published loss) and once with the default
``"balanced"`` offset, and prints, every ``--every`` steps, on one fixed batch:

- ``|mean e|``: norm of the mean item embedding (a direction shared by every item);
- ``mean |e - mean e|``: the mean norm of the item-specific part;
- ``score offset``: the mean raw score ``h . e`` over all items;
- ``score spread``: the per-row standard deviation of those scores (what ranks items);
- ``target rank``: the mean number of items scored above the target.

Usage::

    TF_NUM_INTRAOP_THREADS=1 python benchmarks/gbce_plateau.py \\
        --out benchmarks/results/gbce_plateau.csv
"""

from __future__ import annotations

import argparse
import os
import pathlib

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_sce import losses  # noqa: E402
from keras_sce.app import harness  # noqa: E402
from keras_sce.datasets import leave_one_out, load_sequences_txt, training_dataset  # noqa: E402
from keras_sce.models import SASRec  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
FIELDS = ["logit_offset", "step", "mean_e_norm", "specific_e_norm", "score_offset",
          "score_spread", "target_rank"]


def _stats(model, x, y):
    table = keras.ops.convert_to_numpy(model.item_embedding_layer.embeddings)
    items = table[1:]
    mean = items.mean(axis=0)
    hidden = keras.ops.convert_to_numpy(model(x, training=False)).reshape(-1, table.shape[1])
    labels = np.asarray(y).reshape(-1)
    keep = labels != 0
    hidden, labels = hidden[keep], labels[keep]
    scores = hidden @ items.T
    target = np.sum(hidden * table[labels], axis=-1)
    return {
        "mean_e_norm": float(np.linalg.norm(mean)),
        "specific_e_norm": float(np.linalg.norm(items - mean, axis=1).mean()),
        "score_offset": float(scores.mean()),
        "score_spread": float(scores.std(axis=1).mean()),
        "target_rank": float((scores > target[:, None]).sum(axis=1).mean()),
    }


def run(data_path, offset, steps, every, seed=0):
    split = leave_one_out(load_sequences_txt(data_path))
    keras.utils.set_random_seed(seed)
    model = SASRec(split.num_items, max_length=50, hidden_dim=64, num_blocks=2, num_heads=1,
                   dropout=0.3)
    model.build((None, 50))
    loss = losses.GBCELoss(model.item_embedding_layer, num_negatives=256, t=0.75, seed=seed,
                           logit_offset=offset)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss)
    data = training_dataset(split, 50, 128, seed=seed)
    x, y = next(iter(data))
    rows = [{"logit_offset": offset, "step": 0, **_stats(model, x, y)}]
    for step in range(every, steps + 1, every):
        model.fit(data, steps_per_epoch=every, epochs=1, verbose=0)
        rows.append({"logit_offset": offset, "step": step, **_stats(model, x, y)})
        print({k: (round(v, 3) if isinstance(v, float) else v) for k, v in rows[-1].items()},
              flush=True)
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    base = os.environ.get("KERAS_SCE_DATA") or str(ROOT.parent / "shared" / "data")
    parser.add_argument("--data", default=str(pathlib.Path(base) / "seqrec" / "Beauty.txt"))
    parser.add_argument("--steps", type=int, default=180)
    parser.add_argument("--every", type=int, default=30)
    parser.add_argument("--out", default=None, help="CSV path")
    args = parser.parse_args(argv)
    rows = []
    for offset in (0.0, "balanced"):
        rows += run(args.data, offset, args.steps, args.every)
    if args.out:
        harness.CsvSchema("gbce_plateau", FIELDS).write(args.out, [
            {k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in r.items()} for r in rows])


if __name__ == "__main__":
    main()
