"""keras_sce.datasets."""
