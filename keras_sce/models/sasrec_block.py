"""`SASRecBlock`: one causal self-attention block of SASRec (arXiv 1808.09781)."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_sce")
class SASRecBlock(keras.layers.Layer):
    """One SASRec block: causal self-attention then a position-wise feed-forward.

    Pre-layer-norm residual form: `x + Dropout(Attn(LN(x)))` then
    `x + Dropout(FFN(LN(x)))`, where attention is causal (position t sees
    positions <= t) and never attends to padding keys. Padding positions are
    zeroed after each sub-layer.

    Args:
        hidden_dim: int, model width d.
        num_heads: int, attention heads (`hidden_dim` must be divisible by it).
        intermediate_dim: int, feed-forward width.
        dropout: float, dropout rate on attention weights and residual branches.
        layer_norm_epsilon: float.

    Call arguments:
        x: `float [B, L, d]`.
        padding_mask: `bool [B, L]`, True at real (non-padding) positions.
        training: bool.
    """

    def __init__(
        self,
        hidden_dim: int,
        num_heads: int = 1,
        intermediate_dim: int | None = None,
        dropout: float = 0.2,
        layer_norm_epsilon: float = 1e-6,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if hidden_dim % num_heads:
            raise ValueError(f"hidden_dim={hidden_dim} is not divisible by num_heads={num_heads}.")
        self.hidden_dim = hidden_dim
        self.num_heads = num_heads
        self.intermediate_dim = intermediate_dim or hidden_dim
        self.dropout = dropout
        self.layer_norm_epsilon = layer_norm_epsilon
        self.attention_norm = keras.layers.LayerNormalization(
            epsilon=layer_norm_epsilon, name="attention_norm"
        )
        self.attention = keras.layers.MultiHeadAttention(
            num_heads=num_heads,
            key_dim=hidden_dim // num_heads,
            dropout=dropout,
            name="attention",
        )
        self.attention_dropout = keras.layers.Dropout(dropout)
        self.ffn_norm = keras.layers.LayerNormalization(epsilon=layer_norm_epsilon, name="ffn_norm")
        self.ffn_inner = keras.layers.Dense(
            self.intermediate_dim, activation="relu", name="ffn_inner"
        )
        self.ffn_outer = keras.layers.Dense(hidden_dim, name="ffn_outer")
        self.ffn_dropout = keras.layers.Dropout(dropout)
        self.inner_dropout = keras.layers.Dropout(dropout)

    def build(self, input_shape):
        self.attention_norm.build(input_shape)
        self.attention.build(input_shape, input_shape)
        self.ffn_norm.build(input_shape)
        self.ffn_inner.build(input_shape)
        self.ffn_outer.build(tuple(input_shape[:-1]) + (self.intermediate_dim,))
        self.built = True

    def call(self, x, padding_mask, training=False):
        length = ops.shape(x)[1]
        causal = ops.tril(ops.ones((length, length), dtype="bool"))
        attention_mask = ops.logical_and(causal[None, :, :], padding_mask[:, None, :])
        keep = ops.cast(padding_mask, x.dtype)[..., None]
        h = self.attention_norm(x)
        h = self.attention(h, h, attention_mask=attention_mask, training=training)
        x = (x + self.attention_dropout(h, training=training)) * keep
        h = self.ffn_inner(self.ffn_norm(x))
        h = self.ffn_outer(self.inner_dropout(h, training=training))
        return (x + self.ffn_dropout(h, training=training)) * keep

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            hidden_dim=self.hidden_dim,
            num_heads=self.num_heads,
            intermediate_dim=self.intermediate_dim,
            dropout=self.dropout,
            layer_norm_epsilon=self.layer_norm_epsilon,
        )
        return config
