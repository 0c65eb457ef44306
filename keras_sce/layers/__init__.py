"""keras_sce.layers."""
