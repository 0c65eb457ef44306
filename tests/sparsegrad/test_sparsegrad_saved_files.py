"""A `.keras` file saved when `SparseGradDense` lived in `keras_sce.layers` still loads.

`tests/data/sparse_grad_dense_layers_module.keras` holds a functional model of three
`SparseGradDense` layers (shared bases, a fixed support, identity bases) saved by
keras_sce at commit 1c0bb96, whose config names the module
`keras_sce.layers.sparse_grad_dense`; the `.npz` beside it holds an input and the
three outputs the saved model gave for it.
"""

from __future__ import annotations

import pathlib
import subprocess
import sys

import keras
import numpy as np

import keras_sce

DATA = pathlib.Path(__file__).resolve().parents[1] / "data"
SAVED = DATA / "sparse_grad_dense_layers_module.keras"


def test_saved_model_loads_with_its_outputs_and_shared_bases():
    expected = np.load(DATA / "sparse_grad_dense_layers_module.npz")
    model = keras_sce.load_model(SAVED)
    outputs = model(expected["x"])
    for i, output in enumerate(outputs):
        np.testing.assert_allclose(output, expected[f"y{i}"], rtol=1e-6, atol=1e-6)
    layers = {layer.name: layer for layer in model.layers}
    assert layers["a"].input_basis is layers["b"].input_basis
    assert layers["b"].support.shape == (18,) and layers["c"].input_basis is None
    assert keras.saving.get_registered_name(type(layers["a"])) == "keras_sce>SparseGradDense"


def test_saved_model_loads_in_a_fresh_process():
    # Nothing but the package itself is imported first.
    code = (
        "import keras_sce; "
        f"m = keras_sce.load_model({str(SAVED)!r}); "
        "print(type(m.layers[1]).__module__)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("keras_sce.sparsegrad.layer")
