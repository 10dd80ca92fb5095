"""Write the stages of a split into a run folder and describe them in its manifest."""
import pathlib
import shutil

import runfolder
from quantize.contract import input_from_model
from quantize.edgetpu_check import (
    describe_changes,
    lower_op_versions,
    preflight_stages,
    supported_ops,
)
from quantize.exit_heads import exit_cut_positions
from tflitegraph.graph import GraphError, read_graph
from quantize.partition import (
    OBJECTIVES,
    balanced_plan,
    check_stage_count,
    cut_after_plan,
    isolating_plan,
    make_plan,
)
from quantize.plan_options import PlanOptions
from quantize.plan_table import format_plan
from quantize.profile import op_latencies, stage_latencies
from quantize.split import cut_positions_after, describe_tensor, split_model


def check_full_int8(graph):
    """Raises GraphError naming the first float tensor an op computes with.

    Float is allowed only where a model converts at its own edges: the input
    of a QUANTIZE op reading a model input, and the output of a DEQUANTIZE op
    writing a model output (the Edge TPU compiler leaves those on the CPU).
    """
    for op in graph.ops:
        for t in list(op.inputs) + list(op.outputs):
            if t < 0 or graph.tensors[t].dtype not in ("float32", "float16"):
                continue
            if (op.name == "QUANTIZE" and t in op.inputs and t in graph.inputs) or (
                    op.name == "DEQUANTIZE" and t in op.outputs and t in graph.outputs):
                continue
            tensor = graph.tensors[t]
            raise GraphError(
                f"the model is not full-int8: op {op.position} ({op.name}) uses {tensor.dtype} tensor "
                f"'{tensor.name}'. Convert with full-integer quantization (`python -m quantize --run ...`, "
                "or TFLiteConverter with TFLITE_BUILTINS_INT8 and a representative dataset)")


def plan_split(graph, options=PlanOptions(), progress=print, exits=None):
    """The Plan for ``options.cut_after`` names, or the optimal one for its ``stages`` and ``balance``.

    Profiles each op's CPU latency with the real interpreter when the
    objective is latency or ``options.profile`` is set (for the plan's latency column).
    With ``isolate_unsupported`` every run of ops the Edge TPU cannot run gets
    its own CPU stage (``stages`` None: as few stages as that takes).
    With ``exits`` (see ``quantize.exit_heads.exit_cut_positions``) the cuts
    are right after each exit head, plus those ``cut_after`` names.
    Raises:
      GraphError: the model is not full-int8 or cannot be cut as asked.
    """
    if any(op.name == "edgetpu-custom-op" for op in graph.ops):
        raise GraphError("the model is already compiled for the Edge TPU (it has an edgetpu-custom-op): split the "
                         "model you gave the compiler (the file without _edgetpu), then compile the stages")
    check_full_int8(graph)
    o = options
    if o.balance not in OBJECTIVES:
        raise GraphError(f"unknown --balance '{o.balance}'; choose one of {', '.join(OBJECTIVES)}")
    if exits and o.isolate_unsupported:
        raise GraphError("--isolate-unsupported chooses its own cuts and an early-exit model is cut at its "
                         "exits; drop --isolate-unsupported")
    if o.cut_after and o.isolate_unsupported:
        raise GraphError("--isolate-unsupported chooses its own cuts; drop --cut-after or it")
    if o.profile_cuts and (o.balance != "edgetpu" or o.cut_after or o.isolate_unsupported or exits):
        raise GraphError("--profile-cuts refines the cuts of --balance edgetpu by compiling their stages: use it "
                         "with --balance edgetpu and --stages, without --cut-after, --isolate-unsupported or exits")
    if not o.cut_after and not o.isolate_unsupported and not exits:
        check_stage_count(graph, o.stage_count())
    latencies, supported = None, supported_ops(graph)
    if o.times_ops() or o.balance == "edgetpu" and not all(supported):
        kernels = "XNNPACK" if o.xnnpack else "built-in"
        why = "" if o.times_ops() else (f": {supported.count(False)} of them the Edge TPU cannot run, so the "
                                        "estimate charges what the compiler leaves on the CPU its CPU time")
        progress(f"profiling {len(graph.ops)} ops on the CPU ({o.runs} rounds, {o.threads} thread(s), "
                 f"{kernels} kernels){why}")
        latencies = op_latencies(graph, runs=o.runs, num_threads=o.threads, xnnpack=o.xnnpack)
    if exits:
        cuts = sorted(set(exit_cut_positions(graph, exits)) | set(cut_positions_after(graph, o.cut_after)))
        if o.stages and o.stages != len(cuts) + 1:
            progress(f"note: the model has {len(exits)} early exit(s); cutting at them gives {len(cuts) + 1} "
                     f"stages (--stages {o.stages} ignored; add cuts with --cut-after)")
        return cut_after_plan(graph, cuts, latencies, supported)
    if o.cut_after:
        return cut_after_plan(graph, cut_positions_after(graph, o.cut_after), latencies, supported)
    if o.profile_cuts:
        return _compiled_plan(graph, o, supported, latencies, progress)
    if o.isolate_unsupported:
        progress(f"isolating unsupported ops: {supported.count(False)} of {len(supported)} ops cannot run "
                 "on the Edge TPU")
        return isolating_plan(graph, supported, o.stages, o.objective(), latencies)
    return balanced_plan(graph, o.stage_count(), o.objective(), latencies, o.single_tensor,
                         measure=lambda cuts: stage_latencies(graph, cuts, runs=o.runs, num_threads=o.threads,
                                                              xnnpack=o.xnnpack), supported=supported)


def _compiled_plan(graph, o, supported, latencies, progress):
    """The edgetpu plan refined by the compiler's figures (``quantize.compiled_cuts``)."""
    from quantize.compiled_cuts import CompiledCuts, refine_cuts
    cuts, estimates, history = refine_cuts(graph, o.stage_count(), o.objective(), supported, latencies,
                                           CompiledCuts(o.compiler, rounds=o.profile_rounds), progress)
    plan = make_plan(graph, cuts, o.objective(), latencies, rounds=history, supported=supported)
    plan.estimates, plan.edgetpu_ms, plan.refined_by = estimates, [e["ms"] for e in estimates], "compiler"
    return plan


def write_stages(run_dir, model_path, options=PlanOptions(), progress=print, lower_versions=True, exits=None):
    """Splits ``model_path`` as ``options`` say and writes ``stages/stage_K.tflite`` into ``run_dir``.

    With ``lower_versions``, op versions compiler 16.0 would refuse are lowered
    in the stage files where the kernels provably compute the same (``quantize_run``
    has lowered its model already and says False). Each stage gets the
    pre-flight prediction of where its ops will run. ``exits`` ([{name, boundary,
    output}] of the training manifest) cut after each exit head; the stage ending
    there gets an ``exit`` entry naming the head's logits output.
    Returns:
      (split section, stages list) for the manifest.
    Raises:
      GraphError: the model is not full-int8 or cannot be cut as asked.
    """
    data = pathlib.Path(model_path).read_bytes()
    changes = []
    if lower_versions:
        data, changes = lower_op_versions(data)
        for line in describe_changes(changes):
            progress("  lowered for edgetpu_compiler 16.0: " + line)
    graph = read_graph(data)
    plan = plan_split(graph, options, progress, exits)
    parts = split_model(graph, plan.cuts)
    out = pathlib.Path(run_dir) / "stages"
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    entries = []
    for k, (part, cost) in enumerate(zip(parts, plan.stages)):
        path = out / f"stage_{k}.tflite"
        path.write_bytes(part["model_bytes"])
        entries.append({
            "index": k, "name": f"stage_{k}", "model": runfolder.file_record(run_dir, path),
            "parameter_bytes": part["parameter_bytes"], "macs": part["macs"], "op_count": part["op_count"],
            "activation_in_bytes": cost.activation_in_bytes, "activation_out_bytes": cost.activation_out_bytes,
            "estimated_latency_ms": round(plan.latency_ms[k], 4) if plan.latency_ms else None,
            "ops": part["ops"], "op_range": [part["start"], part["end"]],
            "inputs": part["inputs"], "outputs": part["outputs"], "compiled": None, "compile": None,
            "target": plan.targets[k] if plan.targets else None,
            "edgetpu_estimate": None if plan.targets and plan.targets[k] == "cpu" else plan.estimates[k],
        })
    _mark_exits(graph, entries, exits or [])
    for line in format_plan(plan):
        progress("  " + line)
    preflight_stages(run_dir, entries, progress)
    split = {
        "source": runfolder.file_record(run_dir, model_path) if _inside(run_dir, model_path)
        else {"path": str(pathlib.Path(model_path).resolve()), "sha256": runfolder.sha256_of(model_path)},
        "method": "exits" if exits else "cut-after" if options.cut_after else plan.objective if plan.targets else f"balanced-{plan.objective}",
        "op_version_rewrites": changes,
        "cut_after": list(options.cut_after), "cut_positions": plan.cuts,
        "crossing": [names for names, _ in plan.crossing],
        "balance": {**plan.to_dict(), "profile": None if plan.latency_ms is None else
                    options.profile_record()},
        "model_inputs": [describe_tensor(graph, t) for t in graph.inputs],
        "model_outputs": [describe_tensor(graph, t) for t in graph.outputs],
    }
    return split, entries


def _mark_exits(graph, entries, exits):
    """Adds ``exit`` {output, boundary, head} to the stage that ends right after each exit head."""
    for entry, cut in zip(exits, exit_cut_positions(graph, exits) if exits else []):
        stage = next(s for s in entries if s["op_range"][1] == cut)
        stage["exit"] = {"output": entry["output"], "boundary": entry["boundary"], "head": entry["name"]}


def _inside(run_dir, path):
    try:
        pathlib.Path(path).resolve().relative_to(pathlib.Path(run_dir).resolve())
        return True
    except ValueError:
        return False


def split_into(out_dir, model_path, options=PlanOptions(), progress=print, overwrite=False, contract=None,
               keep_op_versions=False):
    """``quantize split``: stages of any full-int8 tflite in a new run folder ``out_dir``, cut as ``options`` say.

    ``contract``: {"input": {"normalization", "source", "resize_method", "color_order"}?, "labels":
    {"source", "names"}?} as given on the command line (the normalization, when not given, read from the
    model's input quantization); what the model says of its output (a last SOFTMAX: probabilities) is recorded too.
    A folder that already holds a run is replaced only with ``overwrite``.
    """
    if not pathlib.Path(model_path).is_file():
        raise GraphError(f"model file {model_path} does not exist")
    out = pathlib.Path(out_dir)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise GraphError(f"{out_dir} already has files; pass --overwrite to replace it, or choose another --out")
        if not (out / runfolder.manifest.MANIFEST_NAME).exists():
            raise GraphError(f"{out_dir} is not empty and is not a run folder; refusing to delete it")
        shutil.rmtree(out)
    graph = read_graph(model_path)
    manifest = runfolder.load(out_dir, create=True)
    split, entries = write_stages(out_dir, model_path, options, progress, lower_versions=not keep_op_versions)
    manifest["quantization"] = {"int8_model": split["source"], "external": True}
    manifest["split"], manifest["stages"] = split, entries
    manifest["output"] = output_contract(graph)
    manifest.update({k: v for k, v in (contract or {}).items() if v})
    if "normalization" not in (manifest.get("input") or {}):
        found = input_from_model(entries[0]["inputs"][0])
        if found:
            manifest["input"] = {**found, **(manifest.get("input") or {})}
    runfolder.save(out_dir, manifest)
    return manifest


def output_contract(graph):
    """{"kind": "probabilities" | "logits", "source"}: what the op computing the model's first output says.
    Type conversions at the edge (a QUANTIZE to uint8 output, a DEQUANTIZE to float) are looked through."""
    tensor, last = graph.outputs[0], None
    while graph.producer.get(tensor, -1) >= 0:
        op = graph.ops[graph.producer[tensor]]
        last = op.name
        if op.name not in ("QUANTIZE", "DEQUANTIZE") or not op.inputs:
            break
        tensor = op.inputs[0]
    kind = "probabilities" if last == "SOFTMAX" else "logits"
    return {"kind": kind, "source": f"the model's last op ({last})"}
