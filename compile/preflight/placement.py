"""Where each op of a model ended up after a real compile, read from the two files.

A compiled ``X_edgetpu.tflite`` holds one ``edgetpu-custom-op`` per Edge TPU
subgraph (the ops the compiler mapped, and its own executable) plus every op it
left on the CPU, unchanged, with the tensor names of ``X.tflite``. So an op of
``X.tflite`` ran on the CPU when the compiled file still has an op of the same
type writing the same tensors, and on the Edge TPU otherwise. Used to compare
the pre-flight prediction with the compiler, and to show per op where a
compiled stage runs.
"""
from tflitegraph.graph import read_graph

CUSTOM_CODE = "edgetpu-custom-op"


def _key(graph, op):
    return op.name, tuple(graph.tensors[t].name for t in op.outputs if t >= 0)


def compiled_placement(source, compiled):
    """Per op of ``source``: "tpu" or "cpu" as the compiled twin shows.

    Args:
      source: the .tflite given to the compiler (path, bytes or ModelT).
      compiled: the ``_edgetpu.tflite`` it wrote.
    Returns:
      A list of {"index", "type", "placement"}, one per op of ``source``.
    Raises:
      tflitegraph.graph.GraphError: a file is not a readable single-graph model.
      ValueError: ``compiled`` has no edgetpu-custom-op, or keeps an op that
        ``source`` does not have (they are not twins).
    """
    before, after = read_graph(source), read_graph(compiled)
    label = "the compiled model" if isinstance(compiled, (bytes, bytearray)) else compiled
    left = [_key(after, op) for op in after.ops if op.name != CUSTOM_CODE]
    if len(left) == len(after.ops):
        raise ValueError(f"{label} has no {CUSTOM_CODE} op: it is not a compiled model")
    known = {_key(before, op) for op in before.ops}
    strangers = [key for key in left if key not in known]
    if strangers:
        raise ValueError(f"{label} has ops its source does not have (first: {strangers[0]}); "
                         "pass the model it was compiled from")
    kept = set(left)
    return [{"index": op.position, "type": op.name,
             "placement": "cpu" if _key(before, op) in kept else "tpu"} for op in before.ops]


def edgetpu_subgraphs(compiled):
    """How many edgetpu-custom-op ops a compiled model has."""
    return sum(1 for op in read_graph(compiled).ops if op.name == CUSTOM_CODE)
