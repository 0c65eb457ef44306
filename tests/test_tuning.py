"""keras_sce.tuning: SCE bucket sizes for a memory budget, checked on compiled programs."""

from __future__ import annotations

import pytest

from keras_sce.tuning import MAX_BUCKET_SIZE_Y, authors_rule, sce_memory_bytes, suggest_buckets

MIB = 2**20


@pytest.mark.parametrize(
    "num_rows,expected", [(1, 2), (1024, 64), (4096, 128), (51_200, 452)], ids=str
)
def test_authors_rule(num_rows, expected):
    assert authors_rule(num_rows) == expected


@pytest.mark.parametrize(
    "num_rows,num_items,budget_mib",
    [(1024, 100_002, 64), (1024, 100_002, 1024), (4096, 10_002, 128), (1024, 1_000_002, 80)],
    ids=lambda v: str(v),
)
def test_choice_fits_and_the_next_power_of_two_does_not(num_rows, num_items, budget_mib):
    budget = budget_mib * MIB
    n_b, b_x, b_y = suggest_buckets(num_rows, num_items, budget)
    assert n_b == b_x == authors_rule(num_rows)
    assert sce_memory_bytes(num_rows, num_items, n_b, b_x, b_y) <= budget
    cap = min(MAX_BUCKET_SIZE_Y, num_items - 1)
    assert b_y == cap or sce_memory_bytes(num_rows, num_items, n_b, b_x, 2 * b_y) > budget


def test_b_y_is_capped_by_the_catalogue_and_by_the_option():
    assert suggest_buckets(1024, 302, 10**9)[2] == 301  # C - 1 real items
    assert suggest_buckets(1024, 40, 10**9)[2] == 39  # below the smallest power
    assert suggest_buckets(1024, 10**6, 10**10, max_bucket_size_y=1000)[2] == 1000


def test_more_budget_never_fewer_items_per_bucket():
    sizes = [suggest_buckets(2048, 500_002, mib * MIB)[2] for mib in (96, 160, 320, 640, 1280)]
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]


def test_unchunked_search_costs_the_whole_projection():
    chunked = sce_memory_bytes(1024, 1_000_002, 64, 64, 256, chunk_size=65_536)
    full = sce_memory_bytes(1024, 1_000_002, 64, 64, 256, chunk_size=None)
    assert full > 64 * 1_000_002 * 4 > chunked


def test_budget_below_the_minimum_raises_with_the_needed_size():
    with pytest.raises(ValueError, match=r"memory_budget_bytes.*needs [0-9,]+ bytes"):
        suggest_buckets(1024, 1_000_002, 8 * MIB)


@pytest.mark.parametrize(
    "kwargs,name",
    [(dict(num_rows=0), "num_rows"), (dict(num_items=1), "num_items"),
     (dict(memory_budget_bytes=-1), "memory_budget_bytes"), (dict(dim=0), "dim"),
     (dict(chunk_size=0), "chunk_size"), (dict(max_bucket_size_y=0), "max_bucket_size_y")],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_bad_arguments_are_named(kwargs, name):
    args = dict(num_rows=1024, num_items=10_002, memory_budget_bytes=64 * MIB)
    args.update(kwargs)
    with pytest.raises(ValueError, match=name):
        suggest_buckets(**args)


@pytest.mark.slow
def test_compiled_sce_peak_respects_the_budget():
    """XLA's buffer assignment of the compiled SCE loss + gradient under the chosen
    buckets (inputs excluded) stays within the budget, and the model is not wildly
    pessimistic (it is fitted to these programs)."""
    from benchmarks.large_vocab_buckets import grid_configs, measure

    grid = [(1024, 100_002, 64), (1024, 100_002, 256), (4096, 10_002, 128),
            (2048, 300_002, 96)]
    for row in measure(grid_configs(grid)):
        assert row["measured_bytes"] <= row["budget_bytes"], row
        assert row["measured_bytes"] <= row["predicted_bytes"] < 1.6 * row["measured_bytes"], row
