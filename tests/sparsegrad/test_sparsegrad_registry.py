"""Tests of the SparseGrad kernel registry (how the optimizer finds the kernels)."""

from __future__ import annotations

import gc

import keras
import numpy as np
import pytest

import keras_sce
from keras_sce import sparsegrad
from keras_sce.sparsegrad.registry import VariableRegistry


def test_layer_registers_its_kernel_and_writes_nothing_on_it():
    layer = keras_sce.SparseGradDense(4, num_selected=3, support=np.arange(6))
    layer.build((None, 3))
    spec = sparsegrad.sparse_kernel_spec(layer.kernel)
    assert spec.num_selected == 3 and spec.support is layer.support
    assert sparsegrad.is_sparsegrad_kernel(layer.kernel)
    assert not sparsegrad.is_sparsegrad_kernel(layer.bias)
    assert not [name for name in vars(layer.kernel) if "keras_sce" in name]


def test_entries_go_with_their_variable():
    registry = VariableRegistry()
    variable = keras.Variable(np.zeros((2, 2), "float32"))
    registry.set(variable, "value")
    assert variable in registry and registry.get(variable) == "value" and len(registry) == 1
    del variable
    gc.collect()
    assert len(registry) == 0
    other = keras.Variable(np.zeros((2, 2), "float32"))
    assert other not in registry and registry.get(other, "none") == "none"


def test_a_registered_raw_variable_gets_the_lazy_adam():
    kernel = keras.Variable(np.ones((3, 4), "float32"), name="raw_kernel")
    plain = keras.Variable(np.ones((3, 4), "float32"), name="plain")
    sparsegrad.register_sparse_kernel(kernel, num_selected=2)
    optimizer = sparsegrad.SparseGradOptimizer(dense_optimizer="adam", learning_rate=0.1)
    optimizer.build([kernel, plain])
    gradient = np.zeros((3, 4), "float32")
    gradient[0, 1], gradient[2, 3] = 1.0, -2.0
    optimizer.apply([gradient, gradient], [kernel, plain])
    changed = kernel.numpy() != 1.0
    np.testing.assert_array_equal(changed, gradient != 0)  # only the selected entries
    assert len(optimizer.sparse_state_variables) == 2


@pytest.mark.parametrize(
    "variable, num_selected, error, match",
    [
        (np.zeros((2, 2)), 1, TypeError, "keras.Variable"),
        (keras.Variable(np.zeros(3, "float32")), 1, ValueError, "2-D"),
        (keras.Variable(np.zeros((2, 2), "float32")), 0, ValueError, "positive int"),
        (keras.Variable(np.zeros((2, 2), "float32")), True, ValueError, "positive int"),
    ],
    ids=["not_a_variable", "rank_1", "zero_k", "bool_k"],
)
def test_bad_registrations_raise(variable, num_selected, error, match):
    with pytest.raises(error, match=match):
        sparsegrad.register_sparse_kernel(variable, num_selected)
