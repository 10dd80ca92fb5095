"""Lowers operator-code versions that compiler 16.0 cannot parse, where that is safe.

Newer converters may stamp a higher version on an op than compiler 16.0's
TF 2.5-era parser knows (``compile.preflight.optable.VERSION_LIMITS``); the compiler then
refuses the whole model. An op's version only records which kernel features it
needs. TensorFlow derives it from the op's tensor types and options
(``GetBuiltinOperatorVersion`` in tensorflow/lite/tools/versioning/op_version.cc,
read at commit 02087409073e69754277a2d2cf20af23a44334de),
and a TFLite kernel is one registration for a range of versions whose code path
is chosen from those same types and options, never from the version number. So
when an op uses none of the features a higher version stands for, rewriting its
version to the one op_version.cc gives for its actual signature changes nothing
it computes. ``required_version`` re-derives that version for the int8/uint8
signatures below; every other case is left alone (and stays a pre-flight problem).

Per op, what the versions above the int8/uint8 one stand for (op_version.cc):
  CONV_2D            4 int16, 5 hybrid per-channel, 6 grouped conv, 7 int4 filter,
                     8 quantized bias type; int8 -> 3, uint8 -> 1.
  DEPTHWISE_CONV_2D  4/6 hybrid, 5 int16, 7 int4; int8 -> 3, uint8 -> 1 (2 if dilated).
  FULLY_CONNECTED    5 keep_num_dims, 6 two inputs (no bias slot), 7 int16, 8 sparse weights, 9 hybrid
                     asymmetric, 10 int4, 11 quantized bias, 12 hybrid per-channel;
                     int8 -> 4, uint8 -> 1 (default weights format).
  ADD                3 int16 without pot scale, 4 int64, 5 int16 unquantized; int8 -> 2.
  SUB                3 broadcast over more than 4-D, 4 int64, 5 int16; int8 -> 2.
  MUL                3 rescale >= 1, 4 int16, 5 int64, 6 complex, 7 int16/uint32; int8 -> 2.
  PAD                3 int16, 4 more than 4-D; int8 -> 2.
  STRIDED_SLICE      3 bool, 4 more than 4-D, 5 string, 6 ellipsis/new-axis masks,
                     7 uint32, 8 offset; int8 -> 2.
  QUANTIZE           2 int16 output, 3 per-channel, 4 int4; else 1.
  DEQUANTIZE         3 int16/float16, 4 (sparse), 5 per-channel, 6 int4; int8 -> 2.
  CONCATENATION, AVERAGE_POOL_2D, MAX_POOL_2D, SOFTMAX, MEAN, REDUCE_MAX,
  REDUCE_MIN, RELU6, RSQRT, LOGISTIC, TANH
                     3 int16 (4 uint32 for CONCATENATION); int8 -> 2.
  RESHAPE            one version for int8/uint8 -> 1.
Ops of other types, and any tensor type but int8/uint8 (int32 for bias and shape
operands), are not rewritten.
"""
from compile.preflight import optable as T
from compile.preflight.opcheck import options
from tflitegraph import schema as fb
from tflitegraph.graph import read_graph

_INT8_TWO = {"ADD", "CONCATENATION", "AVERAGE_POOL_2D", "MAX_POOL_2D", "SOFTMAX", "MEAN",
             "REDUCE_MAX", "REDUCE_MIN", "RELU6", "RSQRT", "LOGISTIC", "TANH"}


def required_version(graph, index):
    """(version, None) the op's own signature needs, or (None, why it is not derived)."""
    op = graph.ops[index]
    tensors = graph.tensors
    ins = [tensors[t] for t in op.inputs if t >= 0]
    outs = [tensors[t] for t in op.outputs if t >= 0]
    activations = [t for t in ins + outs if not t.is_constant]
    odd = [t for t in ins + outs if t.dtype not in ("int8", "uint8", "int32")]
    if op.name not in ("QUANTIZE", "DEQUANTIZE") and (
            odd or any(t.dtype == "int32" for t in activations)):
        return None, "uses tensor types other than int8/uint8"
    int8 = any(t.dtype == "int8" for t in activations)
    opts = options(graph, index)
    name = op.name
    if name in _INT8_TWO:
        return (2 if int8 else 1), None
    if name == "RESHAPE":
        return 1, None
    if name == "CONV_2D":
        grouped = len(ins[1].shape) == 4 and ins[0].shape and ins[0].shape[-1] != ins[1].shape[3]
        if grouped or getattr(opts, "quantizedBiasType", 0):
            return None, "grouped convolution or quantized bias type"
        return (3 if int8 else 1), None
    if name == "DEPTHWISE_CONV_2D":
        dilated = opts is not None and (opts.dilationHFactor != 1 or opts.dilationWFactor != 1)
        return (3 if int8 else 2 if dilated else 1), None
    if name == "FULLY_CONNECTED":
        if len(op.inputs) < 3 or opts is None or opts.keepNumDims \
                or opts.weightsFormat or getattr(opts, "quantizedBiasType", 0) \
                or graph.model.subgraphs[0].tensors[op.inputs[1]].sparsity is not None:
            return None, "2 inputs, keep_num_dims, shuffled or sparse weights, or quantized bias"
        return (4 if int8 else 1), None
    if name in ("SUB", "PAD"):
        if any(len(t.shape) > 4 for t in ins):
            return None, "tensors of more than 4 dimensions"
        return (2 if int8 else 1), None
    if name == "MUL":
        return _mul_version(graph, op, int8), None
    if name == "STRIDED_SLICE":
        if opts is None or opts.ellipsisMask or opts.newAxisMask or getattr(opts, "offset", False) \
                or len(ins[0].shape) > 4:
            return None, "ellipsis/new-axis mask, offset, or more than 4 dimensions"
        return (2 if int8 else 1), None
    if name == "QUANTIZE":
        if outs[0].dtype not in ("int8", "uint8") or len(outs[0].scale) > 1:
            return None, "int16/int4 output or per-channel quantization"
        return 1, None
    if name == "DEQUANTIZE":
        if ins[0].dtype not in ("int8", "uint8") or len(ins[0].scale) > 1:
            return None, "input other than int8/uint8, or per-channel quantization"
        return (2 if ins[0].dtype == "int8" else 1), None
    return None, f"no rewrite rule for {name}"


def _mul_version(graph, op, int8):
    """MUL: 3 when input1 scale * input2 scale / output scale >= 1, else 2 (int8) or 1."""
    scales = [graph.tensors[t].scale for t in (*op.inputs[:2], op.outputs[0])]
    if all(len(s) == 1 and s[0] != 0 for s in scales) and \
            scales[0][0] * scales[1][0] / scales[2][0] >= 1.0:
        return 3
    return 2 if int8 else 1


def rewrite_op_versions(model_or_bytes):
    """Lowers op-code versions above compiler 16.0's limit where provably safe.

    Args:
      model_or_bytes: a .tflite path, its bytes, or a ``ModelT``.
    Returns:
      (new model bytes, changes): changes is a list of {"op", "from", "to",
      "reason"} for each operator code rewritten; an empty list means the bytes
      are the model re-serialised unchanged.
    Raises:
      tflitegraph.graph.GraphError: not a readable single-graph .tflite model.
    """
    graph = read_graph(model_or_bytes)
    model = graph.model
    uses = {}
    for index in range(len(graph.ops)):
        uses.setdefault(model.subgraphs[0].operators[index].opcodeIndex, []).append(index)
    changes = []
    for code_index, ops in sorted(uses.items()):
        code = model.operatorCodes[code_index]
        name = graph.ops[ops[0]].name
        limit, source = T.version_limit(name)
        if limit is None or int(code.version) <= limit:
            continue
        needed = [required_version(graph, i) for i in ops]
        if any(version is None for version, _ in needed):
            continue
        target = max(version for version, _ in needed)
        if target > limit or target >= code.version:
            continue
        changes.append({"op": name, "from": int(code.version), "to": target,
                        "reason": (f"{name} version {code.version} is above compiler 16.0's "
                                   f"{limit} ({source}); this model's {len(ops)} {name} op(s) use "
                                   f"only what version {target} covers")})
        code.version = target
    return fb.model_to_bytes(model), changes
