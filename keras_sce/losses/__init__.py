"""keras_sce.losses."""
