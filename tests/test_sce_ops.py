"""scalable_cross_entropy against the full-CE oracle and the properties of the method."""

import numpy as np
import pytest
import tensorflow as tf

from keras_sce import ops

N, C, D = 37, 1001, 17  # odd shapes on purpose


def _problem(seed=0, n=N, c=C, d=D, padding_rows=5, scale=1.0):
    rng = np.random.default_rng(seed)
    hidden = tf.constant(rng.normal(size=(n, d)) * scale, tf.float32)
    labels = rng.integers(1, c, size=n)
    labels[:padding_rows] = 0
    table = tf.Variable(rng.normal(size=(c, d)) * scale, dtype=tf.float32)
    return hidden, tf.constant(labels, tf.int32), table


def _numpy_full_ce_rows(hidden, labels, table, padding_id=0):
    h, y, w = (np.asarray(t, np.float64) for t in (hidden, labels, table))
    logits = h @ w.T
    if padding_id is not None:
        logits[:, padding_id] = -np.inf
    m = logits.max(1, keepdims=True)
    lse = np.log(np.exp(logits - m).sum(1)) + m[:, 0]
    rows = lse - logits[np.arange(len(y)), y.astype(int)]
    return rows


def _grads(fn, hidden, table):
    with tf.GradientTape() as tape:
        tape.watch(hidden)
        loss = fn()
    g_h, g_w = tape.gradient(loss, [hidden, table])
    return loss, g_h, g_w


@pytest.mark.parametrize("mix_x", [False, True], ids=["gauss", "mix_x"])
@pytest.mark.parametrize("chunk", [None, 300], ids=["dense", "chunked"])
def test_equals_full_ce_when_buckets_cover_everything(mix_x, chunk):
    hidden, labels, table = _problem()
    kwargs = dict(num_buckets=3, bucket_size_x=N, bucket_size_y=C - 1, mix_x=mix_x,
                  catalog_chunk_size=chunk, seed=1)
    sce, g_h, g_w = _grads(lambda: ops.scalable_cross_entropy(hidden, labels, table, **kwargs),
                           hidden, table)
    full, f_h, f_w = _grads(lambda: ops.full_cross_entropy(hidden, labels, table), hidden, table)
    ref = _numpy_full_ce_rows(hidden, labels, table)[labels.numpy() != 0].mean()
    np.testing.assert_allclose(full.numpy(), ref, rtol=1e-5)
    np.testing.assert_allclose(sce.numpy(), full.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(g_h.numpy(), f_h.numpy(), atol=1e-5)
    assert isinstance(g_w, tf.IndexedSlices)
    np.testing.assert_allclose(tf.convert_to_tensor(g_w).numpy(),
                               tf.convert_to_tensor(f_w).numpy(), atol=1e-5)


def test_target_counted_once_hand_case():
    # Three items, padding-free: SCE with every item in the bucket is exactly
    # log(sum_j exp(<x, w_j>)) - <x, w_y>, the target appearing once in the sum.
    table = tf.Variable([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    hidden = tf.constant([[0.5, 2.0]])
    labels = tf.constant([2])
    loss = ops.scalable_cross_entropy(hidden, labels, table, num_buckets=1, bucket_size_x=1,
                                      bucket_size_y=3, padding_id=None, seed=0)
    logits = np.array([0.5, 2.0, 2.5])
    expected = np.log(np.exp(logits).sum()) - 2.5
    np.testing.assert_allclose(loss.numpy(), expected, rtol=1e-6)


def test_per_row_lower_bound_and_monotone_in_bucket_size_y():
    hidden, labels, table = _problem(seed=3, scale=0.6)
    centers = tf.random.stateless_normal([4, D], seed=[7, 7])
    full_rows = _numpy_full_ce_rows(hidden, labels, table)
    previous = None
    for b_y in (8, 32, 128, 512, C - 1):
        _, details = ops.scalable_cross_entropy(
            hidden, labels, table, bucket_size_x=10, bucket_size_y=b_y, centers=centers,
            return_details=True)
        rows = details["row_loss"].numpy()
        covered = details["row_covered"].numpy()
        assert covered.any()
        assert np.all(rows[covered] <= full_rows[covered] + 1e-4)
        if previous is not None:
            assert np.all(rows[covered] >= previous[covered] - 1e-5)
        previous = rows
    # With every item, covered rows reach their full CE.
    np.testing.assert_allclose(rows[covered], full_rows[covered], rtol=1e-4)


def test_padding_rows_and_padding_item_never_contribute():
    hidden, labels, table = _problem(seed=4)
    kwargs = dict(num_buckets=4, bucket_size_x=12, bucket_size_y=50, seed=11)
    base = ops.scalable_cross_entropy(hidden, labels, table, **kwargs)
    pad = labels.numpy() == 0
    changed_hidden = tf.where(pad[:, None], 100.0 * tf.ones_like(hidden), hidden)
    np.testing.assert_allclose(
        ops.scalable_cross_entropy(changed_hidden, labels, table, **kwargs).numpy(),
        base.numpy(), rtol=1e-6)
    # A padding item aligned with everything would dominate every bucket if it were eligible.
    with tf.GradientTape() as tape:
        table.scatter_nd_update([[0]], [tf.reduce_mean(hidden, 0) * 1e3])
        loss = ops.scalable_cross_entropy(hidden, labels, table, **kwargs)
    grad = tf.convert_to_tensor(tape.gradient(loss, table)).numpy()
    assert np.isfinite(loss.numpy())
    np.testing.assert_array_equal(grad[0], 0.0)


def test_uncovered_rows_get_zero_gradient():
    hidden, labels, table = _problem(seed=5, padding_rows=0)
    with tf.GradientTape() as tape:
        tape.watch(hidden)
        loss, details = ops.scalable_cross_entropy(
            hidden, labels, table, num_buckets=1, bucket_size_x=4, bucket_size_y=20, seed=2,
            return_details=True)
    g = tape.gradient(loss, hidden).numpy()
    covered = details["row_covered"].numpy()
    assert covered.sum() == 4
    np.testing.assert_array_equal(g[~covered], 0.0)
    assert np.abs(g[covered]).sum() > 0
    np.testing.assert_allclose(details["covered_fraction"].numpy(), 4 / N, rtol=1e-6)


def test_all_padding_batch_is_zero_not_nan():
    hidden, _, table = _problem()
    labels = tf.zeros([N], tf.int32)
    with tf.GradientTape() as tape:
        tape.watch(hidden)
        loss = ops.scalable_cross_entropy(hidden, labels, table, bucket_size_y=16, seed=0)
    g_h, g_w = tape.gradient(loss, [hidden, table])
    assert loss.numpy() == 0.0
    assert np.all(np.isfinite(g_h.numpy())) and not np.any(g_h.numpy())
    assert not np.any(tf.convert_to_tensor(g_w).numpy())


def test_no_gradient_reaches_the_centres():
    hidden, labels, table = _problem()
    centers = tf.Variable(tf.random.normal([3, D]))
    with tf.GradientTape() as tape:
        loss = ops.scalable_cross_entropy(hidden, labels, table, bucket_size_x=8,
                                          bucket_size_y=32, centers=centers)
    assert tape.gradient(loss, centers) is None


def test_item_table_is_trained_including_negatives():
    hidden, labels, table = _problem(seed=6, padding_rows=0)
    before = table.numpy().copy()
    with tf.GradientTape() as tape:
        loss, details = ops.scalable_cross_entropy(
            hidden, labels, table, num_buckets=2, bucket_size_x=N, bucket_size_y=40, seed=3,
            return_details=True)
    grad = tape.gradient(loss, table)
    assert isinstance(grad, tf.IndexedSlices)
    table.scatter_sub(tf.IndexedSlices(0.5 * grad.values, grad.indices))
    changed = np.flatnonzero(np.abs(table.numpy() - before).sum(1) > 0)
    positives = set(labels.numpy().tolist())
    negatives_changed = set(changed.tolist()) - positives
    assert len(negatives_changed) > 10
    assert len(changed) < C  # sparse: not the whole table


def test_eager_function_and_xla_agree():
    hidden, labels, table = _problem(seed=7)
    centers = tf.random.stateless_normal([5, D], seed=[1, 2])

    def f(h, y):
        return ops.scalable_cross_entropy(h, y, table, bucket_size_x=9, bucket_size_y=64,
                                          catalog_chunk_size=256, centers=centers)

    eager = f(hidden, labels)
    graph = tf.function(f)(hidden, labels)
    xla = tf.function(f, jit_compile=True)(hidden, labels)
    np.testing.assert_allclose(graph.numpy(), eager.numpy(), rtol=1e-5)
    np.testing.assert_allclose(xla.numpy(), eager.numpy(), rtol=1e-5)


def test_dynamic_batch_dimension_in_graph():
    _, _, table = _problem()
    f = tf.function(
        lambda h, y: ops.scalable_cross_entropy(h, y, table, bucket_size_y=32, seed=0),
        input_signature=[tf.TensorSpec([None, None, D]), tf.TensorSpec([None, None], tf.int32)],
    )
    for b in (3, 8):
        h = tf.random.normal([b, 6, D])
        y = tf.random.uniform([b, 6], 1, C, dtype=tf.int32)
        assert np.isfinite(f(h, y).numpy())


def test_seed_determinism_and_stream_freshness():
    hidden, labels, table = _problem(seed=8)
    kw = dict(num_buckets=3, bucket_size_x=6, bucket_size_y=20)
    a = ops.scalable_cross_entropy(hidden, labels, table, seed=5, **kw)
    b = ops.scalable_cross_entropy(hidden, labels, table, seed=5, **kw)
    assert a.numpy() == b.numpy()
    s1, s2 = ops.SeedStream(5), ops.SeedStream(5)
    first = [ops.scalable_cross_entropy(hidden, labels, table, seed=s1.next(), **kw).numpy()
             for _ in range(3)]
    second = [ops.scalable_cross_entropy(hidden, labels, table, seed=s2.next(), **kw).numpy()
              for _ in range(3)]
    assert first == second
    assert len(set(first)) > 1  # fresh centres at every call


def test_int64_ids_from_tf_data_and_rank3():
    _, _, table = _problem()
    ds = tf.data.Dataset.from_tensor_slices(
        (tf.random.normal([8, 5, D]), tf.random.uniform([8, 5], 0, C, dtype=tf.int64))
    ).batch(4)
    for h, y in ds:
        assert y.dtype == tf.int64
        loss = ops.scalable_cross_entropy(h, y, table, bucket_size_y=30, seed=0)
        assert loss.dtype == tf.float32 and np.isfinite(loss.numpy())


def test_sample_weight():
    hidden, labels, table = _problem(seed=9, padding_rows=0)
    centers = tf.random.stateless_normal([4, D], seed=[3, 3])
    kw = dict(bucket_size_x=N, bucket_size_y=C - 1, centers=centers)
    w = np.zeros(N, "float32")
    w[:10] = 2.0
    weighted = ops.scalable_cross_entropy(hidden, labels, table, sample_weight=w, **kw)
    rows = _numpy_full_ce_rows(hidden, labels, table)
    np.testing.assert_allclose(weighted.numpy(), rows[:10].mean(), rtol=1e-5)


def test_bfloat16_hidden_gives_float32_loss():
    hidden, labels, table = _problem()
    loss = ops.scalable_cross_entropy(tf.cast(hidden, tf.bfloat16), labels, table,
                                      bucket_size_y=32, seed=0)
    assert loss.dtype == tf.float32 and np.isfinite(loss.numpy())


# -- errors ---------------------------------------------------------------------------


def test_float_ids_rejected():
    hidden, labels, table = _problem()
    with pytest.raises(TypeError, match="integer item ids"):
        ops.scalable_cross_entropy(hidden, tf.cast(labels, tf.float32), table, seed=0)


def test_width_mismatch_rejected():
    hidden, labels, table = _problem()
    with pytest.raises(ValueError, match="does not match the item table width"):
        ops.scalable_cross_entropy(hidden[:, :5], labels, table, seed=0)


def test_padding_id_outside_table_rejected():
    hidden, labels, table = _problem()
    with pytest.raises(ValueError, match="padding_id"):
        ops.scalable_cross_entropy(hidden, labels, table, padding_id=C, seed=0)


def test_bucket_sizes_are_clamped_with_a_warning():
    hidden, labels, table = _problem(c=50)
    labels = tf.minimum(labels, 49)
    with pytest.warns(UserWarning, match="bucket_size_y"):
        ops.scalable_cross_entropy(hidden, labels, table, bucket_size_y=500, seed=0)
    with pytest.warns(UserWarning, match="bucket_size_x"):
        ops.scalable_cross_entropy(hidden, labels, table, bucket_size_x=500,
                                   bucket_size_y=10, seed=0)


def test_out_of_range_ids_raise_eagerly_and_in_graph():
    hidden, labels, table = _problem()
    bad = tf.tensor_scatter_nd_update(labels, [[7]], [C + 3])
    with pytest.raises(tf.errors.InvalidArgumentError, match="outside"):
        ops.scalable_cross_entropy(hidden, bad, table, seed=0)
    with pytest.raises(tf.errors.InvalidArgumentError, match="outside"):
        tf.function(lambda: ops.full_cross_entropy(hidden, -tf.abs(bad) - 1, table))()


def test_out_of_range_ids_make_the_xla_loss_nan_not_silent():
    hidden, labels, table = _problem()
    bad = tf.tensor_scatter_nd_update(labels, [[7]], [C + 3])
    f = tf.function(
        lambda y: ops.scalable_cross_entropy(hidden, y, table, bucket_size_y=16, seed=0),
        jit_compile=True,
    )
    assert np.isfinite(f(labels).numpy())
    assert np.isnan(f(bad).numpy())
