"""The TFRS adapter's stack checks, in fresh processes (runs with or without the variable)."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import textwrap

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]


def _run(code: str, legacy: bool) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("TF_USE_LEGACY_KERAS", None)
    if legacy:
        env["TF_USE_LEGACY_KERAS"] = "1"
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_keras_sce_never_touches_tf_keras_and_tfrs_import_errors_say_what_to_do():
    result = _run(
        """
        import os, sys
        import keras_sce
        import tensorflow as tf

        # 1. `import keras_sce` (Keras 3) leaves tf.keras unresolved and TFRS unloaded.
        assert not vars(tf.keras)["_tfll_initialized"], "import keras_sce resolved tf.keras"
        assert "tf_keras" not in sys.modules and "tensorflow_recommenders" not in sys.modules

        # 2. Without the variable: an ImportError that says what to do.
        try:
            import keras_sce.tfrs
        except ImportError as err:
            message = str(err)
        else:
            raise AssertionError("keras_sce.tfrs imported without TF_USE_LEGACY_KERAS")
        assert "TF_USE_LEGACY_KERAS=1" in message and "is not set" in message, message
        assert 'os.environ["TF_USE_LEGACY_KERAS"] = "1"' in message, message
        assert not vars(tf.keras)["_tfll_initialized"], "the check itself resolved tf.keras"

        # 3. Setting it after tf.keras resolved to Keras 3 is too late: say so.
        assert tf.keras.version().startswith("3.")
        os.environ["TF_USE_LEGACY_KERAS"] = "1"
        try:
            import keras_sce.tfrs
        except ImportError as err:
            message = str(err)
        else:
            raise AssertionError("keras_sce.tfrs imported with tf.keras already Keras 3")
        assert "too late" in message and "keras_3" in message, message
        print("CHECKS-OK")
        """,
        legacy=False,
    )
    assert "CHECKS-OK" in result.stdout, result.stdout + result.stderr


def test_import_works_with_the_variable_set_after_importing_tensorflow():
    result = _run(
        """
        import os
        import tensorflow as tf
        import keras_sce
        os.environ["TF_USE_LEGACY_KERAS"] = "1"  # after `import tensorflow`: still fine
        import tensorflow_recommenders as tfrs  # resolves tf.keras to tf_keras first
        import tf_keras
        from keras_sce.tfrs import SCERetrieval
        from keras_sce.tfrs._stack import _tf_keras_flavour
        assert _tf_keras_flavour() == "tf_keras", _tf_keras_flavour()
        assert issubclass(SCERetrieval, tfrs.tasks.base.Task)
        assert issubclass(SCERetrieval, tf_keras.layers.Layer)
        assert tf.keras.layers.Layer is tf_keras.layers.Layer
        print("IMPORT-OK")
        """,
        legacy=False,
    )
    assert "IMPORT-OK" in result.stdout, result.stdout + result.stderr
