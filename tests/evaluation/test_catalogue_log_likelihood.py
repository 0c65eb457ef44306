"""catalogue_log_likelihood against a dense NumPy log-softmax over the same candidates."""

import numpy as np
import pytest

from keras_sce.evaluation import NonFiniteScoresError, catalogue_log_likelihood


def dense_log_likelihood(queries, table, targets, exclude, padding_id):
    scores = queries.astype(np.float64) @ table.astype(np.float64).T
    if padding_id is not None:
        scores[:, padding_id] = -np.inf
    for row, ids in enumerate(exclude):
        for item in ids:
            if item >= 0 and item != targets[row]:
                scores[row, item] = -np.inf
    top = scores.max(axis=1, keepdims=True)
    log_z = top[:, 0] + np.log(np.exp(scores - top).sum(axis=1))
    return scores[np.arange(len(targets)), targets] - log_z


def problem(seed, n=37, num_items=53, dim=6, history=5, padding_id=0):
    rng = np.random.default_rng(seed)
    queries = rng.normal(size=(n, dim)).astype("float32")
    table = (2 * rng.normal(size=(num_items, dim))).astype("float32")
    low = 0 if padding_id is None else 1
    targets = rng.integers(low, num_items, size=n)
    exclude = rng.integers(-1, num_items, size=(n, history))
    exclude[::3, 0] = targets[::3]  # the target in its own history: never excluded
    exclude[1::4, 1] = exclude[1::4, 2]  # duplicates
    return queries, table, targets, exclude


@pytest.mark.parametrize(
    "chunk_size,batch_size,padding_id",
    [(8, 5, 0), (53, 1024, 0), (1000, 7, 0), (16, 16, None), (13, 4, 52)],
    ids=["small-chunks", "one-chunk", "chunk-over-catalogue", "no-padding", "padding-last"],
)
def test_matches_dense_log_softmax_with_exclusions(chunk_size, batch_size, padding_id):
    queries, table, targets, exclude = problem(1, padding_id=padding_id)
    if padding_id == 52:
        targets = np.where(targets == 52, 1, targets)
    got = catalogue_log_likelihood(queries, table, targets, exclude=exclude,
                                   chunk_size=chunk_size, batch_size=batch_size,
                                   padding_id=padding_id)
    want = dense_log_likelihood(queries, table, targets, exclude, padding_id)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert got.shape == (37,) and np.all(got <= 0)


def test_exclusion_raises_the_likelihood_and_no_exclusion_is_the_plain_softmax():
    queries, table, targets, exclude = problem(2)
    plain = catalogue_log_likelihood(queries, table, targets, chunk_size=10)
    np.testing.assert_allclose(plain, dense_log_likelihood(queries, table, targets,
                                                          np.full((37, 1), -1), 0),
                               rtol=1e-5, atol=1e-5)
    excluded = catalogue_log_likelihood(queries, table, targets, exclude=exclude, chunk_size=10)
    assert np.all(excluded >= plain - 1e-6) and np.any(excluded > plain + 1e-3)


def test_float64_queries_are_computed_in_float64():
    queries, table, targets, exclude = problem(3)
    got = catalogue_log_likelihood(queries.astype(np.float64), table.astype(np.float64),
                                   targets, exclude=exclude, chunk_size=9)
    want = dense_log_likelihood(queries, table, targets, exclude, 0)
    np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-11)


def test_large_scores_do_not_overflow():
    queries, table, targets, _ = problem(4)
    got = catalogue_log_likelihood(30 * queries, table, targets, chunk_size=8)
    want = dense_log_likelihood(30 * queries, table, targets, np.full((37, 1), -1), 0)
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize(
    "change,message",
    [
        (dict(targets=np.array([0, 1, 2])), "padding id"),
        (dict(targets=np.array([1, 2, 9])), "outside"),
        (dict(targets=np.array([1, 2])), "one per query"),
        (dict(targets=np.array([1.0, 2.0, 3.0])), "integer ids"),
        (dict(exclude=np.zeros((2, 1), int)), "exclude"),
        (dict(queries=np.zeros((3, 3), "float32")), "agree on d"),
        (dict(padding_id=7), "padding_id"),
        (dict(chunk_size=0), "chunk_size"),
    ],
    ids=["padding-target", "target-outside", "target-count", "float-targets", "exclude-rows",
         "dim-mismatch", "padding-outside", "chunk-size"],
)
def test_bad_inputs_raise_naming_the_argument(change, message):
    args = dict(queries=np.zeros((3, 2), "float32"), item_table=np.ones((5, 2), "float32"),
                targets=np.array([1, 2, 3]))
    options = {k: change.pop(k) for k in list(change) if k in ("exclude", "padding_id",
                                                                "chunk_size")}
    args.update(change)
    with pytest.raises(ValueError, match=message):
        catalogue_log_likelihood(args["queries"], args["item_table"], args["targets"],
                                 **options)


def test_non_finite_scores_raise():
    table = np.ones((5, 2), "float32")
    table[3, 0] = np.nan
    with pytest.raises(NonFiniteScoresError, match="NaN or infinite"):
        catalogue_log_likelihood(np.ones((2, 2), "float32"), table, np.array([1, 2]))


def test_no_rows_by_catalogue_tensor_in_the_compiled_program():
    import re

    import tensorflow as tf

    from keras_sce.evaluation.perplexity import _stream_excluding

    n, num_items, dim, chunk, history = 64, 5003, 8, 256, 40
    hlo = tf.function(_stream_excluding, jit_compile=True).experimental_get_compiler_ir(
        tf.random.normal([n, dim]), tf.random.normal([num_items, dim]), tf.zeros([num_items]),
        tf.ones([n], tf.int32), tf.constant(chunk), tf.constant(0),
        tf.ones([n, history], tf.int32),
    )(stage="optimized_hlo")
    shapes = re.findall(r"\b(?:f32|f64|s32|s64|pred)\[([0-9,]+)\]", hlo)
    sizes = [int(np.prod([int(x) for x in dims.split(",")])) for dims in shapes]
    assert max(sizes) < n * num_items
    assert max(sizes) <= max(num_items * dim, n * chunk, n * history * 2)
