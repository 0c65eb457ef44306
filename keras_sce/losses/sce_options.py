"""`SCEOptions`: the options of Scalable Cross-Entropy, validated in one place.

Every front end of `keras_sce.ops.scalable_cross_entropy` (the Keras 3
`keras_sce.SCELoss` and the TFRS task `keras_sce.tfrs.SCERetrieval`)
takes these options with these defaults: their constructors read the defaults from
this class, so the two cannot drift apart.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from keras_sce.ops import checks
from keras_sce.ops.calibration import resolve_calibration
from keras_sce.ops.defaults import DEFAULT_BUCKET_SIZE_Y, DEFAULT_CHUNK_SIZE
from keras_sce.ops.sce import check_options


@dataclasses.dataclass(frozen=True)
class SCEOptions:
    """The hyper-parameters of Scalable Cross-Entropy (arXiv 2409.18721), checked.

    SCE draws `num_buckets` random centres; each bucket collects the
    `bucket_size_x` rows (queries, hidden states) and the `bucket_size_y` items
    with the largest inner product with its centre, and each row's softmax runs over
    its positive and the hard negatives of its bucket.

    Args:
        num_buckets: number of buckets `n_b`. None: `int(2 * sqrt(N))` with
            `N` the rows of the batch (`batch x length` for sequences), the
            authors' rule (from the static batch shape, or from the actual batch if
            it is dynamic). With much padding, pass
            `2 * sqrt(non-padding rows per batch)`.
        bucket_size_x: rows per bucket `b_x`; None: the same rule. Clamped to the
            rows of the batch (with a warning when an explicit value is clamped).
        bucket_size_y: items per bucket `b_y` (hard negatives per row), default
            256 (the paper uses 64-4096). Clamped, with a warning, to the number of
            non-padding items.
        mix_x: draw the centres as random mixtures of the batch's rows instead of
            Gaussian noise (the paper's remedy for bucket collapse; dataset
            dependent). Defaults to False.
        padding_id: target id of padding positions (ignored) and table row never
            used as a negative, default 0 (the padding row of sequence models, the
            OOV row of a `StringLookup` vocabulary). None when every row of the
            table is a real item.
        chunk_size: items per chunk of the streamed item search: its peak
            memory is `n_b x (b_y + chunk)` scores instead of `n_b x C`. None
            materialises the whole projection (fastest for small catalogues). The
            default, 65,536, costs nothing below that size.
        seed: None for fresh centres from TensorFlow's global generator; an int for
            a reproducible stream of centres (fresh at every step, the same
            sequence for the same seed, whichever front end draws them).
        calibration: None (default: SCE as published) or calibrated SCE, whose row
            losses estimate the full-softmax cross-entropy: True (defaults), a dict
            of options (`num_samples`, `proposal` = `"uniform"` |
            `"unigram"` | `"cover"`, `item_counts`, `power`,
            `uniform_mix`) or a `keras_sce.ops.calibration.Calibration`; see
            docs/calibrated-sce.md.
        check_ids: check that the target ids are rows of the table: an error
            outside XLA, a NaN loss under XLA (which drops assertions). Costs one
            reduction over the ids. Defaults to True.

    Raises:
        ValueError: a size that is not a positive integer, or a negative
            `padding_id`.
        TypeError: a `seed` or `padding_id` that is not an integer, or a
            `calibration` of an unknown kind.

    Example:

    >>> from keras_sce.losses import SCEOptions
    >>> SCEOptions(bucket_size_y=128).bucket_size_y
    128
    >>> SCEOptions().padding_id
    0
    """

    num_buckets: int | None = None
    bucket_size_x: int | None = None
    bucket_size_y: int = DEFAULT_BUCKET_SIZE_Y
    mix_x: bool = False
    padding_id: int | None = 0
    chunk_size: int | None = DEFAULT_CHUNK_SIZE
    seed: int | None = None
    calibration: Any = None
    check_ids: bool = True

    def __post_init__(self):
        sizes = check_options(
            self.num_buckets, self.bucket_size_x, self.bucket_size_y, self.chunk_size
        )
        checked = dict(
            zip(("num_buckets", "bucket_size_x", "bucket_size_y", "chunk_size"), sizes,
                strict=True),
            mix_x=bool(self.mix_x),
            padding_id=checks.check_padding_id(self.padding_id, None),
            seed=checks.as_int(self.seed, "seed", allow_none=True),
            calibration=resolve_calibration(self.calibration),
            check_ids=bool(self.check_ids),
        )
        for name, value in checked.items():
            object.__setattr__(self, name, value)  # frozen: set once, here

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The option names, in the order of the constructors' keyword arguments."""
        return tuple(field.name for field in dataclasses.fields(cls))

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """`{name: default}` for every option."""
        return {field.name: field.default for field in dataclasses.fields(cls)}

    def op_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of `keras_sce.ops.scalable_cross_entropy` (no seed)."""
        kwargs = {name: getattr(self, name) for name in self.names()}
        del kwargs["seed"]  # each front end draws its own seeds from its stream
        return kwargs

    def get_config(self) -> dict[str, Any]:
        """The options as plain Python values (`calibration` as its config dict)."""
        config = {name: getattr(self, name) for name in self.names()}
        if self.calibration is not None:
            config["calibration"] = self.calibration.get_config()
        return config
