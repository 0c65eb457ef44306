"""Pure-TensorFlow core of SparseGrad: the rotated matmul and its sparse gradient.

Nothing here imports Keras layers; ``keras_sce.SparseGradDense`` is a thin wrapper
around :func:`sparse_grad_matmul`. All functions are XLA-compilable as long as the
budget ``num_selected`` is a Python int (static ``k``).

Reference: V. Chekalina et al., "SparseGrad: A Selective Method for Efficient
Fine-tuning of MLP Layers", EMNLP 2024, arXiv 2410.07383.
"""

from __future__ import annotations

import tensorflow as tf

SELECTION_MODES = ("top_k", "approx")


def select_top_k(gradient, num_selected, support=None, selection="top_k"):
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
        selection: `"top_k"` (exact, `tf.math.top_k`) or `"approx"`
            (`tf.math.approx_max_k`, which is exact on CPU/GPU and fast on TPU).

    Returns:
        A tensor like `gradient` with at most `num_selected` non-zeros.
    """
    if selection not in SELECTION_MODES:
        raise ValueError(f"selection must be one of {SELECTION_MODES}, got {selection!r}")
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


def sparse_grad_matmul(
    inputs,
    kernel,
    input_basis=None,
    output_basis=None,
    *,
    num_selected,
    support=None,
    selection="top_k",
):
    """Computes `((x P) K̃) Qᵀ` with SparseGrad's custom gradient.

    Forward: the product in the compute dtype of `inputs` (the kernel and bases are
    cast to it; they are normally stored in float32). Backward, with `g = ∂L/∂y`:

    - input gradient, exact and dense: `((g Q) K̃ᵀ) Pᵀ`;
    - kernel gradient in the rotated basis `Ĝ = (x P)ᵀ (g Q)`, accumulated in
      float32 (float64 for float64 inputs), of which only the `num_selected`
      largest-magnitude entries are kept (see :func:`select_top_k`), returned in
      the kernel's dtype;
    - no gradient for the (frozen) bases or the support.

    `None` for a basis means the identity (no matmul): with both bases `None` this is
    the MeProp baseline (top-k of the weight gradient in the original basis).

    Args:
        inputs: `[tokens, in]` tensor.
        kernel: `[in, out]` rotated kernel `K̃`.
        input_basis: `[in, in]` orthogonal `P`, or `None`.
        output_basis: `[out, out]` orthogonal `Q`, or `None`.
        num_selected: Python int, the number `k` of kernel-gradient entries kept.
        support: optional int32 `[s]` flat indices restricting the selection.
        selection: `"top_k"` or `"approx"`.

    Returns:
        `[tokens, out]` tensor in the dtype of `inputs`.
    """
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
        k_c = tf.cast(k_tilde, dtype)
        p_c = tf.cast(p, dtype) if has_p else None
        q_c = tf.cast(q, dtype) if has_q else None
        xp = tf.matmul(x, p_c) if has_p else x
        h = tf.matmul(xp, k_c)
        y = tf.matmul(h, q_c, transpose_b=True) if has_q else h

        def _grad(dy):
            gq = tf.matmul(dy, q_c) if has_q else dy
            dxp = tf.matmul(gq, k_c, transpose_b=True)
            dx = tf.matmul(dxp, p_c, transpose_b=True) if has_p else dxp
            acc = tf.float64 if dtype == tf.float64 else tf.float32
            g_hat = tf.matmul(tf.cast(xp, acc), tf.cast(gq, acc), transpose_a=True)
            g_kernel = select_top_k(g_hat, num_selected, support=sup, selection=selection)
            g_kernel = tf.cast(g_kernel, k_tilde.dtype)
            return (dx, g_kernel) + (None,) * len(bases_and_support)

        return y, _grad

    return _forward(inputs, kernel, *extras)
