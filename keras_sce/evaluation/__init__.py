"""keras_sce.evaluation."""
