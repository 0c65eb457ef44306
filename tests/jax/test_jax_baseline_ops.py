"""The baseline losses of keras_sce.kops under JAX against float64 NumPy references:
exact CE (full and chunked), sampled softmax with logQ, BCE and gBCE."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from keras_sce import _options, kops
from keras_sce.kops import _tensors
from keras_sce.kops.sampled import sample_without_replacement
from tests.jax import oracle
from tests.jax.fixtures import OP_C as C
from tests.jax.fixtures import OP_D as D
from tests.jax.fixtures import op_data


def _value_and_grads(fn, hidden, table, jit=False):
    grad = jax.value_and_grad(fn, argnums=(0, 1))
    value, (gx, gw) = (jax.jit(grad) if jit else grad)(hidden, table)
    return float(value), np.asarray(gx), np.asarray(gw)


def _check_against(fn, reference, hidden, table, jit=False):
    value, gx, gw = _value_and_grads(fn, hidden, table, jit)
    want_gx, want_gw = oracle.numeric_gradients(reference, hidden, table)
    np.testing.assert_allclose(value, reference(hidden, table), rtol=1e-5)
    np.testing.assert_allclose(gx, want_gx, atol=2e-5)
    np.testing.assert_allclose(gw, want_gw, atol=2e-5)


# -- exact cross-entropy ------------------------------------------------------------------
CHUNKS = [None, 1, 4, 6, C - 1, C, 100]


@pytest.mark.parametrize("chunk", CHUNKS, ids=[f"chunk-{c}" for c in CHUNKS])
@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_chunked_cross_entropy_equals_full_ce_in_values_and_gradients(chunk, jit):
    hidden, labels, table = op_data(1)
    value, gx, gw = _value_and_grads(
        lambda h, w: kops.chunked_cross_entropy(h, labels, w, chunk_size=chunk), hidden, table,
        jit)
    want, want_gx, want_gw, _ = oracle.full_ce(hidden, labels, table)
    np.testing.assert_allclose(value, want, rtol=1e-5)
    np.testing.assert_allclose(gx, want_gx, atol=1e-6)
    np.testing.assert_allclose(gw, want_gw, atol=1e-6)


@pytest.mark.parametrize("padding_id", [None, 0, 7], ids=["no-padding", "pad-0", "pad-7"])
def test_full_and_chunked_ce_agree_for_any_padding_row(padding_id):
    hidden, labels, table = op_data(2, padding=False)
    if padding_id is not None:
        labels[1, :2] = padding_id
    else:
        labels[0, 0] = 0  # an ordinary item when there is no padding row
    want = oracle.full_ce(hidden, labels, table, padding_id=padding_id)[0]
    for fn in (kops.full_cross_entropy, kops.chunked_cross_entropy):
        got = fn(hidden, labels, table, padding_id=padding_id, **(
            {"chunk_size": 5} if fn is kops.chunked_cross_entropy else {}))
        np.testing.assert_allclose(float(got), want, rtol=1e-5)


def test_chunked_ce_sample_weights_weigh_rows():
    hidden, labels, table = op_data(3, padding=False)
    weight = np.linspace(0.0, 2.0, labels.size).reshape(labels.shape).astype("float32")
    *_, row_ce = oracle.full_ce(hidden, labels, table)
    want = float((weight.ravel() * row_ce).sum() / weight.sum())
    got = kops.chunked_cross_entropy(hidden, labels, table, chunk_size=4, sample_weight=weight)
    np.testing.assert_allclose(float(got), want, rtol=1e-5)


def test_chunked_ce_compiled_step_holds_no_rows_by_catalogue_buffer():
    """Forward and backward, compiled: no [N, C] array, only [N, chunk] ones."""
    rng = np.random.default_rng(4)
    num_items, rows, chunk = 4099, 24, 128
    table = rng.normal(size=(num_items, D)).astype("float32")
    hidden = rng.normal(size=(rows, D)).astype("float32")
    labels = rng.integers(1, num_items, size=(rows,))

    def loss(h, w, fn):
        if fn == "full":
            return kops.full_cross_entropy(h, labels, w)
        return kops.chunked_cross_entropy(h, labels, w, chunk_size=chunk)

    sizes = {}
    for fn in ("full", "chunked"):
        step = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)), static_argnums=2)
        compiled = step.lower(hidden, table, fn).compile()
        sizes[fn] = compiled.memory_analysis().temp_size_in_bytes
        has_scores = f"[{rows},{num_items}]" in compiled.as_text()
        assert has_scores is (fn == "full"), fn
    assert sizes["chunked"] < rows * num_items * 4 < sizes["full"]


# -- sampled softmax ----------------------------------------------------------------------
def _log_expected_real(num_sampled, log_q, padding_id=0):
    compact = _options.inclusion_log_probabilities(C - 1, num_sampled, log_q)
    return np.insert(compact, padding_id, 0.0)  # indexed by real id


@pytest.mark.parametrize("sampler", ["uniform", "unigram"])
def test_sampled_softmax_matches_the_reference_for_its_candidates(sampler):
    hidden, labels, table = op_data(5)
    counts = np.arange(C) % 5 + 1.0
    options = dict(num_sampled=9, sampler=sampler, seed=[3, 1])
    if sampler == "unigram":
        options.update(item_counts=counts, distortion=0.75)
    log_q = None if sampler == "uniform" else _options.unigram_log_q(counts, C, 0, 0.75)
    compact = np.asarray(sample_without_replacement(C - 1, 9, log_q, [3, 1], labels))
    candidates = np.asarray(_tensors.to_real_ids(compact, 0))
    assert len(set(candidates.tolist())) == 9 and 0 not in candidates
    log_expected = _log_expected_real(9, log_q)

    def reference(h, w):
        return oracle.sampled_softmax_given(h, labels, w, candidates, log_expected)

    _check_against(lambda h, w: kops.sampled_softmax(h, labels, w, **options), reference,
                   hidden, table)


@pytest.mark.parametrize("sampler", ["uniform", "unigram"])
def test_sampled_softmax_over_every_item_is_the_full_ce(sampler):
    hidden, labels, table = op_data(6)
    extra = {"item_counts": np.arange(C) + 1.0} if sampler == "unigram" else {}
    value, gx, gw = _value_and_grads(
        lambda h, w: kops.sampled_softmax(h, labels, w, num_sampled=C - 1, sampler=sampler,
                                          seed=0, **extra), hidden, table)
    want, want_gx, want_gw, _ = oracle.full_ce(hidden, labels, table)
    np.testing.assert_allclose(value, want, rtol=1e-5)
    np.testing.assert_allclose(gx, want_gx, atol=1e-6)
    np.testing.assert_allclose(gw, want_gw, atol=1e-6)


def test_unigram_sampler_prefers_popular_items():
    hidden, labels, table = op_data(7)
    counts = np.ones(C)
    counts[1:5] = 1e4
    picked = set()
    for step in range(5):
        compact = sample_without_replacement(C - 1, 4, _options.unigram_log_q(counts, C, 0, 1.0),
                                             [step, 0], labels)
        picked |= set(np.asarray(_tensors.to_real_ids(compact, 0)).tolist())
    assert picked == {1, 2, 3, 4}


# -- BCE and gBCE -------------------------------------------------------------------------
def _negatives(seed, labels, k, padding_id=0):
    shape = (labels.size, k)
    drawn = _tensors.draw("randint", shape, seed, labels, minval=0, maxval=C - 1)
    return np.asarray(_tensors.to_real_ids(drawn, padding_id))


@pytest.mark.parametrize("loss", ["bce", "gbce"])
@pytest.mark.parametrize("offset", ["balanced", 0.0, 1.5])
def test_binary_losses_match_the_reference_for_their_negatives(loss, offset):
    hidden, labels, table = op_data(8)
    k, t = 6, 0.5
    negatives = _negatives([5, 2], labels, k)
    assert 0 not in negatives and (negatives < C).all()
    beta = 1.0 if loss == "bce" else _options.gbce_beta(k, C - 1, t)
    shift = _options.resolve_logit_offset(offset, k, beta)

    def reference(h, w):
        return oracle.binary_given(h, labels, w, negatives, beta=beta, offset=shift)

    def fn(h, w):
        if loss == "bce":
            return kops.sampled_bce(h, labels, w, num_negatives=k, seed=[5, 2],
                                    logit_offset=offset)
        return kops.gbce(h, labels, w, num_negatives=k, t=t, seed=[5, 2], logit_offset=offset)

    _check_against(fn, reference, hidden, table)


def test_gbce_with_t_zero_is_bce():
    hidden, labels, table = op_data(9)
    bce = kops.sampled_bce(hidden, labels, table, num_negatives=4, seed=1, logit_offset=0.0)
    gbce = kops.gbce(hidden, labels, table, num_negatives=4, t=0.0, seed=1, logit_offset=0.0)
    np.testing.assert_allclose(float(gbce), float(bce), rtol=1e-6)


# -- every baseline: padding, seeds, jit ------------------------------------------------------
LOSSES = {
    "full": lambda h, y, w, **kw: kops.full_cross_entropy(h, y, w),
    "chunked": lambda h, y, w, **kw: kops.chunked_cross_entropy(h, y, w, chunk_size=4),
    "sampled": lambda h, y, w, seed=0: kops.sampled_softmax(h, y, w, num_sampled=8, seed=seed),
    "unigram": lambda h, y, w, seed=0: kops.sampled_softmax(
        h, y, w, num_sampled=8, sampler="unigram", item_counts=np.arange(C) + 1, seed=seed),
    "bce": lambda h, y, w, seed=0: kops.sampled_bce(h, y, w, num_negatives=3, seed=seed),
    "gbce": lambda h, y, w, seed=0: kops.gbce(h, y, w, num_negatives=5, seed=seed),
}


@pytest.mark.parametrize("name", list(LOSSES))
@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_all_padding_gives_zero_with_zero_gradient(name, jit):
    hidden, _, table = op_data(10)
    labels = np.zeros(hidden.shape[:-1], "int32")
    value, gx, gw = _value_and_grads(lambda h, w: LOSSES[name](h, labels, w), hidden, table, jit)
    assert value == 0.0 and not gx.any() and not gw.any()


@pytest.mark.parametrize("name", list(LOSSES))
def test_padding_rows_are_ignored_even_when_nan(name):
    hidden, labels, table = op_data(11)
    poisoned = hidden.copy()
    poisoned[labels == 0] = np.nan
    clean, gx, _ = _value_and_grads(lambda h, w: LOSSES[name](h, labels, w), hidden, table)
    dirty, dirty_gx, _ = _value_and_grads(lambda h, w: LOSSES[name](h, labels, w), poisoned,
                                          table)
    np.testing.assert_allclose(dirty, clean, rtol=1e-6)
    np.testing.assert_allclose(dirty_gx, gx, atol=1e-7)
    assert not gx[labels == 0].any()


@pytest.mark.parametrize("name", list(LOSSES))
def test_non_finite_counted_hidden_state_makes_the_loss_nan(name):
    hidden, labels, table = op_data(12)
    hidden[1, 2, 0] = np.inf
    assert np.isnan(float(LOSSES[name](hidden, labels, table)))
    assert np.isnan(float(jax.jit(lambda h: LOSSES[name](h, labels, table))(hidden)))


@pytest.mark.parametrize("name", ["sampled", "unigram", "bce", "gbce"])
def test_seeds_contract(name):
    hidden, labels, table = op_data(13)
    fn = LOSSES[name]
    same = [float(fn(hidden, labels, table, seed=4)) for _ in range(2)]
    assert same[0] == same[1]  # an int seed: the same draws at every call
    pair = float(fn(hidden, labels, table, seed=np.array([4, 9], "int32")))
    jitted = float(jax.jit(lambda s: fn(hidden, labels, table, seed=s))(np.array([4, 9])))
    np.testing.assert_allclose(jitted, pair, rtol=1e-6)  # a [2] tensor seed, traced
    draws = {round(float(fn(hidden, labels, table, seed=[4, s])), 6) for s in range(4)}
    assert len(draws) > 1  # other seeds, other draws
    # None: seed 0 folded with the batch's fingerprint; another batch, other draws.
    fingerprint = int(kops.batch_fingerprint(labels))
    np.testing.assert_allclose(float(fn(hidden, labels, table, seed=None)),
                               float(fn(hidden, labels, table, seed=[0, fingerprint])), rtol=1e-6)


# -- errors ----------------------------------------------------------------------------------
BAD = [
    pytest.param("sampled", dict(sampler="zipf"), ValueError, "sampler must be one of",
                 id="sampler"),
    pytest.param("sampled", dict(num_sampled=0), ValueError, "num_sampled", id="num-sampled-0"),
    pytest.param("sampled", dict(num_sampled=C), ValueError, "exceeds the 28 real items",
                 id="num-sampled-large"),
    pytest.param("sampled", dict(sampler="unigram", num_sampled=4), ValueError, "needs item_counts",
                 id="unigram-no-counts"),
    pytest.param("sampled", dict(sampler="unigram", num_sampled=4, item_counts=[1.0] * 3),
                 ValueError,
                 "item_counts has 3 entries", id="unigram-counts-length"),
    pytest.param("bce", dict(num_negatives=0), ValueError, "num_negatives", id="negatives-0"),
    pytest.param("bce", dict(logit_offset="half"), ValueError, "logit_offset", id="offset-str"),
    pytest.param("bce", dict(logit_offset=float("inf")), ValueError, "finite",
                 id="offset-inf"),
    pytest.param("bce", dict(logit_offset=True), TypeError, "logit_offset", id="offset-bool"),
    pytest.param("gbce", dict(t=1.5), ValueError, r"t must be in \[0, 1\]", id="t"),
    pytest.param("chunked", dict(chunk_size=0), ValueError, "chunk_size", id="chunk-0"),
    pytest.param("chunked", dict(padding_id=C), ValueError, "not a row of the item table",
                 id="padding-id"),
    pytest.param("full", dict(labels=np.full((3, 5), C)), ValueError, "outside",
                 id="id-too-large"),
    pytest.param("bce", dict(labels=np.full((3, 5), -1)), ValueError, "outside",
                 id="id-negative"),
    pytest.param("sampled", dict(labels=np.ones((3, 5), "float32")), TypeError,
                 "integer item ids", id="float-labels"),
    pytest.param("gbce", dict(table=np.ones((C, D + 1), "float32")), ValueError, "table width",
                 id="table-width"),
]
FUNCTIONS = {"full": kops.full_cross_entropy, "chunked": kops.chunked_cross_entropy,
             "sampled": kops.sampled_softmax, "bce": kops.sampled_bce, "gbce": kops.gbce}


@pytest.mark.parametrize(("name", "change", "error", "words"), BAD)
def test_bad_input_raises_naming_the_argument(name, change, error, words):
    hidden, labels, table = op_data(14)
    args = dict(hidden=hidden, labels=labels, table=table)
    options = {k: v for k, v in change.items() if k not in args}
    args.update({k: v for k, v in change.items() if k in args})
    with pytest.raises(error, match=words):
        FUNCTIONS[name](args["hidden"], args["labels"], args["table"], **options)


def test_a_table_of_only_the_padding_row_is_refused():
    with pytest.raises(ValueError, match="only the padding row"):
        kops.chunked_cross_entropy(np.ones((2, 3), "float32"), np.array([0, 0]),
                                   np.ones((1, 3), "float32"))


@pytest.mark.parametrize("name", ["full", "chunked", "sampled", "bce"])
def test_traced_bad_ids_turn_the_loss_nan(name):
    hidden, labels, table = op_data(15)
    labels[1, 1] = C + 3
    assert np.isnan(float(jax.jit(lambda h, y: LOSSES[name](h, y, table))(hidden, labels)))
