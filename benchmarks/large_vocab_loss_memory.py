"""The ``loss_hlo_mb`` column of the large-vocabulary benchmark: the loss's own memory.

The process memory of a training run (``loss_mem_mb``) also holds tracing, the
model's activations and Keras's state, which are the same for every loss. This
column is the memory of the loss alone: XLA's buffer assignment of one compiled
forward + backward of the run's exact loss (``large_vocab_child.make_loss``) for one
training batch (16 windows x 64 = 1,024 hidden rows of ``d=64``) against the
``[C, 64]`` output table, the gradients with respect to the hidden rows and the
table included, the inputs (hidden rows, targets, table) excluded. It is measured
with `keras_sce.app.harness.compiled_memory_bytes` (compiled in a CPU-only child,
never executed, so full CE's ``[1024, C]`` logits need not fit in memory).

A row's configuration is rebuilt from its ``command``, ``method`` and ``seed``
columns (the command line that produced it), so that rows written before this
column existed can be filled in: ``python benchmarks/large_vocab.py
--fill-loss-memory``. The table has ``table_rows`` rows when the row has that
column, else ``vocab + 2`` (the padding and out-of-vocabulary ids).
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from benchmarks.large_vocab_child import BATCH_SIZE, HIDDEN_DIM, SEQUENCE_LENGTH
from keras_sce.app import harness

MIB = 2**20


def loss_program(cfg: dict):
    """``(fn, specs)``: the loss + gradients of ``cfg``'s method, for compilation."""
    import types

    import keras
    import numpy as np
    import tensorflow as tf

    from benchmarks.large_vocab_child import make_loss

    rows = int(cfg["table_rows"])
    keras.utils.set_random_seed(int(cfg["seed"]))
    table = keras.layers.Embedding(rows, HIDDEN_DIM, name="token_embedding")
    table.build((None,))
    corpus = types.SimpleNamespace(vocabulary_size=rows, counts=np.ones(rows, np.int64))
    loss, _ = make_loss(cfg, table, corpus)
    variables = [getattr(v, "value", v) for v in table.trainable_variables]

    def loss_and_gradients(hidden, targets):
        with tf.GradientTape() as tape:
            tape.watch(hidden)
            value = loss(targets, hidden)
        grads = tape.gradient(value, [hidden, *variables])
        flat = []
        for grad in grads:  # a gathered table's gradient is IndexedSlices
            flat += [grad.values, grad.indices] if isinstance(grad, tf.IndexedSlices) else [grad]
        return value, flat

    specs = (tf.TensorSpec([BATCH_SIZE, SEQUENCE_LENGTH, HIDDEN_DIM], tf.float32),
             tf.TensorSpec([BATCH_SIZE, SEQUENCE_LENGTH], tf.int32))
    return loss_and_gradients, specs


def loss_hlo_mb(configs: list[dict]) -> list[float]:
    """The compiled loss + gradient memory of each configuration, in MiB (one child)."""
    if not configs:
        return []
    return [round(b / MIB, 1) for b in harness.compiled_memory_bytes(loss_program, configs)]


def config_of_row(row: dict) -> dict:
    """The training configuration that produced ``row`` (from its command line).

    Raises:
        ValueError: when the command is not a ``large_vocab.py`` command line.
    """
    from benchmarks import large_vocab

    words = shlex.split(row["command"])
    at = next((i for i, w in enumerate(words) if w.endswith("large_vocab.py")), None)
    if at is None:
        raise ValueError(f"row {row['method']} seed {row['seed']}: command "
                         f"{row['command'][:60]!r} is not a large_vocab.py command line")
    args = large_vocab.parse_args([*words[at + 1:], "--table"])
    cfg = large_vocab.child_config(args, row["method"], int(row["seed"]), check_files=False)
    cfg["table_rows"] = int(row.get("table_rows") or int(row["vocab"]) + 2)
    return cfg


def _key(cfg: dict) -> str:
    """What the loss's memory depends on (not the seed, the budget or the corpus file)."""
    skip = ("seed", "steps", "seconds", "corpus_path", "eval_tokens", "learning_rate",
            "optimizer", "jit", "corpus")
    return json.dumps({k: v for k, v in sorted(cfg.items()) if k not in skip})


def fill(path, schema, *, redo: bool = False) -> int:
    """Computes ``loss_hlo_mb`` for the rows of ``path`` that lack it; returns how many.

    The file is rewritten atomically with the column added; rows appended while the
    measurement ran are kept (they are re-read just before writing).
    """
    rows = schema.read(path)
    todo, configs = [], {}
    for r in rows:
        if not redo and r.get("loss_hlo_mb") not in ("", None):
            continue
        try:
            cfg = config_of_row(r)
        except (ValueError, SystemExit) as error:  # left empty, said why
            print(f"{path}: row {r['method']} seed {r['seed']} skipped: {error}")
            continue
        todo.append((r, _key(cfg)))
        configs.setdefault(_key(cfg), cfg)
    measured = dict(zip(configs, loss_hlo_mb(list(configs.values())), strict=True))
    for r, key in todo:
        r["loss_hlo_mb"] = measured[key]
    now = schema.read(path)
    schema.write(path, rows + now[len(rows):], header=schema.header_of(path))
    return len(todo)


def fill_main(path) -> None:
    """``--fill-loss-memory``: fills the column and prints what it did."""
    from benchmarks import large_vocab_report as report

    if not Path(path).exists():
        raise SystemExit(f"--fill-loss-memory: no CSV at {path} (give --out).")
    count = fill(path, report.SCHEMA)
    print(f"{path}: loss_hlo_mb computed for {count} row(s)")
