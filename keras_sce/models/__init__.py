"""keras_sce.models."""
