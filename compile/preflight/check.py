"""Pre-flight check: predicts what edgetpu_compiler 16.0 will do, without running it.

The API ``python -m quantize`` and the stage partitioner use:

  op_support(graph)          -> [(supported, reason)] per op, each op by itself
                                (``compile.preflight.opcheck``).
  predict_placement(graph)   -> [{"index", "type", "version", "placement", "status",
                                "reason"}] per op, placement "tpu" or "cpu", after the
                                fall-through rule below.
  check_model(path_or_bytes) -> the whole report, the document ``python -m compile
                                check --json`` prints for one model (keys below).
  check_run(run_dir)         -> {"run", "models": [report, ...]}: the int8 model and
                                every stage of a run folder.
  warnings(report)           -> short human-readable lines for the user.

Fall-through rule. Coral: "At the first point in the model graph where an
unsupported operation occurs, the compiler partitions the graph into two parts
... the compiler cannot partition the model more than once, so as soon as an
unsupported operation occurs, that operation and everything after it executes on
the CPU, even if supported operations occur later" (coral.ai/docs/edgetpu/
models-intro/, "Compiling"). Real 16.0 logs read "after" as data flow, not file
order: a leading CPU QUANTIZE of a float input does not stop the ops that follow
it from mapping (tests/data/edgetpu_compiler/yolov8s_integer_quant_edgetpu_160_CPU.log:
1 QUANTIZE on the CPU, 257 ops mapped). So here an op runs on the Edge TPU when it
is supported and reads nothing computed by a CPU op that itself depends on the
Edge TPU part (that would need a second Edge TPU subgraph: status "More than one
subgraph is not supported"). This is the compiler's default; with -a
(--enable_multiple_subgraphs) it may map later parts too.

Needs numpy and a tflite schema reader (ai-edge-litert), never TensorFlow.
"""
import pathlib

import runfolder
from compile.preflight import optable as T
from compile.preflight.dynamic import dynamic_tensors, signature_risks
from compile.preflight.fixes import suggest
from compile.preflight.opcheck import op_risks, op_support, op_version
from tflitegraph import fallthrough
from tflitegraph.graph import GraphError, read_graph
from runfolder.errors import UserError


class CheckError(UserError, ValueError):
    """The model or run folder cannot be checked; the message says what to do."""


def predict_placement(graph, support=None, min_runtime_version=None):
    """Per op: where compiler 16.0 will put it and why (see the module docstring).

    Args:
      graph: a ``tflitegraph.graph.Graph``.
      support: the result of ``op_support(graph)``, if already computed.
    Returns:
      A list of dicts {"index", "type", "version", "placement" ("tpu"|"cpu"),
      "status" (the compiler's status text), "reason" (why, for this model), "risk" (for an
      op predicted on the Edge TPU: why it may still end up on the CPU, else "")}.
    """
    support = support or op_support(graph, min_runtime_version)
    risks = op_risks(graph)
    result = []
    for (op, (supported, why)), (_, on_tpu, blocker) in zip(zip(graph.ops, support),
                                                             fallthrough.walk(graph, [ok for ok, _ in support])):
        if on_tpu:
            placement, status, reason = "tpu", T.MAPPED, ""
        elif supported:
            placement, status = "cpu", T.ONE_SUBGRAPH
            reason = (f"{T.ONE_SUBGRAPH}: it needs the result of op {blocker} "
                      f"({graph.ops[blocker].name}), which runs on the CPU after the Edge TPU "
                      "part; the compiler partitions the model only once")
        else:
            placement, status, reason = "cpu", why.split(":", 1)[0], why
        result.append({"index": op.position, "type": op.name,
                       "version": op_version(graph, op.position), "placement": placement,
                       "status": status, "reason": reason,
                       "risk": risks.get(op.position, "") if placement == "tpu" else ""})
    return result


def version_notes(graph):
    """Op versions compiler 16.0 may or may not parse (``optable.UNCERTAIN_VERSIONS``)."""
    versions = [(op, op_version(graph, op.position)) for op in graph.ops]
    return [f"op {op.position} {op.name} has version {version}, which TensorFlow added in 2.6, "
            "about when compiler 16.0 was built: it may refuse the model. If it does, try "
            "`compile.preflight.rewrite_op_versions`"
            for op, version in versions if (op.name, version) in T.UNCERTAIN_VERSIONS] + signature_risks(graph)


def model_problems(graph):
    """Reasons the compiler would refuse the whole model (empty when it accepts it)."""
    problems = []
    for op in graph.ops:
        limit, source = T.version_limit(op.name)
        version = op_version(graph, op.position)
        uncertain = (op.name, version) in T.UNCERTAIN_VERSIONS
        if limit is not None and version > limit and not uncertain:
            problems.append(
                f"op {op.position} {op.name} has version {version}; compiler 16.0 parses up to "
                f"version {limit} ({source}) and refuses the model ('Model could not be parsed'). "
                "Try `compile.rewrite_op_versions`, or convert with an older TensorFlow")
    dynamic = dynamic_tensors(graph)
    if dynamic:
        name, why = dynamic[0]
        more = f" (and {len(dynamic) - 1} more)" if len(dynamic) > 1 else ""
        problems.append(
            f"tensor '{name}' has a dynamic size: {why}{more}. The compiler accepts only "
            "static sizes ('Attempting to use a delegate that only supports static-sized tensors'): "
            "compute that size from constants (e.g. reshape to -1 instead of tf.shape(x)[0]), or "
            "convert with a fixed batch size of 1 so the converter folds it")
    quantized = any(graph.tensors[t].dtype in ("int8", "uint8") for op in graph.ops
                    for t in op.outputs if t >= 0)
    if graph.ops and not quantized:
        problems.append("no op computes int8/uint8: the compiler refuses it ('Model not "
                        "quantized'); quantize it fully to int8 (`python -m quantize`)")
    return problems


def parameter_memory(graph, placements):
    """Constant bytes of the ops predicted on the Edge TPU, against its on-chip memory."""
    seen, tpu_bytes = set(), 0
    for place in placements:
        if place["placement"] != "tpu":
            continue
        for t in graph.ops[place["index"]].inputs:
            if t >= 0 and graph.tensors[t].is_constant:
                buffer = graph.model.subgraphs[0].tensors[t].buffer
                if buffer not in seen:
                    seen.add(buffer)
                    tpu_bytes += graph.tensors[t].constant_bytes
    total = sum(t.constant_bytes for t in graph.tensors)
    return {"parameter_bytes": total, "tpu_parameter_bytes": tpu_bytes,
            "on_chip_bytes": T.ON_CHIP_BYTES, "usable_on_chip_bytes": T.USABLE_ON_CHIP_BYTES,
            "fits_on_chip": tpu_bytes <= T.USABLE_ON_CHIP_BYTES,
            "streamed_bytes_estimate": max(0, tpu_bytes - T.USABLE_ON_CHIP_BYTES)}


def check_graph(graph, name, min_runtime_version=None):
    """The report of ``check_model`` for an already read graph."""
    placements = predict_placement(graph, min_runtime_version=min_runtime_version)
    problems = model_problems(graph)
    if problems:
        for place in placements:
            place.update(placement="cpu", status="Model refused", risk="",
                         reason="the compiler refuses the whole model: " + problems[0])
    tpu = [p for p in placements if p["placement"] == "tpu"]
    first_cpu = next((p for p in placements if p["placement"] == "cpu"
                      and p["status"] == T.ONE_SUBGRAPH), None)
    report = {
        "model": name,
        "compiler": "edgetpu_compiler 16.0 (prediction; the compiler was not run)",
        "agreement": dict(T.AGREEMENT),   # with real compiled twins: tests/data/edgetpu_pairs
        "refused": bool(problems),
        "problems": problems,
        "notes": version_notes(graph),
        "summary": {"total_ops": len(placements), "tpu_ops": len(tpu),
                    "cpu_ops": len(placements) - len(tpu),
                    "at_risk_ops": sum(1 for p in tpu if p["risk"]),
                    "edgetpu_subgraphs": 1 if tpu else 0,
                    "first_fall_through_op": None if first_cpu is None else first_cpu["index"]},
        "memory": parameter_memory(graph, placements),
        "ops": placements,
    }
    report["fixes"] = [] if problems else suggest(report, graph)
    return report


def check_model(path_or_bytes, name=None, min_runtime_version=None):
    """Pre-flight report of one .tflite model (path or bytes).

    Returns:
      {"model", "compiler", "refused" (bool), "problems" (list of str: why the
       compiler would refuse the model), "notes" (list of str: doubts, e.g. op
       versions it may not know),
       "summary": {"total_ops", "tpu_ops", "cpu_ops", "edgetpu_subgraphs",
       "first_fall_through_op"}, "memory": {"parameter_bytes", "tpu_parameter_bytes",
       "on_chip_bytes", "usable_on_chip_bytes", "fits_on_chip",
       "streamed_bytes_estimate"}, "ops": predict_placement(...)}.
    Raises:
      CheckError: the file is missing or not a single-graph .tflite model.
    """
    if name is None:
        name = "<bytes>" if isinstance(path_or_bytes, (bytes, bytearray)) else str(path_or_bytes)
    if not isinstance(path_or_bytes, (bytes, bytearray)):
        path = pathlib.Path(path_or_bytes)
        if not path.is_file():
            raise CheckError(f"{path} does not exist or is not a file; pass a .tflite model or "
                             "a run folder")
    try:
        graph = read_graph(path_or_bytes)
    except GraphError as exc:
        raise CheckError(f"{exc}. Pass a .tflite model written by the TFLite converter or "
                         "`python -m quantize`") from None
    if any(op.name == "edgetpu-custom-op" for op in graph.ops):
        raise CheckError(f"{name} is already compiled for the Edge TPU (it has an "
                         "edgetpu-custom-op); check the model you gave the compiler instead")
    return check_graph(graph, name, min_runtime_version)


def check_run(run_dir, min_runtime_version=None):
    """Reports for a run folder's int8 model and each of its stages (files hash-checked)."""
    run_dir = pathlib.Path(run_dir)
    manifest = runfolder.load(run_dir)
    stages = runfolder.require(manifest, "stages", run_dir, "python -m compile check")
    targets = []
    int8 = (manifest.get("quantization") or {}).get("int8_model")
    if int8:
        targets.append(("int8 model", runfolder.verify_file(run_dir, int8, "int8 model")))
    for index, stage in enumerate(stages):
        if not isinstance(stage, dict) or not isinstance(stage.get("model"), dict):
            raise runfolder.ManifestError(
                f"stage {index} in {run_dir / 'manifest.json'} has no 'model' file record; "
                f"re-run `{runfolder.restage_command(run_dir)}`")
        name = stage.get("name", f"stage_{index}")
        targets.append((name, runfolder.verify_file(run_dir, stage["model"], f"stage {name} model")))
    models = []
    for name, path in targets:
        report = check_model(path, min_runtime_version=min_runtime_version)
        report["name"] = name
        models.append(report)
    return {"run": str(run_dir), "models": models}


def warnings(report):
    """Short lines about what will not go as hoped, for ``python -m quantize`` to print."""
    label = report.get("name") or report["model"]
    lines = [f"{label}: {line}" for line in report["problems"] + report["notes"]]
    summary, memory = report["summary"], report["memory"]
    if not report["refused"] and summary["cpu_ops"]:
        cpu = [p for p in report["ops"] if p["placement"] == "cpu"]
        first = cpu[0]
        lines.append(
            f"{label}: {summary['cpu_ops']} of {summary['total_ops']} ops predicted on the CPU, "
            f"first op {first['index']} {first['type']} ({first['reason']})")
    risky = [p for p in report["ops"] if p.get("risk")]
    if risky:
        lines.append(f"{label}: {len(risky)} op(s) predicted on the Edge TPU may end up on the CPU; "
                     f"first op {risky[0]['index']}: {risky[0]['risk']}")
    if not report["refused"] and not memory["fits_on_chip"]:
        lines.append(
            f"{label}: {memory['tpu_parameter_bytes']} parameter bytes exceed the ~"
            f"{memory['usable_on_chip_bytes'] >> 20} MiB of on-chip memory; about "
            f"{memory['streamed_bytes_estimate']} bytes would be streamed from the host for "
            "every inference (slower): split into more stages")
    return lines
