"""Every keras_sce loss and layer passes the standard checks (tests/helpers/standard_checks.py)."""

from __future__ import annotations

import inspect

import keras
import numpy as np
import pytest

import keras_sce
from keras_sce import losses, models
from tests.helpers.standard_checks import (
    LAYER_CHECKS,
    LOSS_CHECKS,
    run_layer_test,
    run_loss_test,
)

NO_SAMPLE_WEIGHT = "the loss takes no sample weights (it raises NotImplementedError)"

# name -> (make_loss(item_embedding_layer), {check: reason it does not apply})
LOSS_CASES = {
    "SCELoss": (lambda items: keras_sce.SCELoss(items, bucket_size_y=8, seed=1), {}),
    "FullCrossEntropyLoss": (
        lambda items: losses.FullCrossEntropyLoss(items), {"sample_weight": NO_SAMPLE_WEIGHT}
    ),
    "SampledSoftmaxLoss": (
        lambda items: losses.SampledSoftmaxLoss(items, num_sampled=8, seed=1),
        {"sample_weight": NO_SAMPLE_WEIGHT},
    ),
    "SampledBCELoss": (
        lambda items: losses.SampledBCELoss(items, num_negatives=2, seed=1),
        {"sample_weight": NO_SAMPLE_WEIGHT},
    ),
    "GBCELoss": (
        lambda items: losses.GBCELoss(items, num_negatives=8, seed=1),
        {"sample_weight": NO_SAMPLE_WEIGHT},
    ),
}


def _orthogonal(n, seed):
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(n, n)))
    return (q * np.sign(np.diag(r))).astype("float32")


def _normal(*shape):
    return np.random.default_rng(0).normal(size=shape).astype("float32")


def _ids(*shape):
    return np.random.default_rng(0).integers(1, 30, size=shape).astype("int32")


_MASK = np.ones((4, 6), bool)
_MASK[:, :2] = False  # left padding

# name -> (make_layer(), one batch of inputs, output shape, {check: reason})
LAYER_CASES = {
    "SparseGradDense": (
        lambda: keras_sce.SparseGradDense(7, _orthogonal(5, 1), _orthogonal(7, 2),
                                          num_selected=6),
        _normal(4, 5), (None, 7), {},
    ),
    "SASRecBlock": (
        lambda: models.SASRecBlock(8, num_heads=2, dropout=0.0),
        (_normal(4, 6, 8), _MASK), (None, 6, 8), {},
    ),
    "SASRec": (
        lambda: models.SASRec(num_items=30, max_length=6, hidden_dim=8, num_blocks=1,
                              dropout=0.0),
        _ids(4, 6), (None, 6, 8), {},
    ),
}


@pytest.mark.parametrize("check", LOSS_CHECKS)
@pytest.mark.parametrize("name", sorted(LOSS_CASES))
def test_loss(name, check):
    make_loss, skip = LOSS_CASES[name]
    run_loss_test(make_loss, check=check, skip=skip)


@pytest.mark.parametrize("check", LAYER_CHECKS)
@pytest.mark.parametrize("name", sorted(LAYER_CASES))
def test_layer(name, check):
    make_layer, inputs, output_shape, skip = LAYER_CASES[name]
    run_layer_test(make_layer, inputs, expected_output_shape=output_shape, check=check,
                   skip=skip)


def _public_classes(module, base):
    return {
        name for name in getattr(module, "__all__", dir(module))
        if inspect.isclass(getattr(module, name)) and issubclass(getattr(module, name), base)
    }


def test_every_public_loss_and_layer_is_checked():
    assert _public_classes(losses, losses.ItemTableLoss) - {"ItemTableLoss"} == set(LOSS_CASES)
    layers = {"SparseGradDense"} | _public_classes(models, keras.layers.Layer)
    assert layers == set(LAYER_CASES)


def test_a_skipped_check_needs_a_reason_and_a_known_name():
    make_loss = LOSS_CASES["FullCrossEntropyLoss"][0]
    with pytest.raises(ValueError, match="needs a reason"):
        run_loss_test(make_loss, check="eager", skip={"sample_weight": ""})
    with pytest.raises(ValueError, match="Unknown check"):
        run_loss_test(make_loss, check="eager", skip={"speed": "too slow"})
    # A loss without sample weights that is not flagged fails the check, loudly.
    with pytest.raises(AssertionError, match="name 'sample_weight' in `skip`"):
        run_loss_test(make_loss, check="sample_weight")
    # All checks in one call: each one left out is reported with its reason.
    left_out = {name: "left out here" for name in LOSS_CHECKS if name != "symbolic"}
    with pytest.warns(UserWarning, match="'eager' not run: left out here"):
        run_loss_test(make_loss, skip=left_out)
