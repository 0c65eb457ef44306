"""`python -m keras_sce`: the main job (see `keras_sce.cli`)."""

import sys

from keras_sce.cli import main

if __name__ == "__main__":
    sys.exit(main())
