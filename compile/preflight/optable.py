"""What Edge TPU compiler 16.0 accepts: supported ops, their limits, op versions.

Plain data with a source for every entry, read by ``compile.preflight.check``.

Sources (cited by key in the tables below):
  coral-ops   Coral, "TensorFlow models on the Edge TPU", Table 1 "supported
              operations" and "Model requirements" (int8/uint8, static sizes,
              only the 3 innermost dimensions may be > 1), and "Compiling"
              ("the compiler cannot partition the model more than once ...
              that operation and everything after it executes on the CPU"):
              https://coral.ai/docs/edgetpu/models-intro/
  coral-cc    Coral, "Edge TPU Compiler": options, co-compilation, 8 MB of
              SRAM for parameter caching, a part reserved for the executable:
              https://coral.ai/docs/edgetpu/compiler/
  tf-rv       TensorFlow lite/tools/versioning/runtime_version.cc (read at
              commit 00b1ec2ad4b0ecd5275167371cc5d5570fba8e4c): the TF release
              that introduced each (op, version). Compiler 16.0 (July 2021, CL
              384591198) parses models with a TFLite op resolver of the TF 2.5
              era: versions dated 2.7.0 and later are refused (gh631, gh879,
              tfm2633); versions dated 2.6.0 (TF 2.6 branched about when 16.0
              was built) are UNCERTAIN_VERSIONS: reported, not predicted refused.
  gh879       github.com/google-coral/edgetpu/issues/879: compiler 16.0
              refuses QUANTIZE version 3 (TF 2.7+, per-channel quantize).
  gh631       github.com/google-coral/edgetpu/issues/631: compiler 16.0
              refuses CONV_2D version 6 from TF 2.9.1 ("Didn't find op for
              builtin opcode 'CONV_2D' version '6'").
  tfm2633     github.com/tensorflow/tflite-micro/issues/2633: compiler 16.0
              refuses EXP version 2 (TF 2.16): "Invalid model ... Model could
              not be parsed".
  twin:<name> the real compiled twin <name>_edgetpu.tflite in
              shared/coral_test_data: this version was mapped to the Edge TPU.
  log:<file>  a real compiler log in tests/data/edgetpu_compiler/.
  pair:<name> a (source, compiled twin) pair in tests/data/edgetpu_pairs/ (SOURCES.md
              there says where each comes from): where the real compiler put each op.
  gh31        github.com/google-coral/edgetpu/issues/31: a bilinear UpSampling2D x2
              to 512x512x32 is not mapped ("unspecified limitation"); from a 128x128
              input (to 128x128) it is.
  gh30        github.com/google-coral/edgetpu/issues/30: CONV_2D with batch 30:
              "Tensor has unsupported rank (up to 3 innermost dimensions mapped)".
"""

ON_CHIP_BYTES = 8 << 20
"""Edge TPU SRAM for parameter caching ("8 MB", coral-cc)."""

from tflitegraph.edgetpu_latency import USABLE_ON_CHIP_BYTES  # noqa: E402  (~7.0 MiB, with its evidence)

# Status strings the real compiler prints in its operation table.
MAPPED = "Mapped to Edge TPU"
NOT_SUPPORTED = "Operation not supported"
BAD_TYPE = "Operation is working on an unsupported data type"
UNSPECIFIED = "Operation is otherwise supported, but not mapped due to some unspecified limitation"
ONE_SUBGRAPH = "More than one subgraph is not supported"
BAD_VERSION = "Operation version not supported"
BAD_RANK = "Tensor has unsupported rank (up to 3 innermost dimensions mapped)"   # gh30

# op -> (lowest Edge TPU runtime that maps it, known limitation as Coral states it).
# "All" in Coral's table is runtime 10, the oldest the compiler targets.
SUPPORTED_OPS = {
    "ADD": (10, ""),
    "AVERAGE_POOL_2D": (10, "No fused activation function."),
    "CONCATENATION": (10, ("No fused activation function. If any input is a compile-time constant "
                           "tensor, there must be only 2 inputs, and this constant tensor must be "
                           "all zeroes (effectively, a zero-padding op).")),
    "CONV_2D": (10, "Must use the same dilation in x and y dimensions."),
    "DEPTHWISE_CONV_2D": (10, ("Must use the same dilation in x and y dimensions (runtime 13+; "
                               "no dilation before).")),
    "EXPAND_DIMS": (13, ""),
    "FULLY_CONNECTED": (10, ("Only the default format is supported for fully-connected weights. "
                             "Output tensor is one-dimensional.")),
    "L2_NORMALIZATION": (10, ""),
    "LOGISTIC": (10, ""),
    "UNIDIRECTIONAL_SEQUENCE_LSTM": (14, "Unidirectional LSTM only."),
    "MAXIMUM": (10, ""),
    "MAX_POOL_2D": (10, "No fused activation function."),
    "MEAN": (10, ("No reduction in batch dimension. If a z-reduction, the z-dimension must be "
                  "multiple of 4.")),
    "MINIMUM": (10, ""),
    "MUL": (10, ""),
    "PACK": (13, "No packing in batch dimension."),
    "PAD": (10, "No padding in batch dimension."),
    "PRELU": (13, "Alpha must be 1-dimensional (only the innermost dimension can be >1 size)."),
    "QUANTIZE": (13, ""),
    "REDUCE_MAX": (14, "Cannot operate on the batch dimension."),
    "REDUCE_MIN": (14, "Cannot operate on the batch dimension."),
    "RELU": (10, ""),
    "RELU6": (10, ""),
    "RELU_N1_TO_1": (10, ""),
    "RESHAPE": (10, "Certain reshapes might not be mapped for large tensor sizes."),
    "RESIZE_BILINEAR": (10, ("Input/output is a 3-dimensional tensor. Depending on input/output "
                             "size, this operation may not be mapped to the Edge TPU to avoid loss "
                             "in precision.")),
    "RESIZE_NEAREST_NEIGHBOR": (10, ("Input/output is a 3-dimensional tensor. Depending on "
                                     "input/output size, this operation may not be mapped to the "
                                     "Edge TPU to avoid loss in precision.")),
    "RSQRT": (14, ""),
    "SLICE": (10, ""),
    "SOFTMAX": (10, "Supports only 1-D input tensor with a max of 16,000 elements."),
    "SPACE_TO_DEPTH": (10, ""),
    "SPLIT": (10, "No splitting in batch dimension."),
    "SQUARED_DIFFERENCE": (14, ""),
    "SQUEEZE": (10, ""),
    "STRIDED_SLICE": (10, ("Supported only when all strides are equal to 1 (that is, effectively a "
                           "Slice op), and with ellipsis-axis-mask == 0, and new-axis-max == 0.")),
    "SUB": (10, ""),
    "SUM": (13, "Cannot operate on the batch dimension."),
    "TANH": (10, ""),
    "TRANSPOSE": (14, ""),
    "TRANSPOSE_CONV": (10, ""),
}
SUPPORTED_SOURCE = "coral-ops"

# Ops Coral's table omits that a real compiler mapped: (runtime as for SUPPORTED_OPS, what was seen).
# The runtime the twin targeted is not recorded; 14 is compiler 15/16's default.
SEEN_OPS = {
    "TILE": (14, ("pair:deeplab_mobilenet_edgetpu_slim_cityscapes_quant: TILE v1, uint8, constant "
                  "multiples, 1x1x1x128 -> 1x33x33x128 mapped")),
}
SUPPORTED_OPS.update(SEEN_OPS)

# Image resizes (RESIZE_BILINEAR, RESIZE_NEAREST_NEIGHBOR), "depending on input/output size" (coral-ops).
# Seen mapped: x1 at 33x33 and x2 up to 48x48 (pair:deeplab_mobilenet_edgetpu_slim_cityscapes_quant,
# pair:movenet_single_pose_lightning_ptq), x2 to 128x128 (gh31). Seen on the CPU: x33 from 1x1 to 33x33
# (pair:deeplabv3_mnv2_pascal_quant), 33x33 to 513x513 (pair:deeplab_mobilenet_edgetpu_slim_cityscapes_quant),
# x2 to 512x512 (gh31). Between what was seen mapped and on the CPU: mapped, reported as a risk.
RESIZE_MAPPED_FACTOR = 2            # the largest upscale seen mapped
RESIZE_CPU_FACTOR = 33              # the smallest upscale seen on the CPU
RESIZE_MAPPED_PIXELS = 128 * 128    # the largest output (height x width) seen mapped
RESIZE_CPU_PIXELS = 512 * 512       # the smallest output seen on the CPU
SOFTMAX_MAX_ELEMENTS = 16000   # coral-ops, Softmax row
MEAN_Z_MULTIPLE = 4            # coral-ops, Mean row

# Ops that may read or write float32 in a quantized model: they run on the CPU
# beside the Edge TPU part (coral-ops, "Float input and output tensors").
FLOAT_BOUNDARY_OPS = {"QUANTIZE", "DEQUANTIZE"}

# op -> (highest version compiler 16.0 parses, sources). The limit is the last
# version tf-rv dates to TF 2.5.0 or earlier. An op above it makes the compiler
# refuse the WHOLE model ("Model could not be parsed"), whatever the op is.
# Lower bounds seen mapped in real compiled models are in SEEN_MAPPED.
VERSION_LIMITS = {
    "ADD": (3, "tf-rv (v4: 2.6.0)"),
    "AVERAGE_POOL_2D": (3, "tf-rv"),
    "CONCATENATION": (3, "tf-rv"),
    "CONV_2D": (5, "tf-rv (v6: 2.9.0); gh631 (v6 refused by 16.0)"),
    "DEPTHWISE_CONV_2D": (6, "tf-rv"),
    "DEQUANTIZE": (4, "tf-rv (v5: 2.7.0)"),
    "EXP": (1, "tf-rv; tfm2633 (v2 refused by 16.0)"),
    "EXPAND_DIMS": (1, "tf-rv"),
    "FULLY_CONNECTED": (9, "tf-rv (v10+: later releases)"),
    "L2_NORMALIZATION": (2, "tf-rv"),
    "LOGISTIC": (3, "tf-rv"),
    "UNIDIRECTIONAL_SEQUENCE_LSTM": (3, "tf-rv"),
    "MAXIMUM": (4, "tf-rv"),
    "MAX_POOL_2D": (3, "tf-rv"),
    "MEAN": (3, "tf-rv"),
    "MINIMUM": (4, "tf-rv"),
    "MUL": (4, "tf-rv (v5: 2.6.0)"),
    "PACK": (3, "tf-rv"),
    "PAD": (3, "tf-rv (v4: 2.6.0)"),
    "PRELU": (1, "tf-rv"),
    "QUANTIZE": (2, "tf-rv (v3: 2.7.0); gh879 (v3 refused by 16.0)"),
    "REDUCE_MAX": (3, "tf-rv"),
    "REDUCE_MIN": (3, "tf-rv"),
    "RELU": (3, "tf-rv"),
    "RELU6": (3, "tf-rv"),
    "RELU_N1_TO_1": (1, "tf-rv"),
    "RESHAPE": (1, "tf-rv"),
    "RESIZE_BILINEAR": (4, "tf-rv"),
    "RESIZE_NEAREST_NEIGHBOR": (4, "tf-rv"),
    "RSQRT": (2, "tf-rv"),
    "SLICE": (5, "tf-rv"),
    "SOFTMAX": (3, "tf-rv"),
    "SPACE_TO_DEPTH": (2, "tf-rv"),
    "SPLIT": (4, "tf-rv"),
    "SQUARED_DIFFERENCE": (2, "tf-rv"),
    "SQUEEZE": (2, "tf-rv"),
    "STRIDED_SLICE": (5, "tf-rv (v6: 2.6.0)"),
    "SUB": (5, "tf-rv"),
    "SUM": (2, "tf-rv"),
    "TANH": (3, "tf-rv"),
    "TRANSPOSE": (5, "tf-rv"),
    "TRANSPOSE_CONV": (3, "tf-rv"),
    "TILE": (2, "tf-rv (v3: 2.8.0)"),
}

# op -> (version seen mapped to the Edge TPU by a real compiler, source): a proven
# lower bound for VERSION_LIMITS. tests/test_op_versions.py re-derives the twin
# entries from shared/coral_test_data and checks them against both tables.
SEEN_MAPPED = {
    "CONV_2D": (1, "twin:mobilenet_v1_0.25_128_quant"),
    "DEPTHWISE_CONV_2D": (1, "twin:mobilenet_v1_0.25_128_quant"),
    "AVERAGE_POOL_2D": (1, "twin:mobilenet_v1_0.25_128_quant"),
    "RESHAPE": (1, "twin:mobilenet_v1_0.25_128_quant, twin:keras_lstm_mnist_ptq"),
    "SOFTMAX": (2, "twin:keras_lstm_mnist_ptq"),
    "CONCATENATION": (1, "twin:split_concat"),
    "SPLIT": (1, "twin:split_concat"),
    "QUANTIZE": (1, "twin:keras_lstm_mnist_ptq"),
    "UNIDIRECTIONAL_SEQUENCE_LSTM": (1, "twin:keras_lstm_mnist_ptq"),
    "FULLY_CONNECTED": (4, "twin:keras_lstm_mnist_ptq"),
}


# (op, version) dated TF 2.6.0 by tf-rv, one above VERSION_LIMITS: the compiler may
# or may not know them. The check warns instead of predicting a refusal.
UNCERTAIN_VERSIONS = {("ADD", 4), ("MUL", 5), ("PAD", 4), ("STRIDED_SLICE", 6)}


def version_limit(op):
    """(highest version compiler 16.0 parses, source) for ``op``, or (None, why) if unknown."""
    if op in VERSION_LIMITS:
        return VERSION_LIMITS[op]
    return None, "not in the table (only Edge TPU ops and DEQUANTIZE/EXP are listed)"


# How often the prediction placed an op where the real compiler did, over every (model, compiled
# twin) pair in tests/data/edgetpu_pairs (tests/test_preflight_pairs.py measures it again).
AGREEMENT = {"models": 31, "ops": 1459, "agreeing": 1459}


def agreement_line():
    """The agreement in words, for ``python -m compile check`` to print once."""
    a = AGREEMENT
    return (f"checked against {a['models']} models the real compiler compiled ({a['ops']} ops): "
            f"{a['agreeing']} ops ({100 * a['agreeing'] / a['ops']:.1f}%) predicted where it put them; "
            "models unlike those can still differ")
