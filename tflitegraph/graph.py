"""A read-only view of a tflite model's main graph: ops, tensors, costs and cuts.

Positions: ops run in flatbuffer order, which is a topological order. A cut at
position ``k`` puts ops ``[0, k)`` before it and ``[k, n)`` after it. The
tensors that *cross* a cut are the activations produced before it (or model
inputs) and still needed after it: by a later op or as a model output.
"""
import dataclasses
import difflib

import numpy as np

from tflitegraph import schema as fb
from runfolder.errors import UserError


class GraphError(UserError, ValueError):
    """The model cannot be analysed or cut as asked."""


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    index: int
    name: str
    shape: tuple
    dtype: str
    scale: tuple
    zero_point: tuple
    constant_bytes: int  # bytes of constant data; 0 for activations
    is_variable: bool = False  # op state (e.g. LSTM), owned by the op that uses it

    @property
    def is_activation(self):
        """Data that flows between ops: neither constant nor op state."""
        return not self.is_constant and not self.is_variable

    @property
    def is_constant(self):
        return self.constant_bytes > 0

    @property
    def activation_bytes(self):
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(_NUMPY.get(self.dtype, "uint8")).itemsize


@dataclasses.dataclass(frozen=True)
class OpInfo:
    position: int
    name: str
    inputs: tuple   # tensor indices, -1 for an omitted optional input
    outputs: tuple
    macs: int


_NUMPY = {"float32": "float32", "int8": "int8", "uint8": "uint8", "int16": "int16",
          "int32": "int32", "int64": "int64", "bool": "bool", "float16": "float16"}


@dataclasses.dataclass
class Graph:
    model: object          # the ModelT it was read from
    tensors: list          # TensorInfo by tensor index
    ops: list              # OpInfo by position
    inputs: tuple          # model input tensor indices
    outputs: tuple         # model output tensor indices
    producer: dict         # tensor index -> op position (-1 for model inputs)
    last_use: dict         # tensor index -> last position that reads it (len(ops) for model outputs)

    def crossing(self, cut):
        """Tensor indices that cross a cut at position ``cut`` (sorted by producer, then index)."""
        crossing = [t for t, p in self.producer.items()
                    if p < cut and self.last_use.get(t, -1) >= cut]
        return sorted(crossing, key=lambda t: (self.producer[t], t))

    def crossing_bytes(self, cut):
        return sum(self.tensors[t].activation_bytes for t in self.crossing(cut))


def _tensor_info(model, index, tensor):
    buffer = model.buffers[tensor.buffer] if tensor.buffer < len(model.buffers) else None
    data = getattr(buffer, "data", None)
    nbytes = 0 if data is None else len(data)
    q = tensor.quantization
    scale = tuple(float(s) for s in (q.scale if q is not None and q.scale is not None else ()))
    zero = tuple(int(z) for z in (q.zeroPoint if q is not None and q.zeroPoint is not None else ()))
    name = tensor.name.decode() if isinstance(tensor.name, bytes) else str(tensor.name)
    shape = tuple(int(d) for d in (tensor.shape if tensor.shape is not None else ()))
    return TensorInfo(index, name, shape, fb.TENSOR_TYPE_NAMES.get(tensor.type, str(tensor.type)),
                      scale, zero, nbytes, bool(tensor.isVariable))


def _macs(name, inputs, outputs, tensors):
    """Multiply-accumulates of one op; other ops cost one unit per output element."""
    out_elems = sum(int(np.prod(tensors[t].shape, dtype=np.int64)) for t in outputs if t >= 0)
    weights = tensors[inputs[1]].shape if len(inputs) > 1 and inputs[1] >= 0 else ()
    if name in ("CONV_2D", "TRANSPOSE_CONV") and len(weights) == 4:
        return out_elems * int(np.prod(weights[1:]))
    if name == "DEPTHWISE_CONV_2D" and len(weights) == 4:
        return out_elems * weights[1] * weights[2]
    if name == "FULLY_CONNECTED" and len(weights) == 2:
        return out_elems * weights[1]
    return out_elems


def read_graph(path_or_model):
    """Builds a Graph from a .tflite path, bytes, or an already read ``ModelT``.

    Raises:
      GraphError: the file is not a tflite model, or the model has control flow
        (several subgraphs), which cutting does not support.
    """
    if isinstance(path_or_model, (str, bytes, bytearray)) or hasattr(path_or_model, "__fspath__"):
        try:
            model = fb.read_model(path_or_model)
        except Exception as exc:  # flatbuffers raises assorted errors on garbage
            raise GraphError(f"{path_or_model} is not a readable .tflite model ({type(exc).__name__}: {exc})") from exc
    else:
        model = path_or_model
    if not model.subgraphs:
        raise GraphError("the model has no subgraph")
    if len(model.subgraphs) > 1:
        raise GraphError(
            f"the model has {len(model.subgraphs)} subgraphs (control flow such as WHILE); "
            "only single-graph models can be cut")
    sg = model.subgraphs[0]
    tensors = [_tensor_info(model, i, t) for i, t in enumerate(sg.tensors or [])]
    inputs = tuple(int(i) for i in sg.inputs)
    outputs = tuple(int(i) for i in sg.outputs)
    producer = {t: -1 for t in inputs}
    last_use = {}
    ops = []
    for pos, op in enumerate(sg.operators or []):
        name = fb.op_name(model, op)
        ins = tuple(int(i) for i in op.inputs)
        outs = tuple(int(i) for i in op.outputs)
        for t in outs:
            producer[t] = pos
        for t in ins:
            if t >= 0 and tensors[t].is_activation:
                last_use[t] = pos
        ops.append(OpInfo(pos, name, ins, outs, _macs(name, ins, outs, tensors)))
    for t in outputs:
        last_use[t] = len(ops)
    return Graph(model, tensors, ops, inputs, outputs, producer, last_use)


def _names_layer(piece, name):
    """True when ``name`` is whole ``/``-separated components of ``piece`` (``block1`` or ``block1/add``)."""
    return f"/{name}/" in f"/{piece}/"


def find_tensor(graph, name):
    """Index of the tensor a user named: exact name, or a layer name inside it.

    Converter names look like ``model/after_block1/Relu;model/block1_conv3/Conv2D``;
    ``after_block1`` and ``after_block1/Relu`` match that. Among several matches the last produced wins
    (a Keras layer's final output).
    Raises:
      GraphError: nothing matches; lists close names.
    """
    activations = [t for t in graph.tensors if t.is_activation and t.index in graph.producer]
    exact = [t for t in activations if t.name == name]
    if not exact:
        exact = [t for t in activations if any(_names_layer(piece, name) for piece in t.name.split(";"))]
    if exact:
        return max(exact, key=lambda t: (graph.producer[t.index], t.index)).index
    parts = sorted({part for t in activations for piece in t.name.split(";")
                    for part in piece.split("/")})
    close = difflib.get_close_matches(name, parts, n=5) or parts[:8]
    raise GraphError(f"no tensor or layer named '{name}' in the model; close names: {', '.join(close)}")


def stage_io(graph, start, end):
    """Activation tensors read by ops [start, end) but made before, and made there but needed after."""
    produced, consumed = set(), []
    for op in graph.ops[start:end]:
        for t in op.inputs:
            if t >= 0 and graph.tensors[t].is_activation and t not in produced and t not in consumed:
                consumed.append(t)
        produced.update(t for t in op.outputs if t >= 0)
    outputs = [t for t in produced if t in graph.outputs or graph.last_use.get(t, -1) >= end]
    return consumed, outputs


def buffer_bytes(graph, constants):
    """Bytes of the distinct buffers behind constant tensors (two tensors may share one buffer)."""
    buffers = {}
    for t in constants:
        buffers[graph.model.subgraphs[0].tensors[t].buffer] = graph.tensors[t].constant_bytes
    return sum(buffers.values())
