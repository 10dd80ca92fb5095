"""A tiny full-int8 tflite model built field by field, so its costs are known by arithmetic.

  input  1x8x8x3 int8 (192 B)
  op 0   CONV_2D 3x3, 3->4 channels, SAME      -> a 1x8x8x4 (256 B)   weights 108 B, bias 16 B
  op 1   DEPTHWISE_CONV_2D 3x3, 4 channels     -> b 1x8x8x4 (256 B)   weights 36 B, bias 16 B
  op 2   ADD a + b (a residual connection)     -> c 1x8x8x4 (256 B)
  op 3   RESHAPE to 1x256                      -> d 1x256   (256 B)   shape 8 B
  op 4   FULLY_CONNECTED 256->10               -> logits 1x10 (10 B)  weights 2560 B, bias 40 B

The two conv biases share one buffer (as converters deduplicate equal
constants), so a stage holding both ops stores it once.
"""
import numpy as np

from tflitegraph import schema as fb

S = fb.schema


def _quant(scale, zero_point=0):
    q = S.QuantizationParametersT()
    q.scale, q.zeroPoint = [scale], [zero_point]
    return q


def _opcode(builtin):
    code = S.OperatorCodeT()
    code.builtinCode = builtin
    code.deprecatedBuiltinCode = min(builtin, 127)
    code.version = 1
    return code


def build():
    """Bytes of the hand-built model described in the module docstring."""
    rng = np.random.default_rng(3)
    buffers = [S.BufferT()]
    tensors = []

    def tensor(name, shape, type_, scale, data=None, buffer=None):
        t = S.TensorT()
        t.name, t.shape, t.type, t.quantization = name.encode(), list(shape), type_, _quant(scale)
        if buffer is not None:
            t.buffer = buffer
        elif data is not None:
            b = S.BufferT()
            b.data = np.frombuffer(np.ascontiguousarray(data).tobytes(), np.uint8).tolist()
            buffers.append(b)
            t.buffer = len(buffers) - 1
        else:
            t.buffer = 0
        tensors.append(t)
        return len(tensors) - 1

    i8, i32 = S.TensorType.INT8, S.TensorType.INT32
    x = tensor("input", [1, 8, 8, 3], i8, 0.5)
    conv_w = tensor("conv/weights", [4, 3, 3, 3], i8, 0.25, rng.integers(-20, 20, (4, 3, 3, 3), dtype=np.int8))
    conv_b = tensor("conv/bias", [4], i32, 0.125, np.array([1, -2, 3, -4], np.int32))
    a = tensor("a", [1, 8, 8, 4], i8, 1.0)
    dw_w = tensor("dw/weights", [1, 3, 3, 4], i8, 0.25, rng.integers(-20, 20, (1, 3, 3, 4), dtype=np.int8))
    dw_b = tensor("dw/bias", [4], i32, 0.25, buffer=tensors[conv_b].buffer)
    b = tensor("b", [1, 8, 8, 4], i8, 1.0)
    c = tensor("c", [1, 8, 8, 4], i8, 2.0)
    shape = tensor("reshape/shape", [2], i32, 1.0, np.array([1, 256], np.int32))
    d = tensor("d", [1, 256], i8, 2.0)
    fc_w = tensor("fc/weights", [10, 256], i8, 0.01, rng.integers(-50, 50, (10, 256), dtype=np.int8))
    fc_b = tensor("fc/bias", [10], i32, 0.02, np.arange(10, dtype=np.int32))
    logits = tensor("logits", [1, 10], i8, 1.0)

    codes = [_opcode(S.BuiltinOperator.CONV_2D), _opcode(S.BuiltinOperator.DEPTHWISE_CONV_2D),
             _opcode(S.BuiltinOperator.ADD), _opcode(S.BuiltinOperator.RESHAPE),
             _opcode(S.BuiltinOperator.FULLY_CONNECTED)]

    def op(code, inputs, outputs, options_type, options):
        o = S.OperatorT()
        o.opcodeIndex, o.inputs, o.outputs = code, inputs, outputs
        o.builtinOptionsType, o.builtinOptions = options_type, options
        return o

    conv = S.Conv2DOptionsT()
    conv.padding, conv.strideW, conv.strideH, conv.dilationWFactor, conv.dilationHFactor = S.Padding.SAME, 1, 1, 1, 1
    dw = S.DepthwiseConv2DOptionsT()
    dw.padding, dw.strideW, dw.strideH, dw.depthMultiplier = S.Padding.SAME, 1, 1, 1
    dw.dilationWFactor, dw.dilationHFactor = 1, 1
    reshape = S.ReshapeOptionsT()
    reshape.newShape = [1, 256]
    ops = [
        op(0, [x, conv_w, conv_b], [a], S.BuiltinOptions.Conv2DOptions, conv),
        op(1, [a, dw_w, dw_b], [b], S.BuiltinOptions.DepthwiseConv2DOptions, dw),
        op(2, [a, b], [c], S.BuiltinOptions.AddOptions, S.AddOptionsT()),
        op(3, [c, shape], [d], S.BuiltinOptions.ReshapeOptions, reshape),
        op(4, [d, fc_w, fc_b], [logits], S.BuiltinOptions.FullyConnectedOptions, S.FullyConnectedOptionsT()),
    ]
    sg = S.SubGraphT()
    sg.tensors, sg.operators, sg.inputs, sg.outputs, sg.name = tensors, ops, [x], [logits], b"main"
    model = S.ModelT()
    model.version, model.operatorCodes, model.subgraphs, model.buffers = 3, codes, [sg], buffers
    model.description = b"hand-built test model"
    return fb.model_to_bytes(model)
