"""The project's Keras flavour: tf_keras (Keras 2) on TensorFlow, chosen on purpose.

tensorflow-model-optimization's quantization-aware training works on tf_keras
models and not on Keras 3 models, so the whole project trains, saves and
converts with tf_keras. ``TF_USE_LEGACY_KERAS=1`` must be set before
TensorFlow is first imported; importing this module does that.
"""
import os

if os.environ.get("TF_USE_LEGACY_KERAS", "1") != "1":
    raise ImportError(
        f"TF_USE_LEGACY_KERAS is set to {os.environ['TF_USE_LEGACY_KERAS']!r}; this project uses tf_keras "
        "(Keras 2) so that quantization-aware training works. Unset it or set it to 1")
os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf
import tf_keras as keras

__all__ = ["keras", "tf"]
