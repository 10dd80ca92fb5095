"""What a user can change so more of a model runs on the Edge TPU: one line per kind of op that stops it.

Read from a pre-flight report (``check.check_graph``): the ops predicted on the CPU for a reason of their
own (not the ones that only follow them), grouped by op type and status. Each suggestion names a change
with known effect: a replacement made of ops on Coral's list, a converter setting, or, when supported
ops follow the first CPU op only because the compiler partitions once, cutting the model so the CPU
part is a stage of its own (``python -m quantize --isolate-unsupported``).
"""
from compile.preflight import optable as T

BY_TYPE = {
    "LEAKY_RELU": "LEAKY_RELU is not on the Edge TPU's list: in Keras use PReLU with a constant alpha "
                  "(shared_axes=[1, 2]) or tf.maximum(x, alpha * x); PRELU, MAXIMUM and MUL all map",
    "HARD_SWISH": "HARD_SWISH is not on the Edge TPU's list: use the 'minimalistic' MobileNetV3 variants "
                  "(ReLU instead of hard-swish), or write it as x * relu6(x + 3) / 6 (MUL, ADD and RELU6 map)",
    "ARG_MAX": "ARG_MAX is not on the Edge TPU's list: take the argmax on the host from the scores",
    "RESIZE_BILINEAR": "resize in x2 steps (seen mapped) or at a smaller output size, or resize on the host",
    "RESIZE_NEAREST_NEIGHBOR": "resize in x2 steps (seen mapped) or at a smaller output size, or on the host",
}
BY_STATUS = {
    T.BAD_RANK: "convert with batch size 1 and keep at most 3 dimensions larger than 1 (reshape 5-D "
                "tensors down)",
    T.BAD_VERSION: "lower the op versions (`compile.preflight.rewrite_op_versions`, run by `python -m "
                   "quantize`) or convert with TensorFlow 2.5",
}


def _blockers(report):
    return [op for op in report["ops"] if op["placement"] == "cpu"
            and op["status"] not in (T.ONE_SUBGRAPH, "Model refused")]


def _ends_tpu_part(report, graph):
    """The first op predicted on the CPU for its own reason that reads a result of the Edge TPU part."""
    from_tpu = set()
    for op, place in zip(graph.ops, report["ops"]):
        if place["placement"] == "tpu":
            from_tpu.update(op.outputs)
        elif place["status"] not in (T.ONE_SUBGRAPH, "Model refused") and from_tpu.intersection(op.inputs):
            return place
    return None


def _cutting(report, first):
    """How cutting the model around the first blocker helps, in words."""
    ops = report["ops"]
    later = ops[first["index"] + 1:]
    followers = sum(1 for op in later if op["status"] == T.ONE_SUBGRAPH)
    if not followers:
        return None   # nothing the Edge TPU could run waits behind it
    return (f"op {first['index']} {first['type']} ends the Edge TPU part: `python -m quantize "
            f"--isolate-unsupported` makes each run of unsupported ops a CPU stage of its own, so the "
            f"{followers} supported op(s) after it that now follow it to the CPU can map")


def suggest(report, graph):
    """[{"ops": [positions], "type", "fix"}] for the ops that keep parts of the model off the Edge TPU.

    Args:
      report: a pre-flight report (``check.check_graph``) of ``graph``, a ``tflitegraph.graph.Graph``.
    """
    blockers = _blockers(report)
    groups = {}
    for op in blockers:
        groups.setdefault((op["type"], op["status"]), []).append(op["index"])
    fixes = []
    for (kind, status), positions in groups.items():
        advice = BY_TYPE.get(kind) or BY_STATUS.get(status)
        if status == T.BAD_TYPE and kind in T.FLOAT_BOUNDARY_OPS and \
                all(set(graph.ops[p].outputs) <= set(graph.outputs) for p in positions):
            advice = ("convert with uint8 or int8 input and output (`python -m quantize --io-type`) so no "
                      "float conversion is left inside the model")
        if advice:
            fixes.append({"ops": positions, "type": kind, "fix": advice})
    first = _ends_tpu_part(report, graph)
    cutting = None if first is None else _cutting(report, first)
    if cutting:
        fixes.append({"ops": [first["index"]], "type": first["type"], "fix": cutting})
    return fixes
