"""keras_sce.evaluation: full-catalogue ranking metrics (no sampled metrics)."""

from keras_sce.evaluation.perplexity import evaluate_next_token, next_token_metrics
from keras_sce.evaluation.ranking import (
    DEFAULT_KS,
    evaluate_ranking,
    ranking_metrics,
    streamed_top_k,
)

__all__ = ["DEFAULT_KS", "evaluate_ranking", "ranking_metrics", "streamed_top_k"]
__all__ += ["evaluate_next_token", "next_token_metrics"]
