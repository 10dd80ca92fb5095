"""Compiler 16.0's fall-through rule as one walk over the ops: which of them land on the Edge TPU.

Coral: at the first unsupported op the compiler partitions the graph once, and that op and everything
after it runs on the CPU. Real 16.0 logs read "after" as data flow: an op lands on the Edge TPU when it is
supported and reads nothing a CPU op computed from Edge TPU results (that would need a second Edge TPU
subgraph). ``compile.preflight.check.predict_placement`` (the pre-flight report) and the partitioner's
Edge TPU cost (``tflitegraph.edgetpu_latency``) both walk this rule, so they cannot disagree.
"""


def walk(graph, supported, start=0, end=None):
    """Yields ``(position, on_tpu, blocker)`` for ops ``[start, end)`` compiled as one model.

    ``supported``: per op of ``graph``, whether the Edge TPU can run it by itself. ``blocker``: for a
    supported op left on the CPU, the position of the CPU op after the Edge TPU part it waits for.
    """
    from_tpu = set()      # tensors the Edge TPU part computes
    after_tpu = {}        # tensor -> op position: computed on the CPU from Edge TPU results
    for op in graph.ops[start:len(graph.ops) if end is None else end]:
        ins = [t for t in op.inputs if t >= 0]
        blocker = next((after_tpu[t] for t in ins if t in after_tpu), None)
        on_tpu = bool(supported[op.position]) and blocker is None
        if on_tpu:
            from_tpu.update(t for t in op.outputs if t >= 0)
        elif any(t in from_tpu or t in after_tpu for t in ins):
            source = blocker if blocker is not None else op.position
            after_tpu.update((t, source) for t in op.outputs if t >= 0)
        yield op.position, on_tpu, blocker
