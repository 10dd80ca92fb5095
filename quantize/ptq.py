"""Full-integer post-training quantization of a Keras model with representative data.

Every op is int8 (``TFLITE_BUILTINS_INT8``), as the Edge TPU requires; the
model's input and output are uint8 (default) or int8. The converter sees a
batch-1 graph, so no dynamic-shape ops (SHAPE, STRIDED_SLICE, PACK) appear.
"""
import numpy as np

from runfolder.native_logs import quiet_native_stderr
from training.keras_setup import tf
from runfolder.errors import UserError

IO_TYPES = {"uint8": tf.uint8, "int8": tf.int8}


class QuantizeError(UserError, ValueError):
    """Conversion or its inputs are not as full-int8 quantization needs."""


def convert_int8(model, representative, io_type="uint8"):
    """Converts a Keras model to full-int8 tflite bytes.

    Args:
      model: a tf_keras model with one float input.
      representative: float32 array (N, H, W, C) of calibration inputs, drawn
        from the training split only.
      io_type: "uint8" or "int8" for the model's input and output.
    Returns:
      The .tflite model as bytes.
    """
    if io_type not in IO_TYPES:
        raise QuantizeError(f"--io-type must be one of {sorted(IO_TYPES)}, got '{io_type}'")
    if len(representative) == 0:
        raise QuantizeError("no representative samples for calibration; the training split is empty")
    shape = [1] + list(model.input_shape[1:])
    function = tf.function(lambda image: model(image, training=False))
    concrete = function.get_concrete_function(tf.TensorSpec(shape, tf.float32, name="image"))

    def samples():
        for sample in representative:
            yield [np.asarray(sample, np.float32)[np.newaxis]]

    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = samples
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = IO_TYPES[io_type]
    converter.inference_output_type = IO_TYPES[io_type]
    with quiet_native_stderr():   # "fully_quantize: 0, inference_type: 6, ..."
        return converter.convert()
