"""keras_sce.sparsegrad."""
