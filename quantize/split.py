"""Split a full-int8 tflite model into stage models by graph surgery on the flatbuffer.

Each stage keeps the original tensors (names, scales, zero points), so feeding
stage k's outputs byte for byte into stage k+1's inputs, matched by tensor name,
reproduces the unsplit model exactly. Each stage file holds only the tensors,
buffers and operator codes its own ops use.
"""
import copy
import itertools

from tflitegraph import schema as fb
from quantize.costs import stage_cost, stage_io
from tflitegraph.graph import GraphError, find_tensor

_KEPT_METADATA = (b"min_runtime_version", b"CONVERSION_METADATA")


def cut_positions_after(graph, names):
    """Cut positions right after the ops producing the named tensors, in order.

    Raises:
      GraphError: a name matches nothing, two names give the same cut, or a
        cut would leave an empty stage.
    """
    positions = []
    for name in names:
        constant = [t for t in graph.tensors if t.name == name and not t.is_activation]
        if constant:
            raise GraphError(f"'{name}' is constant data (weights or op state), not an activation, so no cut "
                             "can be made after it; name an op's output tensor or a Keras layer")
        tensor = find_tensor(graph, name)
        pos = graph.producer[tensor] + 1
        if pos <= 0:
            raise GraphError(f"'{name}' is a model input; a cut after it leaves stage 1 empty")
        if pos >= len(graph.ops):
            raise GraphError(f"'{name}' is produced by the last op; a cut after it leaves the last stage empty")
        positions.append(pos)
    if len(set(positions)) != len(positions):
        raise GraphError(f"cuts {', '.join(names)} fall on the same place in the graph; name distinct points")
    if positions != sorted(positions):
        raise GraphError(f"cuts {', '.join(names)} are not in graph order; list them first to last")
    return positions


def _unique_names(graph, crossing):
    """Tensor names to use for crossing tensors, made unique where the model repeats one."""
    counts = {}
    for t in graph.tensors:
        counts[t.name] = counts.get(t.name, 0) + 1
    return {t: graph.tensors[t].name if counts[graph.tensors[t].name] == 1
            else f"{graph.tensors[t].name}#{t}" for t in crossing}


def _stage_io(graph, start, end):
    """Input and output tensor indices of the ops in [start, end), in a stable order."""
    consumed, produced = stage_io(graph, start, end)
    for t in consumed:
        if graph.producer.get(t) is None:
            raise GraphError(f"tensor {graph.tensors[t].name} is read but never produced")
    inputs = [t for t in graph.inputs if t in consumed] + sorted(
        (t for t in consumed if t not in graph.inputs), key=lambda t: (graph.producer[t], t))
    outputs = [t for t in graph.outputs if t in produced] + sorted(
        t for t in produced if t not in graph.outputs)
    return inputs, outputs


def extract_stage(graph, start, end, names=None):
    """A new ``ModelT`` holding only ops [start, end) and what they use.

    Args:
      graph: the Graph of the whole model.
      start, end: op positions.
      names: optional {tensor index: name} overrides for crossing tensors.
    Returns:
      (model, input tensor indices, output tensor indices), indices in the whole model.
    """
    model = graph.model
    sg = model.subgraphs[0]
    inputs, outputs = _stage_io(graph, start, end)
    ops = sg.operators[start:end]
    used = sorted({t for op in ops for t in list(op.inputs) + list(op.outputs)
                   + list(op.intermediates if op.intermediates is not None else []) if t >= 0})
    tensor_map = {old: new for new, old in enumerate(used)}
    buffers = [fb.schema.BufferT()]
    buffer_map = {}
    tensors = []
    for old in used:
        tensor = copy.deepcopy(sg.tensors[old])
        if graph.tensors[old].is_constant:
            if tensor.buffer not in buffer_map:
                buffer_map[tensor.buffer] = len(buffers)
                buffers.append(copy.deepcopy(model.buffers[tensor.buffer]))
            tensor.buffer = buffer_map[tensor.buffer]
        else:
            tensor.buffer = 0
        if names and old in names:
            tensor.name = names[old].encode()
        tensors.append(tensor)
    code_map = {}
    codes = []
    new_ops = []
    for op in ops:
        op = copy.deepcopy(op)
        if op.opcodeIndex not in code_map:
            code_map[op.opcodeIndex] = len(codes)
            codes.append(copy.deepcopy(model.operatorCodes[op.opcodeIndex]))
        op.opcodeIndex = code_map[op.opcodeIndex]
        op.inputs = [tensor_map[t] if t >= 0 else -1 for t in op.inputs]
        op.outputs = [tensor_map[t] for t in op.outputs]
        if op.intermediates is not None:
            op.intermediates = [tensor_map[t] for t in op.intermediates]
        new_ops.append(op)
    new_sg = fb.schema.SubGraphT()
    new_sg.tensors = tensors
    new_sg.operators = new_ops
    new_sg.inputs = [tensor_map[t] for t in inputs]
    new_sg.outputs = [tensor_map[t] for t in outputs]
    new_sg.name = sg.name
    stage = fb.schema.ModelT()
    stage.version = model.version
    stage.description = model.description
    stage.operatorCodes = codes
    stage.subgraphs = [new_sg]
    stage.buffers = buffers
    stage.metadata = []
    for meta in model.metadata or []:
        if meta.name in _KEPT_METADATA:
            meta = copy.deepcopy(meta)
            buffers.append(copy.deepcopy(model.buffers[meta.buffer]))
            meta.buffer = len(buffers) - 1
            stage.metadata.append(meta)
    stage.signatureDefs = []
    return stage, inputs, outputs


def split_model(graph, cuts):
    """Splits the whole model at the given cut positions.

    Returns:
      A list of dicts, one per stage: ``model_bytes``, ``start``, ``end``,
      ``inputs`` and ``outputs`` (tensor descriptions), ``op_count``, ``ops``,
      ``parameter_bytes``, ``macs``.
    """
    bounds = [0] + list(cuts) + [len(graph.ops)]
    crossing = sorted({t for c in cuts for t in graph.crossing(c)})
    names = _unique_names(graph, crossing)
    stages = []
    for start, end in itertools.pairwise(bounds):
        if start >= end:
            raise GraphError(f"cut positions {cuts} leave an empty stage")
        model, ins, outs = extract_stage(graph, start, end, names)
        cost = stage_cost(graph, start, end)
        stages.append({
            "model_bytes": fb.model_to_bytes(model),
            "start": start, "end": end,
            "inputs": [describe_tensor(graph, t, names) for t in ins],
            "outputs": [describe_tensor(graph, t, names) for t in outs],
            "op_count": end - start,
            "ops": [op.name for op in graph.ops[start:end]],
            "parameter_bytes": cost.parameter_bytes,  # each shared buffer once, as the file holds it
            "macs": cost.macs,
        })
    return stages


def describe_tensor(graph, index, names=None):
    """Manifest description of one tensor: name, shape, dtype, scale, zero point."""
    t = graph.tensors[index]
    return {
        "name": (names or {}).get(index, t.name),
        "shape": list(t.shape),
        "dtype": t.dtype,
        "scale": t.scale[0] if len(t.scale) == 1 else list(t.scale),
        "zero_point": t.zero_point[0] if len(t.zero_point) == 1 else list(t.zero_point),
    }
