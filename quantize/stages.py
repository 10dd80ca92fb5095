"""Write the stages of a split into a run folder and describe them in its manifest."""
import pathlib
import shutil

import runfolder
from quantize.graph import GraphError, read_graph
from quantize.split import balanced_cut_positions, cut_positions_after, describe_tensor, split_model


def check_full_int8(graph):
    """Raises GraphError naming the first float tensor an op computes with."""
    for op in graph.ops:
        for t in list(op.inputs) + list(op.outputs):
            if t >= 0 and graph.tensors[t].dtype in ("float32", "float16"):
                tensor = graph.tensors[t]
                raise GraphError(
                    f"the model is not full-int8: op {op.position} ({op.name}) uses {tensor.dtype} tensor "
                    f"'{tensor.name}'. Convert with full-integer quantization (`python -m quantize --run ...`, "
                    "or TFLiteConverter with TFLITE_BUILTINS_INT8 and a representative dataset)")


def plan_cuts(graph, stages=None, cut_after=None):
    """Cut positions from ``--cut-after`` names, or balanced for ``--stages``."""
    if cut_after:
        return cut_positions_after(graph, cut_after)
    return balanced_cut_positions(graph, stages or 1)


def write_stages(run_dir, model_path, stages=None, cut_after=None, progress=print):
    """Splits ``model_path`` and writes ``stages/stage_K.tflite`` into ``run_dir``.

    Returns:
      (split section, stages list) for the manifest.
    Raises:
      GraphError: the model is not full-int8 or cannot be cut as asked.
    """
    graph = read_graph(str(model_path))
    check_full_int8(graph)
    cuts = plan_cuts(graph, stages, cut_after)
    parts = split_model(graph, cuts)
    out = pathlib.Path(run_dir) / "stages"
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    entries = []
    for k, part in enumerate(parts):
        path = out / f"stage_{k}.tflite"
        path.write_bytes(part["model_bytes"])
        entries.append({
            "index": k, "name": f"stage_{k}", "model": runfolder.file_record(run_dir, path),
            "parameter_bytes": part["parameter_bytes"], "macs": part["macs"], "op_count": part["op_count"],
            "ops": part["ops"], "op_range": [part["start"], part["end"]],
            "inputs": part["inputs"], "outputs": part["outputs"], "compiled": None, "compile": None,
        })
        crossing = ", ".join(_short(t["name"]) for t in part["outputs"])
        progress(f"  stage {k}: ops {part['start']}-{part['end'] - 1} ({part['op_count']} ops, "
                 f"{part['macs']:,} MACs, {part['parameter_bytes']:,} parameter bytes) -> {crossing}")
    split = {
        "source": runfolder.file_record(run_dir, model_path) if _inside(run_dir, model_path)
        else {"path": str(pathlib.Path(model_path).resolve()), "sha256": runfolder.sha256_of(model_path)},
        "method": "cut-after" if cut_after else "balanced-macs",
        "cut_after": list(cut_after or []), "cut_positions": cuts,
        "crossing": [[graph.tensors[t].name for t in graph.crossing(c)] for c in cuts],
        "model_inputs": [describe_tensor(graph, t) for t in graph.inputs],
        "model_outputs": [describe_tensor(graph, t) for t in graph.outputs],
    }
    return split, entries


def _short(name, width=60):
    return name if len(name) <= width else name[: width - 3] + "..."


def _inside(run_dir, path):
    try:
        pathlib.Path(path).resolve().relative_to(pathlib.Path(run_dir).resolve())
        return True
    except ValueError:
        return False


def split_into(out_dir, model_path, stages=None, cut_after=None, progress=print):
    """``quantize split``: stages of any full-int8 tflite in a new run folder ``out_dir``."""
    if not pathlib.Path(model_path).is_file():
        raise GraphError(f"model file {model_path} does not exist")
    manifest = runfolder.load(out_dir, create=True)
    for later in ("stages", "split", "compile", "deploy"):
        manifest.pop(later, None)
    split, entries = write_stages(out_dir, model_path, stages, cut_after, progress)
    manifest["quantization"] = manifest.get("quantization") or {"int8_model": split["source"], "external": True}
    manifest["split"], manifest["stages"] = split, entries
    runfolder.save(out_dir, manifest)
    return manifest
