"""A SCE training step with LazyAdam makes no O(C x d) temporary outside its search.

Outside XLA: no op of the step's graph (nor of the non-compiled functions it calls)
outputs a ``[C, d]`` tensor; a dense read of the table would be one (TensorFlow
copies the whole table on such a read once a sparse update has put the variable in
copy-on-read mode), and so would every dense optimizer temporary. Under XLA: the
optimized HLO of the compiled step holds ``[C, d]`` buffers only as parameters and
in-place scatters. Keras Adam fails both checks (shown, so the guard can fail).
"""

from __future__ import annotations

import re

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.python.framework import function_def_to_graph

import keras_sce
from keras_sce.optimizers import LazyAdam, RowAdagrad, SparseLossScaleOptimizer

C, D, L = 20_011, 16, 10  # a row count no other tensor of the step has


def _train_step(optimizer, jit=False):
    keras.utils.set_random_seed(0)
    model = keras_sce.models.SASRec(C, max_length=L, hidden_dim=D, num_blocks=1, dropout=0.0)
    model.build((None, L))
    loss = keras_sce.SCELoss(
        model.item_embedding_layer, bucket_size_y=32, chunk_size=4096, seed=0
    )
    model.compile(optimizer=optimizer, loss=loss)
    rng = np.random.default_rng(0)
    data = tuple(tf.constant(rng.integers(1, C, (8, L)), tf.int32) for _ in range(2))
    model.train_step(data)  # builds the optimizer (and puts the table in copy-on-read)
    return tf.function(model.train_step, jit_compile=jit), data


def _table_sized_ops(graph):
    found = []
    for op in graph.get_operations():
        for out in op.outputs:
            shape = out.shape
            if shape.rank is not None and shape.rank >= 2 and shape[0] == C:
                found.append(f"{op.type}:{op.name}")
    return found


def _graph_evidence(step, data):
    graph = step.get_concrete_function(data).graph
    found = _table_sized_ops(graph)
    for fdef in graph.as_graph_def().library.function:
        xla = fdef.attr.get("_XlaMustCompile")
        if xla is not None and xla.b:
            continue  # the streamed search: compiled, reads the variable in place
        found += _table_sized_ops(function_def_to_graph.function_def_to_graph(fdef))
    return found


_HLO = re.compile(r"%(\S+) = [a-z0-9]+\[" + f"{C},{D}" + r"\]\S*\s+([\w-]+)\(")
_IN_PLACE = {"parameter", "get-tuple-element", "tuple", "scatter", "bitcast"}


def _hlo_evidence(step, data):
    hlo = step.experimental_get_compiler_ir(data)(stage="optimized_hlo")
    return [
        f"{op}:{name}"
        for name, op in _HLO.findall(hlo)
        if op not in _IN_PLACE and not (op == "fusion" and "scatter" in name)
    ]


OPTIMIZERS = {
    "lazy_adam": (lambda: LazyAdam(1e-3), False),
    "row_adagrad": (lambda: RowAdagrad(0.05), False),
    "keras_adam": (lambda: keras.optimizers.Adam(1e-3), True),
    "keras_sgd": (lambda: keras.optimizers.SGD(0.1), False),
}


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_graph_step_has_no_table_sized_tensor(name):
    make, dense = OPTIMIZERS[name]
    found = _graph_evidence(*_train_step(make()))
    assert bool(found) == dense, found


@pytest.mark.parametrize("name", ["lazy_adam", "keras_adam"])
def test_xla_step_has_no_table_sized_temporary(name):
    make, dense = OPTIMIZERS[name]
    found = _hlo_evidence(*_train_step(make(), jit=True))
    assert bool(found) == dense, found


@pytest.mark.parametrize("sparse_scaling", [True, False], ids=["sparse_scaling", "keras_scaling"])
def test_mixed_float16_loss_scaling(sparse_scaling):
    """Keras' LossScaleOptimizer checks finiteness on a densified [C, d] gradient."""
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        inner = LazyAdam(1e-3)
        opt = SparseLossScaleOptimizer(inner) if sparse_scaling else inner
        found = _graph_evidence(*_train_step(opt))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert bool(found) != sparse_scaling, found
