"""What each op and each candidate stage costs, read from the flatbuffer alone.

Per op: multiply-accumulates, bytes of constant data (weights, biases), and
bytes of activations read and written. Per stage (a range of op positions):
the same summed exactly, with a constant shared by several ops counted once,
because the stage file holds it once. These numbers feed the partitioner's
objectives and the plan table.
"""
import dataclasses

import numpy as np

from tflitegraph.graph import buffer_bytes, stage_io  # noqa: F401  (stage_io: public here too)


@dataclasses.dataclass(frozen=True)
class OpCost:
    position: int
    name: str
    macs: int
    parameter_bytes: int        # constant data this op reads (shared constants counted for each reader)
    activation_in_bytes: int    # activations this op reads
    activation_out_bytes: int   # activations this op writes


@dataclasses.dataclass(frozen=True)
class StageCost:
    start: int
    end: int
    op_count: int
    macs: int
    parameter_bytes: int        # constant data in the stage file, each constant once
    activation_in_bytes: int    # bytes of the stage's inputs
    activation_out_bytes: int   # bytes of the stage's outputs


def op_costs(graph):
    """One OpCost per op of ``graph`` (a tflitegraph.graph.Graph), in op order."""
    costs = []
    for op in graph.ops:
        ins = [t for t in op.inputs if t >= 0]
        costs.append(OpCost(
            op.position, op.name, op.macs,
            sum(graph.tensors[t].constant_bytes for t in ins),
            sum(graph.tensors[t].activation_bytes for t in ins if graph.tensors[t].is_activation),
            sum(graph.tensors[t].activation_bytes for t in op.outputs if t >= 0)))
    return costs


def stage_cost(graph, start, end):
    """The StageCost of ops [start, end)."""
    constants = {t for op in graph.ops[start:end] for t in op.inputs
                 if t >= 0 and graph.tensors[t].is_constant}
    ins, outs = stage_io(graph, start, end)
    return StageCost(
        start, end, end - start,
        sum(op.macs for op in graph.ops[start:end]),
        buffer_bytes(graph, constants),
        sum(graph.tensors[t].activation_bytes for t in ins),
        sum(graph.tensors[t].activation_bytes for t in outs))


def parameter_table(graph):
    """``table[i][j]``: exact constant bytes of ops [i, j), for every 0 <= i < j <= n.

    Built in O(n²) by walking forward from each start, so the partitioner can
    balance parameter bytes exactly even where stages share constants.
    """
    n = len(graph.ops)
    uses = [[(graph.model.subgraphs[0].tensors[t].buffer, graph.tensors[t].constant_bytes)
             for t in op.inputs if t >= 0 and graph.tensors[t].is_constant] for op in graph.ops]
    table = np.zeros((n + 1, n + 1), dtype=np.int64)
    for i in range(n):
        seen, total = set(), 0
        for j in range(i, n):
            for buffer, nbytes in uses[j]:
                if buffer not in seen:
                    seen.add(buffer)
                    total += nbytes
            table[i, j + 1] = total
    return table


def balance(values):
    """max/mean of stage costs: 1.0 is perfectly even; a pipeline runs at the speed of the max."""
    values = [float(v) for v in values]
    mean = sum(values) / len(values) if values else 0.0
    return max(values) / mean if mean > 0 else 1.0
