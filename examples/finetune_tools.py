"""Model and optimizer plumbing of the fine-tuning example (``finetune_sparsegrad.py``).

A classifier head on a keras-hub backbone, freezing everything but the MLP, one
optimizer per variable group (so that the dense baselines, like SparseGrad, train the
MLP and the rest with their own optimizers), state sizes and a step timer.
"""

from __future__ import annotations

import math
import time


def build_classifier(backbone, num_classes=2, dropout=0.1, seed=0):
    """Backbone -> masked mean pooling -> dropout -> Dense logits."""
    import keras

    inputs = {
        "token_ids": keras.Input((None,), dtype="int32", name="token_ids"),
        "segment_ids": keras.Input((None,), dtype="int32", name="segment_ids"),
        "padding_mask": keras.Input((None,), dtype="int32", name="padding_mask"),
    }
    sequence = backbone(inputs)["sequence_output"]
    mask = keras.ops.cast(keras.ops.expand_dims(inputs["padding_mask"], -1), sequence.dtype)
    pooled = keras.ops.sum(sequence * mask, axis=1) / keras.ops.maximum(
        keras.ops.sum(mask, axis=1), 1.0
    )
    pooled = keras.layers.Dropout(dropout, seed=seed, name="head_dropout")(pooled)
    logits = keras.layers.Dense(
        num_classes,
        kernel_initializer=keras.initializers.GlorotUniform(seed=seed),
        name="classifier",
    )(pooled)
    return keras.Model(inputs, logits, name="sentiment_classifier")


def freeze_outside_mlp(backbone, mlp_layers):
    """Freezes every weight-owning leaf of the backbone except the MLP layers."""
    mlp_ids = {id(layer) for layer in mlp_layers}
    backbone.trainable = True
    for layer in backbone._flatten_layers(include_self=False):
        if id(layer) in mlp_ids or layer._layers:
            continue  # MLP layer, or a container (its leaves decide)
        layer.trainable = False
    for layer in mlp_layers:
        layer.trainable = True


def variable_bytes(variables) -> int:
    return int(sum(math.prod(v.shape) * _dtype_size(v.dtype) for v in variables))


def _dtype_size(dtype) -> int:
    import numpy as np

    return np.dtype(str(dtype).replace("bfloat16", "float16")).itemsize


def routed_optimizer(groups, default):
    """One optimizer per variable group (by identity), `default` for the rest.

    Used by the dense baselines so that, as in the SparseGrad methods, the MLP
    parameters and everything else get their own optimizer and learning rate.
    """
    import keras

    class RoutedOptimizer(keras.optimizers.Optimizer):
        def __init__(self):
            super().__init__(learning_rate=0.0, name="routed_optimizer")
            object.__setattr__(self, "_routes", [(set(ids), opt) for ids, opt in groups])
            object.__setattr__(self, "_default", default)

        def _route(self, variable):
            for ids, opt in self._routes:
                if id(variable) in ids:
                    return opt
            return self._default

        def build(self, variables):
            super().build(variables)
            for opt in [o for _, o in self._routes] + [self._default]:
                opt.build([v for v in variables if self._route(v) is opt])
            self.built = True

        @property
        def variables(self):
            inner = [v for _, o in self._routes for v in o.variables]
            return self._variables[:] + inner + self._default.variables

        def apply(self, grads, trainable_variables=None):
            if trainable_variables is None:
                trainable_variables = self._trainable_variables
            if not self.built:
                self.build(trainable_variables)
            buckets = {}
            for grad, variable in zip(grads, trainable_variables, strict=True):
                if grad is not None:
                    opt = self._route(variable)
                    buckets.setdefault(id(opt), (opt, [], []))
                    buckets[id(opt)][1].append(grad)
                    buckets[id(opt)][2].append(variable)
            for opt, gs, vs in buckets.values():
                opt.apply(gs, vs)
            self._iterations.assign_add(1)

    return RoutedOptimizer()


def optimizer_variables_of(optimizer):
    """State variables of an optimizer, without step counters and learning rates."""
    skip = ("iteration", "learning_rate")
    return [v for v in optimizer.variables if not any(s in v.name for s in skip)]


class StepTimer:
    """Keras callback recording the wall and CPU time of every training batch."""

    def __new__(cls):
        import keras

        class StepTimer(keras.callbacks.Callback):
            def __init__(self):
                super().__init__()
                self.times, self.cpu_times = [], []

            def on_train_batch_begin(self, batch, logs=None):
                self._start = time.perf_counter()
                self._cpu_start = time.process_time()

            def on_train_batch_end(self, batch, logs=None):
                self.times.append(time.perf_counter() - self._start)
                self.cpu_times.append(time.process_time() - self._cpu_start)

        return StepTimer()


def _accuracy(model, x, y, batch_size):
    import numpy as np

    logits = model.predict(x, batch_size=batch_size, verbose=0)
    predictions = np.argmax(logits, axis=-1)
    return float(np.mean(predictions == y)), predictions
