"""`ItemTableLoss`: the common door of every keras_sce loss onto the TensorFlow core.

A loss of (hidden states, item ids) against an item table that it reads at every
call, so the table is trained. This base class owns what all of them share:
binding to the table (a layer, a variable, or — after loading a model — the saved
variable path), Keras' calling conventions (integer ids are never cast to float;
the op's own reduction; the per-replica scaling of `tf.distribute`; Keras'
shape-inference pass) and serialization.
"""

from __future__ import annotations

import warnings

import keras
import tensorflow as tf

from keras_sce.compat import keras_in_symbolic_scope
from keras_sce.ops import checks
from keras_sce.ops.sampling import SeedStream
from keras_sce.utils import require_tensorflow_backend, resolve_table, table_value


def _match_path(variables, path):
    """The variables whose path is `path`, up to the leading scopes.

    A variable's path depends on where it was built: a Sequential or subclassed
    model's layers are saved as `<model>/<layer>/embeddings` but a loaded model
    may build them as `<layer>/embeddings` (or under a renamed model). The
    exact path wins; otherwise the paths that share the longest common ending
    (at least the layer and the variable name) do.
    """
    exact = [v for v in variables if v.path == path]
    if exact:
        return exact
    parts = path.split("/")
    best, matches = 0, []
    for variable in variables:
        other = variable.path.split("/")
        common = 0
        while (
            common < min(len(parts), len(other))
            and parts[-1 - common] == other[-1 - common]
        ):
            common += 1
        if common < min(2, len(parts)) or common < min(len(parts), len(other)):
            continue  # not a suffix of one another
        if common > best:
            best, matches = common, [variable]
        elif common == best:
            matches.append(variable)
    return matches


class ItemTableLoss(keras.losses.Loss):
    """Base class: a loss of (hidden states, item ids) against a bound item table.

    Subclasses implement `_compute(y_true, y_pred, table, sample_weight)` (one
    call of a `keras_sce.ops` function returning a scalar) and list their extra
    hyper-parameters in `_config_keys`.

    Args:
        item_embeddings: an Embedding-like layer (anything with `.embeddings`), a
            `[C, d]` variable, or None (bind later with `bind`).
        padding_id: ignored target id and never-negative table row (None: none).
        name: loss name.
        dtype: accepted for Keras compatibility; losses are computed in float32.
    """

    _config_keys: tuple[str, ...] = ()
    supports_sample_weight = True
    _keras_ops = False  # True for the keras.ops implementations (keras_sce.kops.losses)

    def __new__(cls, *args, **kwargs):
        # Other Keras backends (JAX): the keras.ops implementation, keras_sce.kops.losses.
        if keras.backend.backend() != "tensorflow":
            from keras_sce.kops.losses import keras_ops_class

            cls = keras_ops_class(cls)
        return super().__new__(cls)

    def __init__(self, item_embeddings=None, *, padding_id=0, name=None, dtype=None):
        if not self._keras_ops:
            require_tensorflow_backend(type(self).__name__)
        super().__init__(name=name, reduction="sum_over_batch_size", dtype=dtype)
        self.padding_id = checks.check_padding_id(padding_id, None)
        self.seed = None
        self._seed_stream = None
        self._item_embeddings = None
        self._table_path = None
        self.bind(item_embeddings)

    # -- the item table -------------------------------------------------------------
    def bind(self, item_embeddings):
        """Points the loss at its item table and returns `self`.

        `item_embeddings`: an Embedding-like layer, a variable, a Keras model (the
        table is then found by the variable path saved with the loss), a variable
        path string, or None (unbound).
        """
        if isinstance(item_embeddings, keras.Model):
            if self._table_path is None:
                warnings.warn(
                    f"{type(self).__name__}: no table path was saved with this loss (it was "
                    "bound to a variable without a Keras path), so it stays unbound; call "
                    "`loss.bind(<item embedding layer or variable>)`.",
                    UserWarning,
                    stacklevel=2,
                )
                return self
            matches = _match_path(item_embeddings.variables, self._table_path)
            if len(matches) != 1:
                found = "no variable" if not matches else f"{len(matches)} variables"
                raise ValueError(
                    f"{type(self).__name__}: {found} with path {self._table_path!r} in "
                    f"model {item_embeddings.name!r}"
                    + (f" ({[v.path for v in matches]})" if matches else "")
                    + "; pass the item embedding layer instead: `loss.bind(layer)`."
                )
            item_embeddings = matches[0]
        if isinstance(item_embeddings, str):
            self._table_path = item_embeddings
            self._item_embeddings = None
            return self
        if item_embeddings is not None:
            resolve_table(item_embeddings, allow_unbuilt=True)  # validates the kind
        self._item_embeddings = item_embeddings
        return self

    @property
    def item_embeddings(self):
        return self._item_embeddings

    def _table(self):
        if self._item_embeddings is None:
            where = f" (saved table path: {self._table_path!r})" if self._table_path else ""
            raise ValueError(
                f"This {type(self).__name__} is not bound to an item table{where}. Pass the "
                "item embedding layer or variable to the loss, or after "
                "keras.saving.load_model call `model.loss.bind(model)` "
                "(keras_sce.load_model does it for you)."
            )
        return table_value(resolve_table(self._item_embeddings))

    # -- the stream of seeds -----------------------------------------------------------
    def _init_seed(self, seed, seed_position=0):
        """A reproducible stream of stateless seeds from `seed` (None: no stream).

        `seed_position` is where the stream starts; `get_config` saves the
        current position, so a model saved and loaded again continues the stream
        instead of replaying the seeds it has already used.
        """
        self.seed = checks.as_int(seed, "seed", allow_none=True)
        checks.as_int(seed_position, "seed_position", minimum=0)
        self._seed_stream = None if self.seed is None else SeedStream(self.seed, seed_position)

    def _next_seed(self):
        return None if self._seed_stream is None else self._seed_stream.next()

    @property
    def seed_position(self) -> int:
        """How many seeds of the stream have been used (0 without a seed)."""
        return 0 if self._seed_stream is None else self._seed_stream.position()

    # -- computation ----------------------------------------------------------------
    def _op_kwargs(self) -> dict:
        """The keyword arguments of the loss's op for one step.

        The saved hyper-parameters (`_config_keys`, named as the op names them) and
        `padding_id`; `seed`, when saved, becomes the step's seed from the stream.
        """
        kwargs = {key: getattr(self, key) for key in self._config_keys}
        kwargs["padding_id"] = self.padding_id
        if "seed" in kwargs:
            kwargs["seed"] = self._next_seed()
        return kwargs

    def _compute(self, y_true, y_pred, table, sample_weight):
        raise NotImplementedError

    def call(self, y_true, y_pred, sample_weight=None):
        if sample_weight is not None and not self.supports_sample_weight:
            raise NotImplementedError(f"{type(self).__name__} does not take sample weights.")
        return self._compute(y_true, y_pred, self._table(), sample_weight)

    def __call__(self, y_true, y_pred, sample_weight=None):
        # Keras' default __call__ casts ids to float and re-reduces a per-sample
        # loss; here ids stay integers and the reduction belongs to the method.
        if keras_in_symbolic_scope():
            # Keras only infers output specs here (and, under tf.distribute, hands
            # placeholder targets of a made-up float dtype): check what can be
            # checked statically and return a float32 scalar.
            checks.check_table(tf.convert_to_tensor(y_pred), self._table())
            return tf.zeros([], tf.float32)
        with keras.name_scope(self.name):
            loss = self.call(y_true, y_pred, sample_weight)
            # As Keras' own losses do: under tf.distribute each replica's loss is
            # divided by the number of replicas (gradients are summed across them).
            replicas = tf.distribute.get_strategy().num_replicas_in_sync
            if replicas > 1:
                loss = loss * tf.cast(1.0 / replicas, loss.dtype)
            return loss

    # -- serialization --------------------------------------------------------------
    def get_config(self):
        config = super().get_config()
        config.pop("reduction", None)
        path = self._table_path
        if self._item_embeddings is not None:
            table = resolve_table(self._item_embeddings, allow_unbuilt=True)
            path = getattr(table, "path", None)
            if path is None and table is not None:
                warnings.warn(
                    f"{type(self).__name__}: the item table is a variable without a Keras "
                    "path, so a saved model cannot re-bind this loss on load.",
                    UserWarning,
                    stacklevel=2,
                )
            elif table is None:  # an unbuilt layer: its variable will be `<layer>/embeddings`
                path = f"{self._item_embeddings.path}/embeddings"
        config.update(item_embeddings=path, padding_id=self.padding_id)
        config.update({key: getattr(self, key) for key in self._config_keys})
        if self._seed_stream is not None:
            config["seed_position"] = self.seed_position
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        table = config.pop("item_embeddings", None)
        return cls(table, **config)
