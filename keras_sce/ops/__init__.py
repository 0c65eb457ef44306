"""keras_sce.ops."""
