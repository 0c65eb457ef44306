"""Tests of keras_sce.sparsegrad.budget: the LoRA-equivalent budget and its arguments."""

from __future__ import annotations

import pytest

from keras_sce import sparsegrad
from keras_sce.sparsegrad.budget import budget_arguments


@pytest.mark.parametrize(
    "rank, shape, expected",
    [(7, (768, 3072), 7 * (768 + 3072)), (1, (2, 3), 5), (5, (2, 3), 6)],
    ids=["bert_mlp", "small", "capped_at_the_kernel"],
)
def test_lora_equivalent_budget(rank, shape, expected):
    assert sparsegrad.lora_equivalent_budget(rank, *shape) == expected


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        ({}, {}),
        ({"rank": 2}, {"num_selected": 2 * (4 + 6)}),
        ({"rank": {"up": 1, "down": 3}}, {"num_selected": 10}),
        ({"num_selected": {"up": 9}}, {"num_selected": 9}),
        ({"density": 0.5}, {"density": 0.5}),
    ],
    ids=["default", "rank", "rank_per_group", "k_per_group", "density"],
)
def test_budget_arguments(kwargs, expected):
    assert budget_arguments((4, 6), "up", **kwargs) == expected


def test_budget_arguments_errors():
    with pytest.raises(ValueError, match="at most one of num_selected, density and rank"):
        budget_arguments((4, 6), "up", num_selected=3, rank=1)
    with pytest.raises(ValueError, match="No budget given for group 'up'"):
        budget_arguments((4, 6), "up", density={"down": 0.1})
