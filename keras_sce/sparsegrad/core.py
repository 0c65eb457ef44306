"""Pure-TensorFlow core of SparseGrad: the rotated matmul and its sparse gradient.

Nothing here imports Keras layers; `keras_sce.SparseGradDense` is a thin wrapper
around `sparse_grad_matmul`. All functions are XLA-compilable as long as the
budget `num_selected` is a Python int (static `k`).

Reference: V. Chekalina et al., "SparseGrad: A Selective Method for Efficient
Fine-tuning of MLP Layers", EMNLP 2024, arXiv 2410.07383.
"""

from __future__ import annotations

import tensorflow as tf

SELECTION_MODES = ("auto", "top_k", "approx")
FORMULATIONS = ("auto", "activation", "weight")


def resolve_selection(selection="auto"):
    """The top-k kernel `selection="auto"` stands for on this machine.

    `tf.math.approx_max_k` is approximate only on TPU; on CPU and GPU it returns the
    exact top-k, and inside an XLA-compiled training step on CPU it is several times
    faster than `tf.math.top_k` (`benchmarks/sparsegrad_step.py`, configuration
    `sparsegrad_topk`). `"auto"` is therefore `"approx"` unless a TPU is visible.

    Args:
        selection: `"auto"`, `"top_k"` or `"approx"`.

    Returns:
        `"top_k"` or `"approx"`.

    Raises:
        ValueError: for any other value.
    """
    if selection not in SELECTION_MODES:
        raise ValueError(f"selection must be one of {SELECTION_MODES}, got {selection!r}")
    if selection != "auto":
        return selection
    return "top_k" if tf.config.list_logical_devices("TPU") else "approx"


def select_top_k(gradient, num_selected, support=None, selection="auto"):
    """Keeps the `num_selected` largest-magnitude entries of a matrix, zeroes the rest.

    The selection is element-wise over the whole matrix (not per row). With a
    `support` (int32 flat indices into the matrix), only entries on the support are
    candidates: the result is non-zero on at most `num_selected` support entries.

    If `gradient` holds a non-finite value the whole matrix is returned unchanged,
    so that a NaN/Inf is never silently dropped by the selection (a loss-scale
    optimizer then skips the step, and a plain optimizer makes the problem visible).

    Args:
        gradient: float tensor of shape `[m, n]`.
        num_selected: Python int, `1 <= num_selected <= m * n` (or `<= len(support)`).
        support: optional int32 tensor of shape `[s]`, distinct flat indices.
        selection: `"top_k"` (exact, `tf.math.top_k`), `"approx"`
            (`tf.math.approx_max_k`, which is exact on CPU/GPU and fast on TPU) or
            `"auto"` (default: `"approx"` unless a TPU is visible; see
            `resolve_selection`).

    Returns:
        A tensor like `gradient` with at most `num_selected` non-zeros.
    """
    selection = resolve_selection(selection)
    shape = tf.shape(gradient)
    flat = tf.reshape(gradient, [-1])
    size = gradient.shape[0] * gradient.shape[1] if gradient.shape.is_fully_defined() else None
    if support is None:
        if size is not None and num_selected >= size:
            return gradient
        candidates = flat
    else:
        candidates = tf.gather(flat, support)
    magnitudes = tf.abs(candidates)
    if selection == "approx":
        _, positions = tf.math.approx_max_k(magnitudes, num_selected)
    else:
        _, positions = tf.math.top_k(magnitudes, k=num_selected, sorted=False)
    indices = positions if support is None else tf.gather(support, positions)
    values = tf.gather(flat, indices)
    sparse = tf.scatter_nd(
        tf.expand_dims(indices, -1), values, tf.shape(flat, out_type=indices.dtype)
    )
    sparse = tf.reshape(sparse, shape)
    finite = tf.reduce_all(tf.math.is_finite(gradient))
    return tf.where(finite, sparse, gradient)


def _maybe(predicate, true_fn, false_fn):
    """`true_fn()` or `false_fn()`: chosen now for a Python bool, in the graph otherwise."""
    if isinstance(predicate, bool):
        return true_fn() if predicate else false_fn()
    return tf.cond(predicate, true_fn, false_fn)


def rotation_plan(tokens, input_dim, output_dim, formulation="auto"):
    """Which basis is applied to the kernel (weight space) rather than to the tokens.

    Each basis can be applied on either side of the product at the same result:
    the input basis `P` either rotates the activations (`x P`, forward, and `dx̃ Pᵀ`,
    backward: `2·tokens·in²` multiply-adds) or the kernel (`P K̃`, forward, and
    `Pᵀ Ĝ`, backward: `2·in²·out`); the output basis `Q` likewise costs
    `2·tokens·out²` on the activations or `2·in·out²` on the kernel. The costs of
    the two sides add up, so each side is chosen on its own: `P` goes to the kernel
    when `out < tokens`, `Q` when `in < tokens`.

    Args:
        tokens: number of token rows: a Python int, or a scalar int tensor when the
            batch shape is not static (the choice is then made in the graph).
        input_dim: the kernel's input dimension `in`.
        output_dim: the kernel's output dimension `out`.
        formulation: `"auto"` (the rule above), `"activation"` (both bases on the
            activations, the textbook form) or `"weight"` (both on the kernel).

    Returns:
        `(input_basis_on_kernel, output_basis_on_kernel)`: Python bools, or boolean
        scalar tensors when `tokens` is a tensor.

    Raises:
        ValueError: for an unknown `formulation`.
    """
    if formulation not in FORMULATIONS:
        raise ValueError(f"formulation must be one of {FORMULATIONS}, got {formulation!r}")
    if formulation == "activation":
        return False, False
    if formulation == "weight":
        return True, True
    if isinstance(tokens, int):
        return output_dim < tokens, input_dim < tokens
    return tf.less(output_dim, tokens), tf.less(input_dim, tokens)


def sparse_grad_matmul(
    inputs,
    kernel,
    input_basis=None,
    output_basis=None,
    *,
    num_selected,
    support=None,
    selection="auto",
    formulation="auto",
):
    """Computes `((x P) K̃) Qᵀ` with SparseGrad's custom gradient.

    Forward: the product in the compute dtype of `inputs` (the kernel and bases are
    stored in float32; products of kernel and bases are formed in float32 and then
    cast). Backward, with `g = ∂L/∂y`:

    - input gradient, exact and dense: `((g Q) K̃ᵀ) Pᵀ`;
    - kernel gradient in the rotated basis `Ĝ = (x P)ᵀ (g Q) = Pᵀ (xᵀ g) Q`,
      accumulated in float32 (float64 for float64 inputs), of which only the
      `num_selected` largest-magnitude entries are kept (see `select_top_k`),
      returned in the kernel's dtype;
    - no gradient for the (frozen) bases or the support.

    Where each basis is applied (to the token rows or to the kernel) does not change
    the result, only its cost; `formulation` chooses (see `rotation_plan`).

    `None` for a basis means the identity (no matmul): with both bases `None` this is
    the MeProp baseline (top-k of the weight gradient in the original basis).

    Args:
        inputs: `[tokens, in]` tensor.
        kernel: `[in, out]` rotated kernel `K̃`.
        input_basis: `[in, in]` orthogonal `P`, or `None`.
        output_basis: `[out, out]` orthogonal `Q`, or `None`.
        num_selected: Python int, the number `k` of kernel-gradient entries kept.
        support: optional int32 `[s]` flat indices restricting the selection.
        selection: `"auto"` (default), `"top_k"` or `"approx"`; see
            `select_top_k`.
        formulation: `"auto"` (cheapest for the token count; default),
            `"activation"` or `"weight"`; see `rotation_plan`.

    Returns:
        `[tokens, out]` tensor in the dtype of `inputs`.

    Raises:
        ValueError: for an unknown `selection` or `formulation`.
    """
    if selection not in SELECTION_MODES:
        raise ValueError(f"selection must be one of {SELECTION_MODES}, got {selection!r}")
    has_p = input_basis is not None
    has_q = output_basis is not None
    extras = []
    if has_p:
        extras.append(input_basis)
    if has_q:
        extras.append(output_basis)
    if support is not None:
        extras.append(support)

    @tf.custom_gradient
    def _forward(x, k_tilde, *bases_and_support):
        items = list(bases_and_support)
        p = items.pop(0) if has_p else None
        q = items.pop(0) if has_q else None
        sup = items.pop(0) if support is not None else None
        dtype = x.dtype
        acc = tf.float64 if dtype == tf.float64 else tf.float32
        in_dim, out_dim = (int(d) for d in k_tilde.shape)
        tokens = x.shape[0] if x.shape[0] is not None else tf.shape(x)[0]
        p_on_kernel, q_on_kernel = rotation_plan(tokens, in_dim, out_dim, formulation)
        p_on_kernel = p_on_kernel if has_p else True  # identity: nothing to apply
        q_on_kernel = q_on_kernel if has_q else True
        p_c = tf.cast(p, dtype) if has_p else None
        q_c = tf.cast(q, dtype) if has_q else None

        # The kernel actually multiplied: K̃ with the kernel-side bases folded in.
        def folded(p_side, q_side):
            kern = tf.cast(k_tilde, acc)
            if has_p and p_side:
                kern = tf.matmul(tf.cast(p, acc), kern)
            if has_q and q_side:
                kern = tf.matmul(kern, tf.cast(q, acc), transpose_b=True)
            return tf.cast(kern, dtype)

        kern = _maybe(
            p_on_kernel,
            lambda: _maybe(q_on_kernel, lambda: folded(True, True), lambda: folded(True, False)),
            lambda: _maybe(q_on_kernel, lambda: folded(False, True), lambda: folded(False, False)),
        )
        xs = x if not has_p else _maybe(p_on_kernel, lambda: x, lambda: tf.matmul(x, p_c))
        h = tf.matmul(xs, kern)
        y = h
        if has_q:
            y = _maybe(q_on_kernel, lambda: h, lambda: tf.matmul(h, q_c, transpose_b=True))

        def _grad(dy):
            gq = dy
            if has_q:
                gq = _maybe(q_on_kernel, lambda: dy, lambda: tf.matmul(dy, q_c))
            dxs = tf.matmul(gq, kern, transpose_b=True)
            dx = dxs
            if has_p:
                dx = _maybe(p_on_kernel, lambda: dxs, lambda: tf.matmul(dxs, p_c, transpose_b=True))
            g_hat = tf.matmul(tf.cast(xs, acc), tf.cast(gq, acc), transpose_a=True)
            if has_p:
                p_a = tf.cast(p, acc)
                g_hat = _maybe(
                    p_on_kernel, lambda: tf.matmul(p_a, g_hat, transpose_a=True), lambda: g_hat
                )
            if has_q:
                q_a = tf.cast(q, acc)
                g_hat = _maybe(q_on_kernel, lambda: tf.matmul(g_hat, q_a), lambda: g_hat)
            g_kernel = select_top_k(g_hat, num_selected, support=sup, selection=selection)
            g_kernel = tf.cast(g_kernel, k_tilde.dtype)
            return (dx, g_kernel) + (None,) * len(bases_and_support)

        return y, _grad

    return _forward(inputs, kernel, *extras)
