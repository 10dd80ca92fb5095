"""Whether the Edge TPU can run each op of a model by itself, and why not.

``op_support(graph)`` applies Coral's model requirements and per-op limits
(``compile.preflight.optable``) to each op on its own; where it sits in the graph is
``compile.preflight.check``'s job. Reasons start with the status the real compiler
prints for such an op, then say what in this model causes it.
Needs numpy and a tflite schema reader (``tflitegraph.graph``), not TensorFlow.
"""
import numpy as np

from compile.preflight import optable as T

_EDGE_TYPES = ("int8", "uint8")
_LITTLE_ENDIAN = {"float32": "<f4", "int32": "<i4", "int64": "<i8", "int16": "<i2",
                  "int8": "i1", "uint8": "u1"}


def op_support(graph, min_runtime_version=None):
    """One (supported, reason) per op of ``graph``, judged by itself.

    Args:
      graph: a ``tflitegraph.graph.Graph``.
      min_runtime_version: the compiler's -m value; ops Coral lists for newer
        Edge TPU runtimes only are then unsupported. None: no such limit.
    Returns:
      A list of (bool, str); the reason is "" for supported ops.
    """
    return [_support(graph, i, min_runtime_version) for i in range(len(graph.ops))]


def op_version(graph, index):
    """The operator-code version of op ``index``."""
    op = graph.model.subgraphs[0].operators[index]
    return int(graph.model.operatorCodes[op.opcodeIndex].version or 1)


def options(graph, index):
    """The builtin options object of op ``index`` (None when it has none)."""
    return graph.model.subgraphs[0].operators[index].builtinOptions


def constant(graph, t):
    """The data of constant tensor ``t`` as a numpy array, or None for activations."""
    info = graph.tensors[t]
    if not info.is_constant:
        return None
    data = graph.model.buffers[graph.model.subgraphs[0].tensors[t].buffer].data
    dtype = np.dtype(_LITTLE_ENDIAN.get(info.dtype, "u1"))
    values = np.frombuffer(bytes(data), dtype=dtype)
    size = int(np.prod(info.shape)) if info.shape else 1
    return values.reshape(info.shape or ()) if values.size == size else values


def _support(graph, i, runtime):
    op = graph.ops[i]
    name = op.name
    if name == "DEQUANTIZE":
        return False, f"{T.BAD_TYPE}: DEQUANTIZE writes float32, which the Edge TPU does not compute"
    if name not in T.SUPPORTED_OPS:
        return False, f"{T.NOT_SUPPORTED}: {name} is not in Coral's list of Edge TPU operations"
    needed, _ = T.SUPPORTED_OPS[name]
    if runtime is not None and needed > runtime:
        return False, (f"{T.NOT_SUPPORTED}: {name} needs Edge TPU runtime {needed}+, "
                       f"--min_runtime_version is {runtime}")
    version, (limit, _) = op_version(graph, i), T.version_limit(name)
    if limit is not None and version > limit and (name, version) not in T.UNCERTAIN_VERSIONS:
        return False, (f"{T.BAD_VERSION}: {name} version {version} is newer than compiler "
                       f"16.0 knows (up to {limit})")
    problem = _type_problem(graph, op) or _shape_problem(graph, op) or _LIMITS.get(
        name, lambda g, o: None)(graph, op)
    return (False, problem) if problem else (True, "")


def _live(graph, op):
    """Tensor indices an op computes on at run time: non-constant inputs, and outputs."""
    ins = [t for t in op.inputs if t >= 0 and not graph.tensors[t].is_constant]
    return ins + [t for t in op.outputs if t >= 0]


def _type_problem(graph, op):
    if op.name == "QUANTIZE" and graph.tensors[op.inputs[0]].dtype == "float32":
        return (f"{T.UNSPECIFIED}: QUANTIZE reads float32 tensor "
                f"'{graph.tensors[op.inputs[0]].name}' (a float model input), so it runs on the CPU")
    allowed = _EDGE_TYPES + (("int16",) if op.name == "UNIDIRECTIONAL_SEQUENCE_LSTM" else ())
    for t in _live(graph, op):
        info = graph.tensors[t]
        if info.dtype not in allowed:
            return (f"{T.BAD_TYPE}: tensor '{info.name}' is {info.dtype}; the Edge TPU "
                    "computes on int8/uint8 tensors only")
    for t in op.inputs:
        if t >= 0 and graph.tensors[t].is_constant and graph.tensors[t].dtype == "float32":
            return f"{T.BAD_TYPE}: constant '{graph.tensors[t].name}' is float32, not quantized"
    return None


def _shape_problem(graph, op):
    for t in _live(graph, op):
        shape = graph.tensors[t].shape
        if len(shape) > 3 and int(np.prod(shape[:-3])) > 1:
            return (f"{T.BAD_RANK}: tensor '{graph.tensors[t].name}' has shape {list(shape)}; "
                    "only the 3 innermost dimensions may be larger than 1")
    return None


def _no_fused_activation(graph, op):
    opts = options(graph, op.position)
    if opts is not None and getattr(opts, "fusedActivationFunction", 0):
        return f"{T.UNSPECIFIED}: {op.name} has a fused activation function; Coral allows none"
    return None


def _concatenation(graph, op):
    problem = _no_fused_activation(graph, op)
    if problem:
        return problem
    consts = [constant(graph, t) for t in op.inputs if t >= 0 and graph.tensors[t].is_constant]
    if consts and (len(op.inputs) != 2 or any(np.any(c != 0) for c in consts)):
        return (f"{T.UNSPECIFIED}: a constant input is allowed only as one of 2 inputs and "
                "all zeros (a zero padding)")
    return None


def _same_dilation(graph, op):
    opts = options(graph, op.position)
    if opts is not None and opts.dilationHFactor != opts.dilationWFactor:
        return (f"{T.UNSPECIFIED}: dilation {opts.dilationHFactor}x{opts.dilationWFactor} differs "
                "in y and x")
    return None


def _fully_connected(graph, op):
    opts = options(graph, op.position)
    if opts is not None and opts.weightsFormat:
        return f"{T.UNSPECIFIED}: weights format {opts.weightsFormat} is not the default"
    shape = graph.tensors[op.outputs[0]].shape
    if sum(1 for d in shape if d > 1) > 1:
        return f"{T.UNSPECIFIED}: output shape {list(shape)} is not one-dimensional"
    return None


def _axes(graph, op, position, rank):
    data = constant(graph, op.inputs[position])
    if data is None:
        return None
    return sorted({int(a) % rank for a in np.ravel(data)}) if rank else []


def _no_batch_reduction(graph, op):
    rank = len(graph.tensors[op.inputs[0]].shape)
    axes = _axes(graph, op, 1, rank)
    if axes is None:
        return f"{T.UNSPECIFIED}: the reduction axes are not a constant"
    if rank > 1 and 0 in axes:
        return f"{T.UNSPECIFIED}: {op.name} reduces the batch dimension (axes {axes})"
    return None


def _mean(graph, op):
    problem = _no_batch_reduction(graph, op)
    shape = graph.tensors[op.inputs[0]].shape
    if not problem and shape and (len(shape) - 1) in _axes(graph, op, 1, len(shape)) \
            and shape[-1] % T.MEAN_Z_MULTIPLE:
        problem = (f"{T.UNSPECIFIED}: MEAN over the channels needs a multiple of "
                   f"{T.MEAN_Z_MULTIPLE} channels, got {shape[-1]}")
    return problem


def _pack(graph, op):
    opts = options(graph, op.position)
    if opts is not None and opts.axis == 0:
        return f"{T.UNSPECIFIED}: PACK along the batch dimension"
    return None


def _pad(graph, op):
    paddings = constant(graph, op.inputs[1])
    if paddings is None:
        return f"{T.UNSPECIFIED}: the paddings are not a constant"
    if paddings.ndim == 2 and paddings.shape[0] > 1 and np.any(paddings[0] != 0):
        return f"{T.UNSPECIFIED}: PAD pads the batch dimension"
    return None


def _prelu(graph, op):
    shape = graph.tensors[op.inputs[1]].shape
    if sum(1 for d in shape[:-1] if d > 1):
        return f"{T.UNSPECIFIED}: alpha has shape {list(shape)}; only its innermost dimension may be > 1"
    return None


def _softmax(graph, op):
    shape = graph.tensors[op.inputs[0]].shape
    elements = int(np.prod(shape)) if shape else 1
    if sum(1 for d in shape if d > 1) > 1 or elements > T.SOFTMAX_MAX_ELEMENTS:
        return (f"{T.UNSPECIFIED}: SOFTMAX input {list(shape)} is not 1-D with at most "
                f"{T.SOFTMAX_MAX_ELEMENTS} elements")
    return None


def _split(graph, op):
    rank = len(graph.tensors[op.inputs[1]].shape)
    axes = _axes(graph, op, 0, rank)
    if axes is None or (rank > 1 and 0 in axes):
        return f"{T.UNSPECIFIED}: SPLIT along the batch dimension or a non-constant axis"
    return None


def _strided_slice(graph, op):
    opts = options(graph, op.position)
    strides = constant(graph, op.inputs[3]) if len(op.inputs) > 3 else None
    if strides is None or np.any(strides != 1):
        return f"{T.UNSPECIFIED}: STRIDED_SLICE strides are not all 1"
    if opts is not None and (opts.ellipsisMask or opts.newAxisMask):
        return f"{T.UNSPECIFIED}: STRIDED_SLICE uses an ellipsis or new-axis mask"
    return None


def resize_scale(graph, op):
    """(upscale factor, output height x width) of a RESIZE_* op, or None if its shapes are not 4-D."""
    before, after = graph.tensors[op.inputs[0]].shape, graph.tensors[op.outputs[0]].shape
    if len(before) != 4 or len(after) != 4 or not before[1] or not before[2]:
        return None
    return max(after[1] / before[1], after[2] / before[2]), after[1] * after[2]


def _resize(graph, op):
    scale = resize_scale(graph, op)
    if scale is None:
        return None
    factor, pixels = scale
    size = "x".join(map(str, graph.tensors[op.outputs[0]].shape[1:3]))
    if factor >= T.RESIZE_CPU_FACTOR:
        return (f"{T.UNSPECIFIED}: {op.name} upscales x{factor:g} (to {size}); from x{T.RESIZE_CPU_FACTOR} "
                "on, the compiler leaves it to the CPU to avoid loss in precision")
    if pixels >= T.RESIZE_CPU_PIXELS:
        return (f"{T.UNSPECIFIED}: {op.name} writes {size}; outputs of {T.RESIZE_CPU_PIXELS} pixels or more "
                "are left to the CPU")
    return None


def _tile(graph, op):
    if constant(graph, op.inputs[1]) is None:
        return f"{T.UNSPECIFIED}: the TILE multiples are not a constant"
    return None


def op_risks(graph):
    """{op position: why} for ops predicted on the Edge TPU where the evidence stops short of saying so
    (``optable.RESIZE_*``): they may end up on the CPU."""
    risks = {}
    for op in graph.ops:
        scale = resize_scale(graph, op) if op.name.startswith("RESIZE_") else None
        if scale is None:
            continue
        factor, pixels = scale
        if factor > T.RESIZE_MAPPED_FACTOR or pixels > T.RESIZE_MAPPED_PIXELS:
            size = "x".join(map(str, graph.tensors[op.outputs[0]].shape[1:3]))
            risks[op.position] = (f"{op.name} x{factor:g} to {size}: beyond what was seen mapped (up to "
                                  f"x{T.RESIZE_MAPPED_FACTOR}, {T.RESIZE_MAPPED_PIXELS} pixels), the compiler "
                                  "may leave it to the CPU")
    return risks


_LIMITS = {
    "RESIZE_BILINEAR": _resize,
    "RESIZE_NEAREST_NEIGHBOR": _resize,
    "TILE": _tile,
    "AVERAGE_POOL_2D": _no_fused_activation,
    "MAX_POOL_2D": _no_fused_activation,
    "CONCATENATION": _concatenation,
    "CONV_2D": _same_dilation,
    "DEPTHWISE_CONV_2D": _same_dilation,
    "FULLY_CONNECTED": _fully_connected,
    "MEAN": _mean,
    "SUM": _no_batch_reduction,
    "REDUCE_MAX": _no_batch_reduction,
    "REDUCE_MIN": _no_batch_reduction,
    "PACK": _pack,
    "PAD": _pad,
    "PRELU": _prelu,
    "SOFTMAX": _softmax,
    "SPLIT": _split,
    "STRIDED_SLICE": _strided_slice,
}
