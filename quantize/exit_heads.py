"""Early-exit heads in the int8 model: name its outputs, keep each head with its boundary, cut there.

The converter lists a multi-output model's outputs in no useful order, names
them ``StatefulPartitionedCall:K`` and may run a head's ops long after its
boundary (seed 001's heads ended up after the last block). Here the outputs
are put in Keras order (main output first) and given their Keras names, and
each head's ops are moved right after the ops they read: a valid topological
order, so every op computes the same bytes, and a cut after the head puts the
whole head in the stage that ends at its boundary.
"""
import re

from tflitegraph import schema as fb
from tflitegraph.graph import GraphError, find_tensor, read_graph


def keras_output_order(model):
    """Tensor indices of the model's outputs in the Keras model's output order.

    The converter's signature maps ``output_K`` to the tensor of Keras output K;
    without a signature the tensor names ``...:K`` say the same.
    Raises:
      GraphError: the order cannot be told.
    """
    sg = model.subgraphs[0]
    found = {}
    for signature in model.signatureDefs or []:
        for tensor in signature.outputs or []:
            match = re.fullmatch(r"output_(\d+)", _text(tensor.name))
            if match:
                found[int(match.group(1))] = tensor.tensorIndex
    if sorted(found) != list(range(len(sg.outputs))):
        found = {}
        for index in sg.outputs:
            match = re.search(r":(\d+)$", _text(sg.tensors[index].name))
            if match:
                found[int(match.group(1))] = index
    if sorted(found) != list(range(len(sg.outputs))) or set(found.values()) != set(sg.outputs):
        raise GraphError("cannot tell which int8 output is which Keras output (no output_K signature and no "
                         "':K' tensor names); convert with quantize.ptq.convert_int8")
    return [found[k] for k in range(len(found))]


def _text(value):
    return value.decode() if isinstance(value, bytes) else str(value)


def _ancestors(graph, tensor):
    """Op positions the tensor depends on."""
    seen, todo = set(), [tensor]
    while todo:
        position = graph.producer.get(todo.pop(), -1)
        if position < 0 or position in seen:
            continue
        seen.add(position)
        todo.extend(t for t in graph.ops[position].inputs if t >= 0)
    return seen


def head_ops(graph, output):
    """Positions of the ops only the given model output needs (its exit head)."""
    others = set().union(*(_ancestors(graph, t) for t in graph.outputs if t != output))
    return sorted(_ancestors(graph, output) - others)


def _move_head_up(model, output):
    """Reorders ops so the head of ``output`` runs right after the last op it reads from."""
    graph = read_graph(model)
    head = head_ops(graph, output)
    if not head:
        raise GraphError(f"output '{graph.tensors[output].name}' has no ops of its own; it is not an exit head")
    inside = set(head)
    anchor = max((graph.producer.get(t, -1) for p in head for t in graph.ops[p].inputs
                  if t >= 0 and graph.producer.get(t, -1) not in inside), default=-1)
    others = [p for p in range(len(graph.ops)) if p not in inside]
    order = [p for p in others if p <= anchor] + head + [p for p in others if p > anchor]
    sg = model.subgraphs[0]
    sg.operators = [sg.operators[p] for p in order]


def prepare_exit_model(model_bytes, output_names):
    """The int8 model with outputs in Keras order, named ``output_names``, each exit head after its inputs.

    Args:
      model_bytes: the converted .tflite of a Keras model with several outputs.
      output_names: Keras output names, main output first.
    Returns:
      The rewritten .tflite bytes.
    """
    model = fb.read_model(model_bytes)
    sg = model.subgraphs[0]
    if len(sg.outputs) != len(output_names):
        raise GraphError(f"the int8 model has {len(sg.outputs)} outputs but the Keras model has "
                         f"{len(output_names)} ({', '.join(output_names)})")
    order = keras_output_order(model)
    sg.outputs = order
    for index, name in zip(order, output_names):
        sg.tensors[index].name = name.encode()
    for index in order[1:]:
        _move_head_up(model, index)
    return fb.model_to_bytes(model)


def _boundary_position(graph, boundary):
    """Position of the op ending at the boundary; -1 when the converter's names lost it (the head
    still marks the place: its ops read the boundary). QAT wraps layers as ``quant_<name>``."""
    for name in (boundary, f"quant_{boundary}"):
        try:
            return graph.producer[find_tensor(graph, name)]
        except GraphError:
            continue
    return -1


def exit_cut_positions(graph, exits):
    """Cut position of each exit: after its boundary and after its whole head.

    Args:
      exits: [{"boundary": name, "output": int8 output tensor name}], in graph order.
    Raises:
      GraphError: a head's ops are not in one run right after its inputs
        (the model was not prepared with ``prepare_exit_model``).
    """
    positions = []
    for entry in exits:
        output = find_tensor(graph, entry["output"])
        head = head_ops(graph, output)
        cut = max(_boundary_position(graph, entry["boundary"]), head[-1] if head else -1) + 1
        if head and head[-1] - head[0] + 1 != len(head):
            raise GraphError(f"the ops of exit head '{entry['output']}' are not together in the graph; "
                             "re-run `python -m quantize` on the run")
        if cut >= len(graph.ops):
            raise GraphError(f"exit '{entry['output']}' is at the end of the model; it would leave the last "
                             "stage empty")
        positions.append(cut)
    if positions != sorted(set(positions)):
        raise GraphError(f"exits {', '.join(e['boundary'] for e in exits)} are not distinct points in graph "
                         "order")
    return positions
