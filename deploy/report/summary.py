"""The end-of-run summary table, read from the manifest only."""
import runfolder
from deploy.core.tensors import short_name


def _pct(value):
    return "-" if value is None else f"{100 * value:.2f}%"


def _tensors(tensors):
    return "; ".join(f"{short_name(t['name'])} {'x'.join(map(str, t['shape']))} {t['dtype']}" for t in tensors)


def _counts(pairs):
    """'CONV_2D x3, ADD' from [(op, count)] in first-seen order."""
    merged = {}
    for op, count in pairs:
        merged[op] = merged.get(op, 0) + count
    return ", ".join(op if n == 1 else f"{op} x{n}" for op, n in merged.items())


def op_placement(stage):
    """Where each op of a stage runs: the compiler's table when compiled, else the pre-flight prediction."""
    compiled = stage.get("compile") or {}
    if compiled.get("operations"):
        tpu = [(o["op"], o["count"]) for o in compiled["operations"] if o["on_tpu"]]
        cpu = [(o["op"], o["count"]) for o in compiled["operations"] if not o["on_tpu"]]
        source = "compiled"
    elif (stage.get("preflight") or {}).get("placement"):
        pairs = list(zip(stage["ops"], stage["preflight"]["placement"]))
        tpu = [(op, 1) for op, where in pairs if where == "tpu"]
        cpu = [(op, 1) for op, where in pairs if where == "cpu"]
        source = "predicted, not compiled"
    else:
        return None
    text = f"ops ({source}): Edge TPU {sum(n for _, n in tpu)}, CPU {sum(n for _, n in cpu)}"
    return text + (f"; on the CPU: {_counts(cpu)}" if cpu else "")


def summary_lines(manifest):
    """Lines of text: accuracies, bit-exactness, and one row per stage."""
    accuracy = manifest.get("accuracy") or {}
    verify = (manifest.get("deploy") or {}).get("verify")
    evaluation = (manifest.get("deploy") or {}).get("eval") or {}
    compile_info = manifest.get("compile") or {}
    lines = [
        (f"run {manifest.get('run')}  data {(manifest.get('dataset') or {}).get('name', '-')}  "
         f"model {(manifest.get('training') or {}).get('model', '-')}"),
        f"accuracy  float {_pct(accuracy.get('float'))}  int8 {_pct(accuracy.get('int8'))}  "
        f"chain {_pct(accuracy.get('chain'))}"
        + (f"  ({evaluation['samples']} held-out test samples)" if evaluation else ""),
        "chain vs unsplit int8: " + (
            "not verified (run `python -m deploy verify`)" if not verify else
            f"{'bit-exact' if verify['bit_exact'] else 'MISMATCH'} "
            f"({verify['mismatching_outputs']} mismatching outputs of {verify['outputs_compared']})"),
        f"compile: {compile_info.get('status', 'not run')}"
        + (f" with edgetpu_compiler {compile_info['compiler']['version']}" if compile_info.get("compiler") else "")
        + (f" - {compile_info['message']}" if compile_info.get("message") else ""),
        "",
    ]
    placements = {s["index"]: s for s in evaluation.get("stages", [])}
    stages = manifest.get("stages") or []
    balance = (manifest.get("split") or {}).get("balance") or {}
    estimates = balance.get("stage_edgetpu_ms_estimated") or []
    rows = []
    for stage in stages:
        latency = placements.get(stage["index"], {}).get("latency_ms_median")
        record = stage.get("edgetpu_estimate") or {}   # None for a stage made to run on the CPU
        if "edgetpu_estimate" in stage:
            estimate = record.get("ms")
        else:                             # a run split before stages kept their own
            estimate = estimates[stage["index"]] if stage["index"] < len(estimates) else None
        untimed = record.get("cpu_ops") and record.get("cpu_ms") is None   # CPU ops not timed: TPU part only
        rows.append([str(stage["index"]), f"{stage['model']['bytes']:,}", f"{stage['parameter_bytes']:,}",
                     str(stage["op_count"]), "-" if latency is None else f"{latency:.3f}",
                     "-" if estimate is None else f"~{estimate:.3f}" + ("+CPU" if untimed else ""),
                     placements.get(stage["index"], {}).get("placement", "not run")])
    header = ["stage", "bytes", "params", "ops", "ms", "TPU est.", "runs on"]
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]

    def row(cells, tail):   # numbers right-aligned, two spaces between columns whatever their width
        return "  ".join(c.ljust(w) if i in (0, 6) else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))) \
            + "  " + tail
    lines.append(row(header, "inputs -> outputs"))
    lines.append("-" * len(lines[-1]))
    for stage, cells in zip(stages, rows):
        placed = placements.get(stage["index"], {})
        lines.append(row(cells, f"{_tensors(stage['inputs'])} -> {_tensors(stage['outputs'])}"))
        if placed.get("reason"):
            lines.append(f"{'':<6}why: {placed['reason']}")
        where = op_placement(stage)
        if where:
            lines.append(f"{'':<6}{where}")
        compiled = stage.get("compile")
        if compiled and compiled.get("total_ops") is not None:
            lines.append(f"{'':<6}compiled: {compiled.get('ops_mapped')}/{compiled['total_ops']} ops mapped to the "
                         f"Edge TPU, {compiled.get('edgetpu_subgraphs')} TPU subgraph(s), on-chip "
                         f"{compiled.get('on_chip_memory_bytes', 0):,} B, off-chip "
                         f"{compiled.get('off_chip_memory_bytes', 0):,} B")
    if estimates or any(s.get("edgetpu_estimate") for s in stages):
        compiled = any((s.get("edgetpu_estimate") or {}).get("streamed_from") == "compiler" for s in stages)
        lines.append(f"ms: measured here; TPU est.: estimated ms on one Edge TPU per stage over "
                     f"{balance.get('edgetpu_link', 'usb3')} (an estimate, tflitegraph/edgetpu_latency.py"
                     + ("; with the parameter bytes the compiler said it streams" if compiled else "")
                     + "; +CPU: and the ops it leaves on the CPU, not timed)")
    if evaluation:
        lines.append(f"end to end: median {evaluation['latency_ms']['median']:.3f} ms, "
                     f"p95 {evaluation['latency_ms']['p95']:.3f} ms ({evaluation['runtime']})")
    bench = (manifest.get("deploy") or {}).get("bench")
    if bench and bench.get("speedup"):
        lines.append(f"bench: {bench['sequential']['throughput_per_s']:.1f}/s one stage after another, "
                     f"{bench['pipelined']['throughput_per_s']:.1f}/s pipelined ({bench['speedup']:.2f}x, "
                     f"{bench['samples']} samples, {bench['runtime']})")
    return lines


def print_summary(run_dir):
    for line in summary_lines(runfolder.load(run_dir)):
        print(line)
