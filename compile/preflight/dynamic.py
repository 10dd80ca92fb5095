"""Which tensors the compiler's TFLite interpreter can size only while running ("dynamic-sized").

The compiler loads the model in a TFLite interpreter (TF 2.5 era), prepares every op and applies its
delegate, which refuses a graph holding any dynamic-sized tensor: "Attempting to use a delegate that only
supports static-sized tensors with a graph that has dynamic-sized tensors" (tests/data/edgetpu_compiler/
dynamic_tensors_failed_stdout.txt). The interpreter sizes tensors from ``shape``, in which a dynamic batch
is 1, not from ``shape_signature`` (-1): a -1 batch in the signature alone is static. Evidence: the real
compiler (versions 15 and 16) mapped every op of five Keras models whose every tensor has a -1 batch in
its signature (tests/data/edgetpu_pairs, system-software-lab/nrf20).

A tensor is dynamic when the op writing it takes the output size from the values of an input that is
not a constant (TFLite kernels call ``SetTensorToDynamic`` then: a RESHAPE to ``tf.shape(x)[0]``, a
resize to another tensor's size, a TILE by computed multiples), or when the size depends on the data.
"""

# op -> positions of the inputs whose values set the output size (TFLite kernels' Prepare).
SIZE_INPUTS = {
    "RESHAPE": (1,), "RESIZE_BILINEAR": (1,), "RESIZE_NEAREST_NEIGHBOR": (1,), "TILE": (1,),
    "PAD": (1,), "PADV2": (1,), "MIRROR_PAD": (1,), "SLICE": (1, 2), "STRIDED_SLICE": (1, 2, 3),
    "BROADCAST_TO": (1,), "FILL": (0,), "EXPAND_DIMS": (1,), "TRANSPOSE": (1,), "MEAN": (1,),
    "SUM": (1,), "REDUCE_MAX": (1,), "REDUCE_MIN": (1,), "REDUCE_PROD": (1,), "REDUCE_ANY": (1,),
    "SPLIT": (0,), "SPLIT_V": (1, 2), "TRANSPOSE_CONV": (0,), "ARG_MAX": (1,), "ARG_MIN": (1,),
    "RANGE": (0, 1, 2), "SPACE_TO_BATCH_ND": (1, 2), "BATCH_TO_SPACE_ND": (1, 2), "ONE_HOT": (1,),
    "SEGMENT_SUM": (1,),
}
# Ops whose output size depends on the data itself (or on a subgraph): always dynamic.
DATA_SIZED = {"WHERE", "UNIQUE", "NON_MAX_SUPPRESSION_V4", "NON_MAX_SUPPRESSION_V5", "WHILE", "IF"}
# Newer TFLite kernels (after compiler 16.0's) also postpone sizing these when their input has a -1 in its
# signature: what the real compiler does with them is not known, so they are reported as a risk only.
SIGNATURE_SIZED = {"SLICE", "STRIDED_SLICE"}


def _signature_dynamic(graph, t):
    signature = graph.model.subgraphs[0].tensors[t].shapeSignature
    return signature is not None and any(int(d) < 0 for d in signature)


def dynamic_tensors(graph):
    """[(tensor name, why)] for the tensors the interpreter sizes only at run time (the first per op)."""
    found = []
    for op in graph.ops:
        outputs = [t for t in op.outputs if t >= 0]
        if not outputs:
            continue
        if op.name in DATA_SIZED:
            found.append((graph.tensors[outputs[0]].name, f"op {op.position} {op.name} sizes it by the data"))
            continue
        computed = [op.inputs[p] for p in SIZE_INPUTS.get(op.name, ())
                    if p < len(op.inputs) and op.inputs[p] >= 0 and not graph.tensors[op.inputs[p]].is_constant]
        if computed:
            found.append((graph.tensors[outputs[0]].name,
                          f"op {op.position} {op.name} takes its output size from '{graph.tensors[computed[0]].name}', "
                          "computed while running"))
    return found


def signature_risks(graph):
    """Lines about ops a newer interpreter would size at run time because of a -1 in a signature."""
    return [f"op {op.position} {op.name} reads '{graph.tensors[op.inputs[0]].name}', whose shape signature has -1: "
            "TFLite releases after compiler 16.0's size its output only while running; if the compiler fails "
            "with 'static-sized tensors', convert with a fixed batch size of 1"
            for op in graph.ops if op.name in SIGNATURE_SIZED and op.inputs and op.inputs[0] >= 0
            and _signature_dynamic(graph, op.inputs[0])]
