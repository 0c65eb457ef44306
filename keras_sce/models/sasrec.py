"""SASRec: self-attentive sequential recommendation (Kang & McAuley, arXiv 1808.09781).

The model stacks `SASRecBlock`s (`keras_sce.models.sasrec_block`, also importable
from here) between the item table and a final layer norm.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from keras_sce.models.sasrec_block import SASRecBlock
from keras_sce.ops import checks


@keras.saving.register_keras_serializable(package="keras_sce")
class SASRec(keras.Model):
    """SASRec sequential recommender that outputs hidden states.

    Item ids are embedded (scaled by sqrt(d)), learned absolute position
    embeddings are added, and a stack of causal self-attention blocks
    (`SASRecBlock`) with dropout produces one hidden state per position; a final
    layer norm closes the stack. The model's output is the hidden states
    `[B, L, d]`, not logits: the score of item i at position t is
    `<h_t, E_i>` with `E` the *same* item embedding table used at the input
    (tied weights, exposed as `item_embedding_layer`), so any loss that takes
    hidden states, labels and an item table — `keras_sce.SCELoss` or a baseline
    in `keras_sce.losses` — trains it. Position t only sees items <= t, so the
    model trains on every position of a sequence at once.

    Sequences are left-padded with `padding_id` by default (most recent item in
    the last position, the SASRec convention); `padding="right"` is supported
    by `last_hidden` and `recommend`.

    Args:
        num_items: int, size of the id space including the padding id (table rows).
        max_length: int, maximum sequence length L (number of learned positions).
        hidden_dim: int, model width d. Defaults to 64.
        num_blocks: int, number of self-attention blocks. Defaults to 2.
        num_heads: int, attention heads. Defaults to 1.
        intermediate_dim: int, feed-forward width; defaults to `hidden_dim`.
        dropout: float, dropout rate. Defaults to 0.2.
        padding_id: int, the padding id. Defaults to 0.
        padding: `"left"` or `"right"`, where sequences are padded.
        **kwargs: forwarded to `keras.Model`.

    Call arguments:
        inputs: `int [B, L]` item ids (`L <= max_length`). Longer sequences are
            refused (a `ValueError` when `L` is known while tracing, an
            `InvalidArgumentError` at run time, NaN outputs under XLA where
            assertions are dropped): position `k + max_length` would otherwise
            share the embedding of position `k`.
        training: bool.

    Returns:
        `float [B, L, hidden_dim]` hidden states (zero at padding positions).

    Example:

    >>> import numpy as np, keras, keras_sce
    >>> model = keras_sce.models.SASRec(num_items=101, max_length=20, hidden_dim=16)
    >>> model(np.zeros((2, 20), "int32")).shape
    TensorShape([2, 20, 16])
    >>> model.compile(
    ...     optimizer="adam", loss=keras_sce.SCELoss(model.item_embedding_layer))

    References:
        - Kang & McAuley, "Self-Attentive Sequential Recommendation", ICDM 2018,
          arXiv 1808.09781.
        - Mezentsev et al., "Scalable Cross-Entropy Loss for Sequential
          Recommendations with Large Item Catalogs", RecSys 2024, arXiv 2409.18721.
    """

    def __init__(
        self,
        num_items: int,
        max_length: int = 50,
        hidden_dim: int = 64,
        num_blocks: int = 2,
        num_heads: int = 1,
        intermediate_dim: int | None = None,
        dropout: float = 0.2,
        padding_id: int = 0,
        padding: str = "left",
        **kwargs,
    ):
        super().__init__(**kwargs)
        num_items = checks.as_int(num_items, "num_items")
        if num_items < 2:
            raise ValueError(f"num_items must be >= 2 (padding + one item), got {num_items}.")
        max_length = checks.check_positive_int(max_length, "max_length")
        hidden_dim = checks.check_positive_int(hidden_dim, "hidden_dim")
        num_blocks = checks.as_int(num_blocks, "num_blocks", minimum=0)
        num_heads = checks.check_positive_int(num_heads, "num_heads")
        intermediate_dim = checks.check_positive_int(
            intermediate_dim, "intermediate_dim", allow_none=True
        )
        padding_id = checks.check_padding_id(padding_id, num_items)
        if padding not in ("left", "right"):
            raise ValueError(f"padding must be 'left' or 'right', got {padding!r}.")
        self.num_items = num_items
        self.max_length = max_length
        self.hidden_dim = hidden_dim
        self.num_blocks = num_blocks
        self.num_heads = num_heads
        self.intermediate_dim = intermediate_dim
        self.dropout = dropout
        self.padding_id = padding_id
        self.padding = padding
        self.item_embedding = keras.layers.Embedding(
            num_items,
            hidden_dim,
            embeddings_initializer=keras.initializers.TruncatedNormal(stddev=0.05),
            name="item_embedding",
        )
        self.position_embedding = keras.layers.Embedding(
            max_length, hidden_dim, name="position_embedding"
        )
        self.embedding_dropout = keras.layers.Dropout(dropout)
        self.blocks = [
            SASRecBlock(
                hidden_dim,
                num_heads=num_heads,
                intermediate_dim=intermediate_dim,
                dropout=dropout,
                name=f"block_{i}",
            )
            for i in range(num_blocks)
        ]
        self.final_norm = keras.layers.LayerNormalization(epsilon=1e-6, name="final_norm")

    @property
    def item_embedding_layer(self) -> keras.layers.Embedding:
        """The item table, shared by the input and the output (`[num_items, d]`)."""
        return self.item_embedding

    def _check_length(self, length):
        if length is not None and length > self.max_length:
            raise ValueError(
                f"SASRec got sequences of length {length} but has max_length={self.max_length} "
                f"learned positions: positions beyond {self.max_length} have no embedding. "
                f"Keep the last {self.max_length} items of each sequence (e.g. "
                f"`inputs[:, -{self.max_length}:]` with left padding), or build the model "
                f"with max_length={length}."
            )

    def build(self, input_shape=None):
        length = self.max_length if input_shape is None else input_shape[1] or self.max_length
        self._check_length(length)
        self.item_embedding.build((None, length))
        self.position_embedding.build((length,))
        for block in self.blocks:
            block.build((None, length, self.hidden_dim))
        self.final_norm.build((None, length, self.hidden_dim))
        self.built = True

    def call(self, inputs, training=False):
        inputs = ops.cast(inputs, "int32")
        static_length = inputs.shape[1] if len(inputs.shape) > 1 else None
        self._check_length(static_length)  # at trace time, when the length is known
        length = ops.shape(inputs)[1]
        padding_mask = ops.not_equal(inputs, self.padding_id)
        x = self._item_rows(inputs) * math.sqrt(self.hidden_dim)
        # With left padding, positions are counted from the right end, so a batch
        # cut to its longest sequence gives the same outputs as a full-length one.
        first = self.max_length - length if self.padding == "left" else 0
        positions = first + ops.arange(length)
        if static_length is None:
            # A length known only at run time: an assertion outside XLA, and a NaN
            # output (which the losses and the evaluation report) where XLA drops
            # assertions. The clip only keeps the lookup in range; it never wraps
            # position k + max_length onto k (a negative index would, in Keras).
            fits = tf.debugging.assert_less_equal(
                tf.cast(length, tf.int32),
                tf.constant(self.max_length, tf.int32),
                message=(
                    f"keras_sce.SASRec: sequences longer than max_length={self.max_length}; "
                    "keep the last max_length items of each sequence."
                ),
            )
            with tf.control_dependencies([fits]):
                positions = ops.clip(tf.identity(positions), 0, self.max_length - 1)
        x = x + self.position_embedding(positions)[None, :, :]
        if static_length is None:
            nan = ops.cast(float("nan"), x.dtype)
            x = ops.where(length <= self.max_length, x, nan)
        x = self.embedding_dropout(x, training=training)
        x = x * ops.cast(padding_mask, x.dtype)[..., None]
        for block in self.blocks:
            x = block(x, padding_mask, training=training)
        x = self.final_norm(x)
        return x * ops.cast(padding_mask, x.dtype)[..., None]

    def compute_output_shape(self, input_shape):
        return tuple(input_shape) + (self.hidden_dim,)

    def _item_rows(self, ids):
        """Input item embeddings as a row gather from the table variable itself.

        Calling the Embedding layer reads the whole table densely, and once a sparse
        optimizer update has put the variable in TensorFlow's copy-on-read mode that
        read copies the table at every step (outside XLA). Same values and gradient.
        """
        layer = self.item_embedding
        if keras.backend.backend() != "tensorflow" or layer.lora_enabled or layer.quantization_mode:
            return layer(ids)
        import tensorflow as tf

        from keras_sce.compat import keras_variable_storage

        variable = keras_variable_storage(layer.embeddings)  # not autocast
        if variable is None:
            return layer(ids)
        return ops.cast(tf.gather(variable, ids), layer.compute_dtype)

    def last_hidden(self, inputs, batch_size: int = 1024) -> np.ndarray:
        """Hidden state of each sequence's most recent item, `[B, d]` (NumPy)."""
        inputs = np.asarray(inputs)
        outputs = []
        for start in range(0, inputs.shape[0], batch_size):
            chunk = inputs[start : start + batch_size]
            hidden = keras.ops.convert_to_numpy(self(chunk, training=False))
            if self.padding == "left":
                outputs.append(hidden[:, -1])
            else:
                last = np.maximum((chunk != self.padding_id).sum(axis=1) - 1, 0)
                outputs.append(hidden[np.arange(chunk.shape[0]), last])
        return np.concatenate(outputs, axis=0)

    def recommend(
        self,
        inputs,
        k: int = 10,
        *,
        exclude_history: bool = True,
        history=None,
        chunk_size: int = 8192,
        batch_size: int = 1024,
    ):
        """Top-k items over the full catalogue, streamed over catalogue chunks.

        Args:
            inputs: `int [B, L]` padded item sequences.
            k: number of items per user.
            exclude_history: drop the items of the user's history from the ranking.
            history: optional `int [B, H]` history to exclude (0-padded); defaults to
                the items in `inputs`.
            chunk_size: catalogue rows scored at once (peak memory
                `batch_size x (chunk_size + k)` scores).
            batch_size: users scored at once.

        Returns:
            `(scores [B, k], item_ids [B, k])` NumPy arrays.
        """
        from keras_sce.evaluation import streamed_top_k

        queries = self.last_hidden(inputs, batch_size=batch_size)
        exclude = None
        if exclude_history:
            exclude = np.asarray(inputs if history is None else history)
        table = keras.ops.convert_to_numpy(self.item_embedding.embeddings)
        return streamed_top_k(
            queries,
            table,
            k,
            exclude=exclude,
            chunk_size=chunk_size,
            batch_size=batch_size,
            padding_id=self.padding_id,
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            num_items=self.num_items,
            max_length=self.max_length,
            hidden_dim=self.hidden_dim,
            num_blocks=self.num_blocks,
            num_heads=self.num_heads,
            intermediate_dim=self.intermediate_dim,
            dropout=self.dropout,
            padding_id=self.padding_id,
            padding=self.padding,
        )
        return config
