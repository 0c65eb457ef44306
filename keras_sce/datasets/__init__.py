"""keras_sce.datasets: interaction loaders, leave-one-out split, tf.data pipelines."""

from keras_sce.datasets.gcide import GcideEntry, load_gcide_corpus, parse_gcide, read_gcide
from keras_sce.datasets.gcide_pos import (
    DEFAULT_POS_LABELS,
    TextClassificationSplit,
    TextClassificationTask,
    load_gcide_pos,
)
from keras_sce.datasets.sequence_text import load_sequences_txt
from keras_sce.datasets.sequences import PADDING_ID, SequenceData
from keras_sce.datasets.split import (
    LeaveOneOutSplit,
    evaluation_arrays,
    leave_one_out,
    pad_sequences,
    training_arrays,
    training_dataset,
)
from keras_sce.datasets.synthetic import synthetic_sequences
from keras_sce.datasets.tabular import load_interactions_csv, load_movielens
from keras_sce.datasets.token_corpus import OOV_ID, TokenCorpus, TokenSplit
from keras_sce.datasets.tokens import load_token_corpus
from keras_sce.datasets.user_item_pairs import from_user_item_pairs

__all__ = [
    "PADDING_ID",
    "LeaveOneOutSplit",
    "SequenceData",
    "evaluation_arrays",
    "from_user_item_pairs",
    "leave_one_out",
    "load_interactions_csv",
    "load_movielens",
    "load_sequences_txt",
    "pad_sequences",
    "synthetic_sequences",
    "training_arrays",
    "training_dataset",
]
__all__ += ["GcideEntry", "OOV_ID", "TokenCorpus", "TokenSplit", "load_gcide_corpus",
            "load_token_corpus", "parse_gcide", "read_gcide"]
__all__ += ["DEFAULT_POS_LABELS", "TextClassificationSplit", "TextClassificationTask",
            "load_gcide_pos"]
