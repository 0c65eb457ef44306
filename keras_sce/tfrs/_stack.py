"""Checks that the process runs the tf_keras stack that TensorFlow Recommenders needs.

TensorFlow Recommenders (TFRS) 0.7.x is written against `tf.keras` 2. Since
TensorFlow 2.16, `tf.keras` is Keras 3 unless the environment variable
`TF_USE_LEGACY_KERAS=1` is set *before* the first access to `tf.keras`; TensorFlow
resolves `tf.keras` once, on first use, and never again in that process. This
module turns every way of getting that wrong into an `ImportError` that says what
to do, instead of a confusing failure deep inside a model.
"""

from __future__ import annotations

import os
import sys

_TRUE_VALUES = ("1", "true", "True")  # what TensorFlow's lazy loader accepts

_HOW_TO = (
    "Set the environment variable before anything touches `tf.keras` — in the shell:\n"
    "    TF_USE_LEGACY_KERAS=1 python your_script.py\n"
    "or as the very first lines of your program, before importing tensorflow_recommenders, "
    "tf_keras or any library that uses `tf.keras`:\n"
    "    import os\n"
    '    os.environ["TF_USE_LEGACY_KERAS"] = "1"\n'
    "(Setting it after `import tensorflow` is fine, as long as `tf.keras` was not used yet.) "
    "Keras 3 code (keras_sce.SCELoss, keras-rs) keeps working in the same process."
)


def _tf_keras_flavour():
    """Which Keras `tf.keras` already resolved to: "tf_keras", "keras_3", "keras_2" or None.

    None means not resolved yet (or TensorFlow not imported). Never triggers the
    resolution it observes.
    """
    tf = sys.modules.get("tensorflow")
    if tf is None:
        return None
    keras_attr = tf.__dict__.get("keras")
    if keras_attr is None:
        return None
    state = vars(keras_attr)
    if "_tfll_initialized" in state:
        # Still TensorFlow's KerasLazyLoader: its state lives in its __dict__.
        if not state["_tfll_initialized"]:
            return None
        return state.get("_tfll_keras_version")
    # Once used, the loader replaces itself in `tensorflow` by the module it loaded.
    name = state.get("__name__", "")
    if name.startswith("tf_keras"):
        return "tf_keras"
    version = state.get("__version__", "")
    if not version and callable(state.get("version")):
        version = state["version"]()
    if name.startswith("keras._tf_keras") or str(version).startswith("3."):
        return "keras_3"
    return "keras_2"


def check_legacy_keras_stack(feature: str = "keras_sce.tfrs"):
    """Imports and returns `(tf_keras, tensorflow_recommenders)`, or raises ImportError.

    Raises:
        ImportError: when `TF_USE_LEGACY_KERAS` is not set, when `tf.keras`
            was already resolved to Keras 3 in this process, or when `tf_keras`
            or `tensorflow-recommenders` is not installed. The message says
            exactly what to do.
    """
    value = os.environ.get("TF_USE_LEGACY_KERAS")
    if value not in _TRUE_VALUES:
        shown = "not set" if value is None else f"set to {value!r}"
        raise ImportError(
            f"{feature} needs TensorFlow Recommenders, which runs only on tf_keras (Keras 2), "
            f"but the environment variable TF_USE_LEGACY_KERAS is {shown}, so `tf.keras` "
            f"is Keras 3.\n{_HOW_TO}"
        )
    flavour = _tf_keras_flavour()
    if flavour == "keras_3":
        raise ImportError(
            f"{feature}: TF_USE_LEGACY_KERAS is set, but too late — `tf.keras` was already "
            f"resolved to {flavour!r} (Keras 3) earlier in this process, and TensorFlow never "
            f"resolves it again. Something used `tf.keras` before the variable was set.\n"
            f"{_HOW_TO}"
        )
    try:
        import tf_keras
    except ImportError as err:
        raise ImportError(
            f"{feature} needs the `tf_keras` package (Keras 2 for TensorFlow 2.16+). "
            "Install it with `pip install 'keras-sce[tfrs]'` (or `pip install tf-keras`)."
        ) from err
    try:
        import tensorflow_recommenders as tfrs
    except ImportError as err:
        if "Keras" in str(err) or "keras" in str(err):
            raise ImportError(
                f"{feature}: tensorflow_recommenders refused to load ({err}).\n{_HOW_TO}"
            ) from err
        raise ImportError(
            f"{feature} needs TensorFlow Recommenders. Install it with "
            "`pip install 'keras-sce[tfrs]'` (or `pip install tensorflow-recommenders`)."
        ) from err
    return tf_keras, tfrs
