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
# TensorFlow 2.21's oneDNN kernels corrupt the heap in the weight gradient of a 1x1 stride-2
# convolution with few channels on large maps (splitnet's first layer on RGB 64x64: Conv2D 3->3,
# batch 64; oneDNN's jit_1x1 backward_weights): fit dies with SIGSEGV, or with "malloc(): invalid
# size" when oneDNN is kept off AVX-512 (ONEDNN_MAX_CPU_ISA=AVX2). 28x28 grey inputs and 3x3 or
# stride-1 convolutions are not hit. TensorFlow's own kernels train these models as fast here
# (digits/splitnet, 3 epochs: 11.8 s against 12.6 s), so oneDNN is off unless the user turns it on.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

from runfolder.native_logs import quiet_native_stderr

with quiet_native_stderr():   # "All log messages before absl::InitializeLog()...", "cudart_stub ... cuda drivers"
    import tensorflow as tf
    import tf_keras as keras
    tf.get_logger().setLevel("ERROR")
    tf.config.list_physical_devices()   # finds no GPU now, not with "failed call to cuInit" at the first op

__all__ = ["keras", "tf"]
