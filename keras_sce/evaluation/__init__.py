"""keras_sce.evaluation: full-catalogue ranking metrics (no sampled metrics)."""

from keras_sce.evaluation.likelihood import catalogue_log_likelihood
from keras_sce.evaluation.perplexity import evaluate_next_token, next_token_metrics
from keras_sce.evaluation.ranking import (
    DEFAULT_KS,
    NonFiniteScoresError,
    evaluate_ranking,
    ranking_metrics,
    streamed_top_k,
)

__all__ = [
    "DEFAULT_KS",
    "NonFiniteScoresError",
    "catalogue_log_likelihood",
    "evaluate_next_token",
    "evaluate_ranking",
    "next_token_metrics",
    "ranking_metrics",
    "streamed_top_k",
]
