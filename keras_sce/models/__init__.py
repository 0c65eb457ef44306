"""keras_sce.models: SASRec."""

from keras_sce.models.sasrec import SASRec
from keras_sce.models.sasrec_block import SASRecBlock

__all__ = ["SASRec", "SASRecBlock"]
