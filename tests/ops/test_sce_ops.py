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
                  chunk_size=chunk, seed=1)
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


@pytest.mark.parametrize("mix_x", [False, True], ids=["gauss", "mix_x"])
def test_padding_rows_and_padding_item_never_contribute(mix_x):
    hidden, labels, table = _problem(seed=4)
    kwargs = dict(num_buckets=4, bucket_size_x=12, bucket_size_y=50, mix_x=mix_x, seed=11)
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
                                          chunk_size=256, centers=centers)

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


# -- review-driven checks: numerics, dtypes, weights ---------------------------------


def test_float64_finite_differences_with_partial_buckets_and_padding():
    hidden, labels, table = _problem(seed=10, n=9, c=40, d=5, padding_rows=2)
    hidden = tf.cast(hidden, tf.float64)
    table = tf.Variable(tf.cast(table, tf.float64))
    centers = tf.random.stateless_normal([3, 5], seed=[4, 4], dtype=tf.float64)
    kw = dict(bucket_size_x=4, bucket_size_y=12, centers=centers)

    def f(h, w):
        return ops.scalable_cross_entropy(h, labels, w, **kw)

    with tf.GradientTape() as tape:
        tape.watch(hidden)
        loss = f(hidden, table)
    g_h, g_w = tape.gradient(loss, [hidden, table])
    assert loss.dtype == tf.float64
    eps = 1e-6
    h0 = hidden.numpy()
    for i, j in [(2, 0), (4, 3), (8, 1), (0, 2)]:
        hp, hm = h0.copy(), h0.copy()
        hp[i, j] += eps
        hm[i, j] -= eps
        numeric = (f(tf.constant(hp), table) - f(tf.constant(hm), table)).numpy() / (2 * eps)
        np.testing.assert_allclose(g_h.numpy()[i, j], numeric, atol=1e-7)
    w0 = table.numpy()
    dense_gw = tf.convert_to_tensor(g_w).numpy()
    for i, j in [(int(labels[3]), 1), (7, 2), (0, 0)]:
        wp, wm = w0.copy(), w0.copy()
        wp[i, j] += eps
        wm[i, j] -= eps
        numeric = (f(hidden, tf.constant(wp)) - f(hidden, tf.constant(wm))).numpy() / (2 * eps)
        np.testing.assert_allclose(dense_gw[i, j], numeric, atol=1e-7)


@pytest.mark.parametrize("loss_fn", ["sce", "full"])
def test_per_sequence_weights_weigh_every_position(loss_fn):
    # B == L on purpose: a naive broadcast would weigh positions instead of sequences.
    rng = np.random.default_rng(11)
    hidden = tf.constant(rng.normal(size=(4, 4, D)), tf.float32)
    labels = tf.constant(rng.integers(1, C, size=(4, 4)), tf.int32)
    _, _, table = _problem(seed=11)
    w = np.array([1.0, 0.0, 3.0, 0.5], "float32")
    kw = dict(num_buckets=1, bucket_size_x=16, bucket_size_y=C - 1, seed=0)
    fn = (lambda **k: ops.scalable_cross_entropy(hidden, labels, table, **k, **kw)) if (
        loss_fn == "sce") else (lambda **k: ops.full_cross_entropy(hidden, labels, table, **k))
    rows = _numpy_full_ce_rows(tf.reshape(hidden, [-1, D]), tf.reshape(labels, [-1]), table)
    expected = (np.repeat(w, 4) * rows).sum() / (4 * w.sum())
    np.testing.assert_allclose(fn(sample_weight=w).numpy(), expected, rtol=1e-5)
    with pytest.raises(ValueError, match="sample_weight"):
        fn(sample_weight=np.ones(3, "float32"))


def test_int64_ids_beyond_int32_are_reported_not_wrapped():
    hidden, labels, table = _problem()
    bad = tf.cast(labels, tf.int64) + tf.one_hot(3, N, dtype=tf.int64) * (2**32)
    for fn in (ops.scalable_cross_entropy, ops.full_cross_entropy):
        with pytest.raises(tf.errors.InvalidArgumentError, match="outside"):
            fn(hidden, bad, table)


def test_float64_inputs_with_padding_work():
    hidden, labels, table = _problem()
    loss = ops.scalable_cross_entropy(tf.cast(hidden, tf.float64), labels,
                                      tf.cast(table, tf.float64), bucket_size_y=32, seed=0)
    assert loss.dtype == tf.float64 and np.isfinite(loss.numpy())


@pytest.mark.parametrize("mix_x", [False, True], ids=["gauss", "mix_x"])
def test_nan_at_padding_positions_stays_out(mix_x):
    hidden, labels, table = _problem(seed=12)
    pad = labels.numpy() == 0
    poisoned = tf.where(pad[:, None], float("nan") * tf.ones_like(hidden), hidden)
    kw = dict(num_buckets=4, bucket_size_x=12, bucket_size_y=50, mix_x=mix_x, seed=3)
    with tf.GradientTape() as tape:
        tape.watch(poisoned)
        loss = ops.scalable_cross_entropy(poisoned, labels, table, **kw)
    g_h, g_w = tape.gradient(loss, [poisoned, table])
    clean = ops.scalable_cross_entropy(hidden, labels, table, **kw)
    np.testing.assert_allclose(loss.numpy(), clean.numpy(), rtol=1e-6)
    assert np.all(np.isfinite(g_h.numpy())) and np.all(np.isfinite(g_w.values.numpy()))
    full = ops.full_cross_entropy(poisoned, labels, table)
    assert np.isfinite(full.numpy())


@pytest.mark.parametrize("mix_x", [False, True], ids=["gauss", "mix_x"])
def test_nan_in_real_inputs_shows_in_the_loss(mix_x):
    hidden, labels, table = _problem(seed=13)
    kw = dict(num_buckets=4, bucket_size_x=N, bucket_size_y=C - 1, mix_x=mix_x, seed=3)
    bad_table = tf.Variable(tf.tensor_scatter_nd_update(
        tf.convert_to_tensor(table), [[17]], [tf.fill([D], float("nan"))]))
    assert np.isnan(ops.scalable_cross_entropy(hidden, labels, bad_table, **kw).numpy())
    bad_hidden = tf.tensor_scatter_nd_update(hidden, [[20]], [tf.fill([D], float("nan"))])
    assert np.isnan(ops.scalable_cross_entropy(bad_hidden, labels, table, **kw).numpy())


def test_xla_gradients_and_seeded_paths_agree_with_eager():
    hidden, labels, table = _problem(seed=14)
    centers = tf.random.stateless_normal([5, D], seed=[1, 3])

    def grads(h, y, **kw):
        with tf.GradientTape() as tape:
            tape.watch(h)
            loss = ops.scalable_cross_entropy(h, y, table, bucket_size_x=9, bucket_size_y=64,
                                              chunk_size=256, **kw)
        g_h, g_w = tape.gradient(loss, [h, table])
        return loss, g_h, tf.convert_to_tensor(g_w)

    eager = grads(hidden, labels, centers=centers)
    xla = tf.function(lambda h, y: grads(h, y, centers=centers), jit_compile=True)(
        hidden, labels)
    for a, b in zip(eager, xla, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-6)
    for mix_x in (False, True):
        seeded = tf.function(lambda h, y, m=mix_x: grads(h, y, mix_x=m, seed=5),
                             jit_compile=True)(hidden, labels)
        assert all(np.all(np.isfinite(t.numpy())) for t in seeded)


def test_dynamic_int64_and_bfloat16_agree_with_the_plain_path():
    _, _, table = _problem()
    rng = np.random.default_rng(15)
    h = tf.constant(rng.normal(size=(3, 6, D)), tf.float32)
    y = tf.constant(rng.integers(0, C, size=(3, 6)), tf.int32)
    centers = tf.random.stateless_normal([4, D], seed=[2, 2])
    kw = dict(bucket_size_x=6, bucket_size_y=32, centers=centers)
    plain = ops.scalable_cross_entropy(h, y, table, **kw).numpy()
    dynamic = tf.function(
        lambda a, b: ops.scalable_cross_entropy(a, b, table, **kw),
        input_signature=[tf.TensorSpec([None, None, D]), tf.TensorSpec([None, None], tf.int32)],
    )(h, y).numpy()
    int64 = ops.scalable_cross_entropy(h, tf.cast(y, tf.int64), table, **kw).numpy()
    bf16 = ops.scalable_cross_entropy(tf.cast(h, tf.bfloat16), y, table, **kw).numpy()
    np.testing.assert_allclose(dynamic, plain, rtol=1e-6)
    assert int64 == plain
    np.testing.assert_allclose(bf16, plain, rtol=2e-2)


def test_table_with_only_the_padding_row_is_refused():
    with pytest.raises(ValueError, match="no items"):
        ops.scalable_cross_entropy(tf.ones([2, 3]), tf.constant([0, 0]), tf.Variable(
            tf.ones([1, 3])), seed=0)


def test_keras_variable_table_is_accepted_and_trained():
    import keras

    _, labels, _ = _problem()
    hidden = tf.random.normal([N, D])
    table = keras.Variable(np.random.default_rng(0).normal(size=(C, D)).astype("float32"))
    with tf.GradientTape() as tape:
        loss = ops.scalable_cross_entropy(hidden, labels, table, bucket_size_y=16, seed=0)
    grad = tape.gradient(loss, table.value)
    assert isinstance(grad, tf.IndexedSlices) and np.isfinite(loss.numpy())
