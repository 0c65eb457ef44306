"""keras_sce.models: SASRec."""

from keras_sce.models.sasrec import SASRec, SASRecBlock

__all__ = ["SASRec", "SASRecBlock"]
