"""chunked_cross_entropy equals full_cross_entropy (values and gradients), never N x C."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from keras_sce.ops import chunked_cross_entropy, full_cross_entropy
from keras_sce.ops.cross_entropy import auto_chunk_size


def _problem(n, c, d, seed=0, pad_fraction=0.2, padding_id=0):
    rng = np.random.default_rng(seed)
    table = rng.normal(size=(c, d)).astype(np.float32)
    hidden = rng.normal(size=(n, d)).astype(np.float32)
    if padding_id is None:
        labels = rng.integers(0, c, size=n).astype(np.int32)
    else:  # any real item, then some rows turned into padding
        labels = rng.integers(0, c - 1, size=n).astype(np.int32)
        labels[labels >= padding_id] += 1
        labels[rng.random(n) < pad_fraction] = padding_id
    return hidden, labels, table


def _numpy_ce(hidden, labels, table, padding_id, weights=None):
    """float64 oracle: softmax over every item but the padding row, weighted mean."""
    x, w = hidden.astype(np.float64), table.astype(np.float64)
    logits = x @ w.T
    if padding_id is not None:
        logits[:, padding_id] = -np.inf
    m = logits.max(axis=1, keepdims=True)
    lse = (m + np.log(np.exp(logits - m).sum(axis=1, keepdims=True)))[:, 0]
    valid = np.ones(len(labels), bool) if padding_id is None else labels != padding_id
    weight = valid.astype(np.float64) * (1.0 if weights is None else weights)
    safe = np.where(valid, labels, 0 if padding_id != 0 else 1)
    per_row = lse - logits[np.arange(len(labels)), safe]
    per_row = np.where(weight > 0, per_row, 0.0)
    return (weight * per_row).sum() / weight.sum()


def _value_and_grads(fn, hidden, labels, table, **kwargs):
    h = tf.constant(hidden)
    w = tf.Variable(table)
    with tf.GradientTape() as tape:
        tape.watch(h)
        loss = fn(h, tf.constant(labels), w, **kwargs)
    gh, gw = tape.gradient(loss, [h, w])
    return float(loss), np.asarray(gh), np.asarray(tf.convert_to_tensor(gw))


CASES = [
    # (n, c, d, chunk_size, padding_id): chunks that divide C, that don't, chunk > C,
    # chunk = 1, padding row inside the last partial chunk, no padding row.
    pytest.param(37, 1001, 17, 100, 0, id="odd-chunk-not-dividing"),
    pytest.param(37, 1001, 17, 143, 0, id="chunk-divides-C"),
    pytest.param(16, 50, 8, 1, 0, id="chunk-1"),
    pytest.param(16, 50, 8, 500, 0, id="chunk-larger-than-C"),
    pytest.param(23, 301, 9, 64, 300, id="padding-last-row-partial-chunk"),
    pytest.param(23, 301, 9, 64, None, id="no-padding-row"),
    pytest.param(11, 257, 5, None, 0, id="auto-chunk"),
]


@pytest.mark.parametrize("n,c,d,chunk,padding_id", CASES)
def test_equals_full_ce_values_and_gradients(n, c, d, chunk, padding_id):
    hidden, labels, table = _problem(n, c, d, seed=n + c, padding_id=padding_id)
    kw = dict(padding_id=padding_id)
    full = _value_and_grads(full_cross_entropy, hidden, labels, table, **kw)
    chunked = _value_and_grads(chunked_cross_entropy, hidden, labels, table, chunk_size=chunk,
                               **kw)
    np.testing.assert_allclose(chunked[0], _numpy_ce(hidden, labels, table, padding_id),
                               rtol=1e-5)
    np.testing.assert_allclose(chunked[0], full[0], rtol=1e-5)
    np.testing.assert_allclose(chunked[1], full[1], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(chunked[2], full[2], rtol=1e-4, atol=1e-6)
    if padding_id is not None:
        # The padding row is never a negative and padding rows give no gradient.
        np.testing.assert_array_equal(chunked[2][padding_id], 0.0)
        np.testing.assert_array_equal(chunked[1][labels == padding_id], 0.0)


def test_gradient_matches_float64_finite_differences():
    hidden, labels, table = _problem(6, 29, 4, seed=3)
    hidden, table = hidden.astype(np.float64), table.astype(np.float64)
    _, gh, gw = _value_and_grads(chunked_cross_entropy, hidden, labels, table, chunk_size=7)
    eps = 1e-6
    for array, grad in ((hidden, gh), (table, gw)):
        for idx in [(0, 0), (2, 3), (5, 1)] if array is hidden else [(0, 1), (3, 2), (28, 0)]:
            plus, minus = array.copy(), array.copy()
            plus[idx] += eps
            minus[idx] -= eps
            args_p = (plus, table) if array is hidden else (hidden, plus)
            args_m = (minus, table) if array is hidden else (hidden, minus)
            fd = (_numpy_ce(args_p[0], labels, args_p[1], 0)
                  - _numpy_ce(args_m[0], labels, args_m[1], 0)) / (2 * eps)
            np.testing.assert_allclose(grad[idx], fd, rtol=1e-5, atol=1e-8)


def test_sample_weight_and_rank3_inputs():
    hidden, labels, table = _problem(24, 97, 6, seed=5)
    weights = np.random.default_rng(1).uniform(0.0, 2.0, size=24).astype(np.float32)
    weights[:3] = 0.0
    h3, y3, w3 = hidden.reshape(4, 6, 6), labels.reshape(4, 6), weights.reshape(4, 6)
    full = _value_and_grads(full_cross_entropy, h3, y3, table, sample_weight=w3)
    chunked = _value_and_grads(chunked_cross_entropy, h3, y3, table, sample_weight=w3,
                               chunk_size=10)
    np.testing.assert_allclose(chunked[0], _numpy_ce(hidden, labels, table, 0, weights),
                               rtol=1e-5)
    np.testing.assert_allclose(chunked[0], full[0], rtol=1e-5)
    np.testing.assert_allclose(chunked[1], full[1], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(chunked[2], full[2], rtol=1e-4, atol=1e-6)
    assert chunked[1].shape == (4, 6, 6)


@pytest.mark.parametrize("jit", [False, True], ids=["tf.function", "xla"])
def test_graph_and_xla_match_eager(jit):
    hidden, labels, table = _problem(19, 203, 7, seed=9)
    eager = _value_and_grads(chunked_cross_entropy, hidden, labels, table, chunk_size=50)
    h, y, w = tf.constant(hidden), tf.constant(labels), tf.Variable(table)

    @tf.function(jit_compile=jit)
    def step():
        with tf.GradientTape() as tape:
            tape.watch(h)
            loss = chunked_cross_entropy(h, y, w, chunk_size=50)
        return (loss,) + tuple(tape.gradient(loss, [h, w]))

    loss, gh, gw = step()
    np.testing.assert_allclose(float(loss), eager[0], rtol=1e-5)
    np.testing.assert_allclose(gh.numpy(), eager[1], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(gw.numpy(), eager[2], rtol=1e-4, atol=1e-6)


def test_no_n_by_c_tensor_in_the_graph():
    """No op of the forward+backward graph outputs a tensor with N x C elements."""
    n, c, d, chunk = 64, 4099, 8, 256
    h = tf.TensorSpec([n, d], tf.float32)
    y = tf.TensorSpec([n], tf.int32)
    w = tf.TensorSpec([c, d], tf.float32)

    def step(h, y, w):
        with tf.GradientTape() as tape:
            tape.watch([h, w])
            loss = chunked_cross_entropy(h, y, w, chunk_size=chunk)
        return tape.gradient(loss, [h, w])

    graph = tf.function(step).get_concrete_function(h, y, w).graph
    largest = 0
    for fn_graph in [graph] + [f.graph for f in _nested_graphs(graph)]:
        for op in fn_graph.get_operations():
            for out in op.outputs:
                if out.shape.is_fully_defined():
                    largest = max(largest, out.shape.num_elements())
    assert largest < n * c
    assert largest >= n * chunk  # the chunk logits exist (the walk saw the loop bodies)


def _nested_graphs(graph):
    """Function graphs of while loops etc. reachable from ``graph``."""
    found = []
    for fn in graph._functions.values():  # noqa: SLF001 - test-only introspection
        found.append(fn)
    return found


def test_all_padding_gives_zero_not_nan():
    hidden, labels, table = _problem(8, 40, 4)
    labels[:] = 0
    loss, gh, gw = _value_and_grads(chunked_cross_entropy, hidden, labels, table, chunk_size=9)
    assert loss == 0.0
    assert np.all(gh == 0) and np.all(gw == 0)


def test_table_gradient_is_dense_and_reaches_every_non_padding_row():
    hidden, labels, table = _problem(5, 30, 4, pad_fraction=0.0)
    w = tf.Variable(table)
    with tf.GradientTape() as tape:
        loss = chunked_cross_entropy(hidden, labels, w, chunk_size=8)
    grad = tape.gradient(loss, w)
    assert not isinstance(grad, tf.IndexedSlices)
    row_norms = np.linalg.norm(grad.numpy(), axis=1)
    assert row_norms[0] == 0.0 and np.all(row_norms[1:] > 0)


def test_auto_chunk_size():
    assert auto_chunk_size(51_200, 10**7) == 327
    assert auto_chunk_size(1024, 10**7) == 16_384
    assert auto_chunk_size(1, 10**7) == 65_536
    assert auto_chunk_size(10**9, 10**7) == 128
    assert auto_chunk_size(1024, 1000) == 1000
    assert auto_chunk_size(None, None) == 4096


def test_bad_input_raises_clear_errors():
    hidden, labels, table = _problem(8, 40, 4)
    with pytest.raises(ValueError, match="chunk_size"):
        chunked_cross_entropy(hidden, labels, table, chunk_size=0)
    with pytest.raises(ValueError, match="chunk_size"):
        chunked_cross_entropy(hidden, labels, table, chunk_size=2.5)
    with pytest.raises(TypeError, match="integer item ids"):
        chunked_cross_entropy(hidden, labels.astype(np.float32), table)
    with pytest.raises(ValueError, match="does not match the item table width"):
        chunked_cross_entropy(hidden, labels, table[:, :3])
    with pytest.raises(ValueError, match="not a row of the item table"):
        chunked_cross_entropy(hidden, labels, table, padding_id=40)
    with pytest.raises(ValueError, match="only the padding row"):
        chunked_cross_entropy(hidden, np.zeros(8, np.int32), table[:1])
    bad = labels.copy()
    bad[2] = 40
    with pytest.raises(tf.errors.InvalidArgumentError, match="outside"):
        chunked_cross_entropy(hidden, bad, table)
    xla = tf.function(lambda: chunked_cross_entropy(hidden, bad, table), jit_compile=True)
    assert np.isnan(float(xla()))


def test_numpy_table_accepted_by_both_exact_losses():
    hidden, labels, table = _problem(8, 40, 4)
    full = full_cross_entropy(hidden, labels, table)
    chunked = chunked_cross_entropy(hidden, labels, table, chunk_size=7)
    np.testing.assert_allclose(float(chunked), float(full), rtol=1e-5)
    np.testing.assert_allclose(float(full), _numpy_ce(hidden, labels, table, 0), rtol=1e-5)
