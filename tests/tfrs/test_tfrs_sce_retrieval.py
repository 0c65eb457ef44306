"""keras_sce.tfrs.SCERetrieval: the TFRS door onto the SCE core."""

from __future__ import annotations

import os

import numpy as np
import pytest

if os.environ.get("TF_USE_LEGACY_KERAS") not in ("1", "true", "True"):
    pytest.skip(
        "needs TF_USE_LEGACY_KERAS=1 in its own process: "
        "`TF_USE_LEGACY_KERAS=1 python -m pytest tests/tfrs` (as .ci/test does)",
        allow_module_level=True,
    )

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_recommenders as tfrs  # noqa: E402
import tf_keras  # noqa: E402

import keras_sce  # noqa: E402
from keras_sce.tfrs import SCERetrieval  # noqa: E402

NUM_ITEMS, DIM, BATCH = 300, 8, 48


def _inputs(seed=0, batch=BATCH, rank3=False, low=1):
    rng = np.random.default_rng(seed)
    shape = (batch // 4, 4) if rank3 else (batch,)
    query = rng.normal(size=shape + (DIM,)).astype("float32")
    ids = rng.integers(low, NUM_ITEMS, size=shape).astype("int64")
    table = (0.5 * rng.normal(size=(NUM_ITEMS, DIM))).astype("float32")
    return query, ids, table


# -- same value as the Keras 3 loss ---------------------------------------------------
@pytest.mark.parametrize(
    "options",
    [
        dict(),
        dict(mix_x=True, padding_id=0),
        dict(num_buckets=3, bucket_size_x=10, bucket_size_y=17, padding_id=0),
        dict(chunk_size=64, bucket_size_y=20),
        dict(weighted=True, padding_id=0),
        dict(rank3=True, padding_id=0),
        dict(calibration={"num_samples": 32}, bucket_size_y=20, padding_id=0),
    ],
    ids=["defaults", "mix_x", "small_buckets", "streamed", "sample_weight", "sequence",
         "calibrated"],
)
def test_equals_sce_loss_on_identical_inputs_and_seed(options):
    options = dict(options)
    weighted = options.pop("weighted", False)
    rank3 = options.pop("rank3", False)
    options.setdefault("bucket_size_y", 64)
    query, ids, table = _inputs(rank3=rank3)
    weight = np.linspace(0.0, 2.0, ids.size).reshape(ids.shape).astype("float32")
    weight = weight if weighted else None

    tfrs_table = tf.Variable(table)
    task = SCERetrieval(tfrs_table, seed=7, **options)
    loss = keras_sce.SCELoss(keras.Variable(table), seed=7, **options)
    for step in range(3):  # the two seed streams advance together
        got = task(query, ids, sample_weight=weight)
        want = loss(ids, query, sample_weight=weight)
        assert float(got) > 0.0
        np.testing.assert_allclose(float(got), float(want), rtol=1e-6, err_msg=f"step {step}")

    # ...and the first call matches the core function with the stream's first seed.
    task.reset_seed()
    core = keras_sce.ops.scalable_cross_entropy(
        query, ids, tfrs_table, seed=tf.constant([7, 0], tf.int64),
        sample_weight=weight, **options
    )
    np.testing.assert_allclose(float(task(query, ids, sample_weight=weight)), float(core),
                               rtol=1e-6)


def _full_softmax_oracle(query, ids, table):
    """Float64 NumPy mean softmax CE over every item, and its gradients."""
    q, w = query.astype(np.float64), table.astype(np.float64)
    logits = q @ w.T
    logits -= logits.max(axis=1, keepdims=True)
    prob = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    n = len(ids)
    loss = -np.log(prob[np.arange(n), ids]).mean()
    delta = prob.copy()
    delta[np.arange(n), ids] -= 1.0
    return loss, delta @ w / n, delta.T @ q / n


def test_covering_buckets_give_the_full_softmax_and_its_gradients():
    query, ids, table = _inputs(seed=3)
    variable = tf.Variable(table)
    # One bucket holding every query and every candidate: SCE is the full softmax.
    task = SCERetrieval(variable, num_buckets=1, bucket_size_x=BATCH, bucket_size_y=NUM_ITEMS,
                        padding_id=None)
    query_t = tf.constant(query)
    with tf.GradientTape() as tape:
        tape.watch(query_t)
        loss = task(query_t, ids)
    grad_q, grad_w = tape.gradient(loss, [query_t, variable])
    want_loss, want_q, want_w = _full_softmax_oracle(query, ids, table)
    np.testing.assert_allclose(float(loss), want_loss, rtol=1e-5)
    np.testing.assert_allclose(grad_q.numpy(), want_q, atol=1e-6)
    assert isinstance(grad_w, tf.IndexedSlices)
    np.testing.assert_allclose(tf.convert_to_tensor(grad_w).numpy(), want_w, atol=1e-6)


# -- the candidate table trains, sparsely ---------------------------------------------
def test_candidate_table_gets_sparse_gradients_eager_graph_and_xla():
    query, ids, _ = _inputs(seed=4)
    items = tf_keras.layers.Embedding(NUM_ITEMS, DIM)  # not built: the task builds it
    task = SCERetrieval(items, bucket_size_y=16, padding_id=0, seed=1)

    def grads():
        with tf.GradientTape() as tape:
            loss = task(query, ids)
        return tape.gradient(loss, items.trainable_variables)[0]

    eager = grads()
    assert items.built
    assert isinstance(eager, tf.IndexedSlices)
    touched = np.unique(eager.indices.numpy())
    assert 0 not in touched  # the padding row is never a negative
    assert set(ids.tolist()) <= set(touched.tolist())
    assert len(touched) < NUM_ITEMS - 1  # only the positives and the buckets' negatives

    seen = []

    def traced():
        grad = grads()
        seen.append(type(grad))
        return tf.convert_to_tensor(grad)

    for fn in (tf.function(traced), tf.function(traced, jit_compile=True)):
        dense = fn()
        assert np.isfinite(dense.numpy()).all() and np.abs(dense.numpy()).sum() > 0
    assert seen == [tf.IndexedSlices, tf.IndexedSlices]


# -- a TFRS model trains ----------------------------------------------------------------
class _TwoTower(tfrs.models.Model):
    def __init__(self, num_users, task_factory):
        super().__init__()
        self.users = tf_keras.layers.Embedding(num_users, DIM)
        self.items = tf_keras.layers.Embedding(NUM_ITEMS, DIM)
        self.task = task_factory(self.items)

    def compute_loss(self, features, training=False):
        return self.task(
            self.users(features["user"]), features["item"],
            sample_weight=features.get("weight"), compute_metrics=not training,
        )


def _interactions(num_users=64, repeats=8):
    rng = np.random.default_rng(0)
    favourite = rng.integers(1, NUM_ITEMS, size=num_users)  # each user's own item
    users = np.tile(np.arange(num_users), repeats)
    data = {"user": users.astype("int32"), "item": favourite[users].astype("int64")}
    return tf.data.Dataset.from_tensor_slices(data).shuffle(512, seed=0).batch(32), favourite


@pytest.mark.parametrize("jit_compile", [False, True], ids=["graph", "xla"])
def test_tfrs_model_trains_and_its_loss_falls(jit_compile):
    tf_keras.utils.set_random_seed(0)
    data, favourite = _interactions()
    model = _TwoTower(64, lambda items: SCERetrieval(
        items, bucket_size_y=32, padding_id=0, seed=0, loss_metrics=[tf_keras.metrics.Mean()]
    ))
    model.compile(tf_keras.optimizers.Adam(0.05), jit_compile=jit_compile)
    history = model.fit(data, epochs=6, verbose=0)
    losses = history.history["loss"]
    assert np.isfinite(losses).all()
    assert losses[-1] < 0.5 * losses[0], losses
    # Trained: each user's favourite now scores above most items.
    scores = model.users.embeddings.numpy() @ model.items.embeddings.numpy().T
    ranks = (scores > scores[np.arange(64), favourite][:, None]).sum(axis=1)
    assert np.median(ranks) < 10, ranks
    assert model.task.candidate_embeddings is model.items


def test_padding_row_is_left_untouched_by_training():
    tf_keras.utils.set_random_seed(1)
    data, _ = _interactions(repeats=2)
    model = _TwoTower(64, lambda items: SCERetrieval(items, bucket_size_y=32, padding_id=0))
    model.items.build(None)
    row0 = model.items.embeddings.numpy()[0].copy()
    model.compile(tf_keras.optimizers.Adam(0.05))
    model.fit(data, epochs=1, verbose=0)
    np.testing.assert_array_equal(model.items.embeddings.numpy()[0], row0)


def test_mixed_precision_policy_computes_in_float32():
    query, ids, table = _inputs(seed=6)
    want = SCERetrieval(tf.Variable(table), bucket_size_y=32, seed=2)(query, ids)
    tf_keras.mixed_precision.set_global_policy("mixed_float16")
    items = tf_keras.layers.Embedding(NUM_ITEMS, DIM)
    items.build(None)
    items.embeddings.assign(table)
    task = SCERetrieval(items, bucket_size_y=32, seed=2)
    with tf.GradientTape() as tape:
        got = task(tf.cast(query, "float16"), ids)
    grad = tape.gradient(got, items.trainable_variables)[0]
    assert got.dtype == tf.float32
    np.testing.assert_allclose(float(got), float(want), rtol=1e-2)
    assert isinstance(grad, tf.IndexedSlices) and np.isfinite(grad.values.numpy()).all()


def test_unbuilt_layer_without_a_table_is_a_clear_error():
    query, ids, _ = _inputs()
    with pytest.raises(ValueError, match="Pass the candidate Embedding layer"):
        SCERetrieval(tf_keras.layers.Dense(DIM))(query, ids)


# -- TFRS metrics -----------------------------------------------------------------------
@pytest.mark.parametrize("id_based", [True, False], ids=["id_based", "score_based"])
def test_factorized_top_k_metric_matches_numpy_ranking(id_based):
    query, ids, table = _inputs(seed=5)
    variable = tf.Variable(table)
    index = tfrs.layers.factorized_top_k.BruteForce(k=50)
    index.index(tf.constant(table), identifiers=tf.range(NUM_ITEMS, dtype=tf.int64))
    metric = tfrs.metrics.FactorizedTopK(candidates=index, ks=(1, 10, 50))
    loss_mean = tf_keras.metrics.Mean()
    task = SCERetrieval(variable, bucket_size_y=32, metrics=metric, loss_metrics=[loss_mean])
    loss = task(query, ids, metric_candidate_ids=ids if id_based else None)
    scores = query.astype(np.float64) @ table.astype(np.float64).T
    rank = (scores > scores[np.arange(BATCH), ids][:, None]).sum(axis=1)
    want = [np.mean(rank < k) for k in (1, 10, 50)]
    np.testing.assert_allclose([float(r) for r in metric.result()], want, atol=1e-6)
    np.testing.assert_allclose(float(loss_mean.result()), float(loss), rtol=1e-6)

    metric.reset_states()
    task(query, ids, compute_metrics=False)
    assert [float(r) for r in metric.result()] == [0.0, 0.0, 0.0]


# -- clear errors -----------------------------------------------------------------------
def test_table_width_mismatch_is_a_clear_error():
    query, ids, table = _inputs()
    task = SCERetrieval(tf.Variable(np.zeros((NUM_ITEMS, DIM + 1), "float32")))
    with pytest.raises(ValueError, match="width 8 but the candidate table has width 9"):
        task(query, ids)


def test_ids_out_of_range_raise_eagerly_and_poison_the_loss_under_xla():
    query, ids, table = _inputs()
    task = SCERetrieval(tf.Variable(table), bucket_size_y=16)
    bad = ids.copy()
    bad[3] = NUM_ITEMS
    with pytest.raises(tf.errors.InvalidArgumentError, match="candidate_ids"):
        task(query, bad)
    negative = ids.copy()
    negative[0] = -1
    with pytest.raises(tf.errors.InvalidArgumentError, match="candidate_ids"):
        tf.function(task)(query, negative)
    xla_loss = tf.function(lambda q, i: task(q, i), jit_compile=True)(query, bad)
    assert np.isnan(float(xla_loss))
    assert np.isfinite(float(task(query, ids)))


@pytest.mark.parametrize("jit_compile", [False, True], ids=["eager", "xla"])
@pytest.mark.parametrize(
    "where", ["query", "positive_row", "padding_query"], ids=lambda w: f"nan_{w}"
)
def test_a_non_finite_counted_query_or_row_makes_the_loss_nan(where, jit_compile):
    # A realistic batch of 128 x 50 queries with default buckets: a NaN query can
    # fall out of every bucket, yet the loss of the step must show it.
    query, ids, table = _inputs(batch=128 * 50)
    query, ids = query.reshape(128, 50, DIM), ids.reshape(128, 50)
    ids[:, :5] = 0
    if where == "query":
        query[7, 30] = np.nan
    elif where == "positive_row":
        table[ids[9, 40]] = np.nan
    else:
        query[7, 2] = np.nan
    task = SCERetrieval(tf.Variable(table), padding_id=0, seed=0)
    run = tf.function(lambda q, i: task(q, i), jit_compile=True, autograph=False)
    run = run if jit_compile else task
    loss = float(run(tf.constant(query), tf.constant(ids)))
    assert np.isnan(loss) == (where != "padding_query"), loss


@pytest.mark.parametrize(
    "table, error, match",
    [
        (lambda: keras.layers.Embedding(NUM_ITEMS, DIM), TypeError, "Keras 3"),
        (lambda: keras.Variable(np.zeros((NUM_ITEMS, DIM), "float32")), TypeError, "Keras 3"),
        (lambda: tf.zeros((NUM_ITEMS, DIM)), TypeError, "detached copy"),
        (lambda: np.zeros((NUM_ITEMS, DIM), "float32"), TypeError, "detached copy"),
        (lambda: _built_dense(), TypeError, "no `.embeddings`"),
        (lambda: tf.Variable(np.zeros((NUM_ITEMS,), "float32")), ValueError, "num_candidates"),
        (lambda: "items", TypeError, "got str"),
    ],
    ids=["keras3_layer", "keras3_variable", "tensor", "array", "dense", "rank1", "string"],
)
def test_wrong_tables_are_refused(table, error, match):
    with pytest.raises(error, match=match):
        SCERetrieval(table())


def _built_dense():
    layer = tf_keras.layers.Dense(DIM)
    layer.build((None, DIM))
    return layer


def test_other_misuse_is_a_clear_error():
    query, ids, table = _inputs()
    with pytest.raises(ValueError, match="no candidate table"):
        SCERetrieval()(query, ids)
    task = SCERetrieval(tf.Variable(table))
    with pytest.raises(TypeError, match="integer item ids"):
        task(query, ids.astype("float32"))
    with pytest.raises(ValueError, match="one positive row per query"):
        task(query, ids[:-1])
    with pytest.raises(ValueError, match="bucket_size_y"):
        SCERetrieval(tf.Variable(table), bucket_size_y=0)
    with pytest.raises(TypeError, match="seed"):
        SCERetrieval(tf.Variable(table), seed="0")
    with pytest.raises(TypeError, match="factorized metrics"):
        SCERetrieval(tf.Variable(table), metrics=["top_k"])


# -- one set of options ------------------------------------------------------------------
@pytest.mark.parametrize("front_end", [SCERetrieval, keras_sce.SCELoss],
                         ids=["SCERetrieval", "SCELoss"])
def test_the_sce_options_have_one_set_of_defaults(front_end):
    import inspect

    from keras_sce.losses import SCEOptions

    parameters = inspect.signature(front_end.__init__).parameters
    defaults = {name: parameters[name].default for name in SCEOptions.names()}
    assert defaults == SCEOptions.defaults()
    assert defaults["padding_id"] == 0 and defaults["bucket_size_y"] == 256
    for name in SCEOptions.names():  # each option is documented where it is taken
        assert f"        {name}: " in front_end.__doc__, name
    # A default-constructed front end holds exactly the default options.
    built = front_end()
    assert {name: getattr(built, name) for name in SCEOptions.names()} == SCEOptions.defaults()


# -- serialization ----------------------------------------------------------------------
def test_config_round_trip_and_registration():
    query, ids, table = _inputs()
    variable = tf.Variable(table)
    task = SCERetrieval(
        variable, num_buckets=4, bucket_size_x=12, bucket_size_y=20, mix_x=True,
        padding_id=0, chunk_size=100, seed=3, check_ids=False, name="sce_task",
        calibration={"num_samples": 16},
    )
    config = task.get_config()
    assert config["calibration"]["num_samples"] == 16
    clone = SCERetrieval.from_config(config)
    assert clone.get_config() == config
    assert clone.candidate_embeddings is None
    with pytest.raises(ValueError, match="bind"):
        clone(query, ids)
    clone.bind(variable)
    np.testing.assert_allclose(float(clone(query, ids)), float(task(query, ids)), rtol=1e-6)

    restored = tf_keras.saving.deserialize_keras_object(
        tf_keras.saving.serialize_keras_object(task)
    )
    assert isinstance(restored, SCERetrieval)
    assert restored.get_config() == config


@pytest.mark.slow
def test_mirrored_strategy_matches_single_device():
    # Covering buckets make SCE the full softmax whatever the centres, so a TFRS
    # model trained on two replicas must take exactly the single-device step.
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent(
        """
        import numpy as np, tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        import tensorflow_recommenders as tfrs, tf_keras
        from keras_sce.tfrs import SCERetrieval

        class Model(tfrs.models.Model):
            def __init__(self):
                super().__init__()
                self.items = tf_keras.layers.Embedding(30, 8)
                self.users = tf_keras.layers.Embedding(20, 8)
                self.task = SCERetrieval(self.items, num_buckets=1, bucket_size_x=64,
                                         bucket_size_y=29, padding_id=0, seed=0)

            def compute_loss(self, features, training=False):
                return self.task(self.users(features["user"]), features["item"])

        def build():
            tf_keras.utils.set_random_seed(0)
            model = Model()
            model.compile(tf_keras.optimizers.SGD(0.5))
            return model

        rng = np.random.default_rng(0)
        data = {"user": rng.integers(0, 20, 32), "item": rng.integers(1, 30, 32)}
        ds = tf.data.Dataset.from_tensor_slices(data).batch(32)
        single = build()
        l1 = single.fit(ds, epochs=1, verbose=0).history["loss"][0]
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        with strategy.scope():
            mirrored = build()
        assert strategy.num_replicas_in_sync == 2
        l2 = mirrored.fit(ds, epochs=1, verbose=0).history["loss"][0]
        assert abs(l1 - l2) < 1e-5 * abs(l1), (l1, l2)  # the logged loss too
        for a, b in zip(single.get_weights(), mirrored.get_weights(), strict=True):
            np.testing.assert_allclose(a, b, atol=1e-5)
        # A call in the cross-replica context sees the whole batch: not divided.
        query, ids = tf.random.normal([8, 8]), tf.constant([1, 2, 3, 4, 5, 6, 7, 8])
        table = tf.Variable(tf.random.normal([30, 8]))
        task = SCERetrieval(table, num_buckets=1, bucket_size_x=8, bucket_size_y=30,
                            padding_id=None)
        outside = float(task(query, ids))
        with strategy.scope():
            inside = float(task(query, ids))
        assert abs(outside - inside) < 1e-6 * abs(outside), (outside, inside)
        moved = np.abs(single.items.embeddings.numpy()[1:]).sum() > 0
        print("OK", moved)
        """
    )
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600,
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    )
    assert "OK True" in result.stdout, result.stdout + result.stderr[-3000:]


def test_savedmodel_serving_index_and_checkpoint_resume(tmp_path):
    tf_keras.utils.set_random_seed(2)
    data, _ = _interactions(repeats=2)

    def build():
        model = _TwoTower(64, lambda items: SCERetrieval(
            items, bucket_size_y=16, padding_id=0, seed=5))
        model.compile(tf_keras.optimizers.Adam(0.01))
        return model

    model = build()
    model.fit(data, epochs=1, verbose=0)
    steps = int(model.task.seed_counter.numpy())
    assert steps == 4  # one draw of centres per step (128 examples, batches of 32)
    assert any(v is model.task.seed_counter for v in model.task.non_trainable_variables)
    # The whole model (task included) exports as a SavedModel that keeps the counter.
    tf.saved_model.save(model, str(tmp_path / "model"))
    reloaded = tf.saved_model.load(str(tmp_path / "model"))
    assert int(reloaded.task.seed_counter.numpy()) == steps
    # Serving: the trained table in a TFRS BruteForce index, exported and reloaded.
    index = tfrs.layers.factorized_top_k.BruteForce(model.users, k=5)
    index.index(model.items.embeddings[1:], identifiers=tf.range(1, NUM_ITEMS))
    users = tf.constant([0, 1, 2])
    _, expected = index(users)
    tf.saved_model.save(index, str(tmp_path / "index"))
    _, served = tf.saved_model.load(str(tmp_path / "index"))(users)
    np.testing.assert_array_equal(served.numpy(), expected.numpy())
    # A checkpoint restores the table and the position in the stream of centres, so
    # a resumed run continues the stream instead of repeating its first centres.
    path = tf.train.Checkpoint(model=model).save(str(tmp_path / "ckpt"))
    resumed = build()
    resumed.fit(data.take(1), epochs=1, verbose=0)
    tf.train.Checkpoint(model=resumed).restore(path).expect_partial()
    np.testing.assert_allclose(resumed.items.embeddings.numpy(), model.items.embeddings.numpy())
    assert int(resumed.task.seed_counter.numpy()) == steps


def test_catalog_chunk_size_is_the_deprecated_name_of_chunk_size():
    with pytest.warns(DeprecationWarning, match="SCERetrieval: `catalog_chunk_size`.*`chunk_size`"):
        task = SCERetrieval(None, catalog_chunk_size=100)
    assert task.chunk_size == 100
    assert "catalog_chunk_size" not in task.get_config()
