"""The sections of the run report about the stages: sizes, placement, compile results, latency, early exit."""
from deploy.report import plots as report_plots
from deploy.report.data import command
from deploy.report.html import Raw, esc, note, number, pairs, paragraph, pct, table
from deploy.report.sections import figure
from deploy.report.summary import op_placement


def _short(name, width=40):
    first = name.split(";")[0]
    return first if len(first) <= width else "..." + first[-(width - 3):]


def _crossing(split, index):
    """'N tensors, B bytes' crossing the cut after stage ``index`` (None after the last)."""
    crossing = split.get("crossing") or []
    if index >= len(crossing):
        return None
    sizes = (split.get("balance") or {}).get("crossing_bytes") or []
    size = f", {sizes[index]:,} B" if index < len(sizes) and sizes[index] is not None else ""
    names = crossing[index]
    return Raw(f"{len(names)} tensor(s){esc(size)}<br><span class=\"small\">"
               + "<br>".join(esc(_short(n)) for n in names) + "</span>")


def _compile_cell(stage):
    result = stage.get("compile")
    if not result:
        return "not compiled"
    if result.get("total_ops") is None:
        return f"{result.get('status', '-')}" + (f": {result['reason']}" if result.get("reason") else "")
    return (f"{result.get('status', '-')}: {result.get('ops_mapped')}/{result['total_ops']} ops on the Edge TPU, "
            f"{result.get('edgetpu_subgraphs')} TPU subgraph(s), on-chip {result.get('on_chip_memory_bytes', 0):,} B,"
            f" off-chip {result.get('off_chip_memory_bytes', 0):,} B, {result.get('compile_time_ms', '-')} ms")


def _exit_cell(stage):
    entry = stage.get("exit")
    if not entry:
        return "-"
    return f"exit head at {entry.get('boundary', '?')} ({_short(entry.get('output', ''), 30)})"


def _size_rows(manifest):
    split = manifest.get("split") or {}
    rows = []
    for stage in manifest.get("stages") or []:
        index = stage.get("index")
        compiled = stage.get("compiled") or {}
        rows.append((index, stage.get("name"), (stage.get("model") or {}).get("bytes"), compiled.get("bytes"),
                     stage.get("parameter_bytes"), stage.get("macs"), stage.get("op_count"),
                     stage.get("activation_in_bytes"), stage.get("activation_out_bytes"),
                     _crossing(split, index) or "-"))
    return rows


def _placement_rows(manifest):
    evaluation = (manifest.get("deploy") or {}).get("eval") or {}
    placed = {s["index"]: s for s in evaluation.get("stages", [])}
    rows = []
    for stage in manifest.get("stages") or []:
        where = placed.get(stage.get("index"), {})
        runs_on = (f"{where['placement']} ({where.get('reason', '')})" if where.get("placement")
                   else "not run yet")
        preflight = stage.get("preflight") or {}
        fits = preflight.get("fits_on_chip")
        rows.append((stage.get("index"), op_placement(stage) or "-", runs_on, stage.get("target") or "-",
                     "-" if fits is None else ("yes" if fits else "no"), _compile_cell(stage), _exit_cell(stage)))
    return rows


def _ops_details(manifest):
    """Per stage, its ops in order with the pre-flight placement, folded away by default."""
    parts = []
    for stage in manifest.get("stages") or []:
        placement = (stage.get("preflight") or {}).get("placement") or []
        ops = stage.get("ops") or []
        rows = [(k, op, placement[k] if k < len(placement) else "-") for k, op in enumerate(ops)]
        parts.append(f"<details><summary>stage {esc(stage.get('index'))}: {len(ops)} ops</summary>"
                     + table(["#", "op", "pre-flight placement"], rows) + "</details>")
    return "\n".join(parts)


def compile_summary(manifest, run):
    """The compile step's status and, for --num-segments, its segments."""
    section = manifest.get("compile")
    if not section:
        return note(f"not compiled; `{command('compile', run)}` compiles each stage for the Edge TPU")
    compiler = section.get("compiler") or {}
    rows = [("status", section.get("status")), ("mode", section.get("mode", "-")),
            ("compiler", f"{compiler.get('path', '-')} {compiler.get('version', '')}" if compiler else "-")]
    if section.get("message"):
        rows.append(("message", section["message"]))
    parts = [f'<div id="compile-summary"><h3>Compile</h3>{pairs(rows)}</div>']
    if section.get("status") != "compiled":
        parts.append(note(f"stages are not compiled ({section.get('status')}); they run on the CPU. Install "
                          f"edgetpu_compiler and run `{command('compile', run)}`"))
    segments = section.get("segments") or []
    if segments:
        parts.append(table(["segment", "file bytes", "compile"],
                           [(s.get("index"), (s.get("compiled") or {}).get("bytes"), _compile_cell(s))
                            for s in segments]))
    return "\n".join(parts)


def stages(data):
    manifest, run = data["manifest"], data["run_dir"]
    if not manifest.get("stages"):
        return note(f"no stages in this run; `{command('quantize', run)}` quantizes and splits the model")
    split = manifest.get("split") or {}
    balance = split.get("balance") or {}
    ratios = ", ".join(f"{k} {v}" for k, v in (balance.get("max_over_mean") or {}).items())
    parts = [paragraph(f"split: {split.get('method', '-')} at op positions {split.get('cut_positions', '-')}"
                       + (f"; largest stage / mean: {ratios}" if ratios else "")),
             table(["stage", "name", "file B", "compiled B", "params B", "MACs", "ops", "activations in B",
                    "activations out B", "crossing to next stage"], _size_rows(manifest), table_id="stage-sizes"),
             table(["stage", "where each op runs", "runs on (last eval)", "target", "fits on chip",
                    "compile", "exit"], _placement_rows(manifest), table_id="stage-placement"),
             _ops_details(manifest),
             compile_summary(manifest, run)]
    return "\n".join(parts)


def _stage_latency_series(manifest):
    stage_list = manifest.get("stages") or []
    deploy = manifest.get("deploy") or {}
    evaluation = {s["index"]: s.get("latency_ms_median") for s in (deploy.get("eval") or {}).get("stages", [])}
    balance = (manifest.get("split") or {}).get("balance") or {}
    tpu = balance.get("stage_edgetpu_ms_estimated") or []
    series = {"estimated": [s.get("estimated_latency_ms") for s in stage_list],
              f"Edge TPU estimate ({balance.get('edgetpu_link', 'usb3')})":
                  [tpu[i] if i < len(tpu) else None for i in range(len(stage_list))],
              "eval median": [evaluation.get(s.get("index")) for s in stage_list]}
    bench = deploy.get("bench") or {}
    for mode in ("sequential", "pipelined"):
        per_stage = (bench.get(mode) or {}).get("stages_ms") or []
        series[f"bench {mode} p50"] = [(per_stage[i] or {}).get("p50") if i < len(per_stage) else None
                                       for i in range(len(stage_list))]
    return series


def latency(data):
    manifest, run = data["manifest"], data["run_dir"]
    deploy = manifest.get("deploy") or {}
    evaluation, bench = deploy.get("eval"), deploy.get("bench")
    series = _stage_latency_series(manifest)
    parts = []
    if evaluation:
        e2e = evaluation.get("latency_ms") or {}
        parts.append(paragraph(f"end to end (deploy --eval, {evaluation.get('samples')} samples, "
                               f"{evaluation.get('runtime')}): median {number(e2e.get('median'))} ms, "
                               f"p95 {number(e2e.get('p95'))} ms"))
    else:
        parts.append(note(f"no evaluation latency; `{command('eval', run)}` measures it"))
    if bench:
        parts.append(_bench_table(bench))
    else:
        parts.append(note(f"no benchmark (p50/p95/p99, sequential vs pipelined); `{command('bench', run)}`"))
    if manifest.get("stages"):
        headers = ["stage"] + [f"{name} ms" for name in series]
        rows = [[i] + [values[i] for values in series.values()] for i in range(len(manifest["stages"]))]
        parts.append(table(headers, rows, table_id="stage-latency"))
        parts.append(note("Edge TPU estimate: no Edge TPU was used; the estimate of "
                          "tflitegraph/edgetpu_latency.py for one Edge TPU per stage (its error: "
                          "bench/edgetpu_model.py). estimated: the CPU, summed from ops timed here; eval and "
                          "bench: measured."))
        parts.append(figure(report_plots.stage_latency(series), "latency per stage"))
    return "\n".join(parts)


def _bench_table(bench):
    rows = []
    for mode in ("sequential", "pipelined"):
        result = bench.get(mode) or {}
        e2e = result.get("end_to_end_ms") or {}
        rows.append((mode, result.get("throughput_per_s"), e2e.get("p50"), e2e.get("p95"), e2e.get("p99")))
    stage_rows = []
    for mode in ("sequential", "pipelined"):
        for i, ms in enumerate((bench.get(mode) or {}).get("stages_ms") or []):
            ms = ms or {}
            stage_rows.append((mode, i, ms.get("p50"), ms.get("p95"), ms.get("p99")))
    speedup = bench.get("speedup")
    head = paragraph(f"bench: {bench.get('samples')} samples after {bench.get('warmup')} warm-up, "
                     f"{bench.get('runtime')}, {bench.get('cpu_count')} CPUs, queue size {bench.get('queue_size')}"
                     + (f"; pipelined / sequential throughput {speedup:.2f}x" if speedup else ""))
    return "\n".join([head,
                      table(["mode", "samples/s", "end to end p50 ms", "p95 ms", "p99 ms"], rows,
                            table_id="bench-end-to-end"),
                      table(["mode", "stage", "p50 ms", "p95 ms", "p99 ms"], stage_rows, table_id="bench-stages")])


def exits(data):
    manifest, run = data["manifest"], data["run_dir"]
    heads = [s for s in manifest.get("stages") or [] if s.get("exit")]
    result = (manifest.get("deploy") or {}).get("exits")
    parts = []
    if heads:
        parts.append(paragraph("exit heads: " + "; ".join(f"stage {s['index']}: {_exit_cell(s)}" for s in heads)))
    if not result:
        parts.append(note("no exits in this run: no stage ends with an exit head, so every sample runs the "
                          f"whole chain. For a run trained with exit heads, `{command('exits', run)}` measures "
                          "the accuracy / latency trade-off per threshold" if not heads else
                          f"exit heads exist but the trade-off is not measured; `{command('exits', run)}`"))
        return "\n".join(parts)
    rows = result.get("rows") or []
    boundaries = []
    for row in rows:
        for name in (row.get("exit_share") or {}):
            if name not in boundaries:
                boundaries.append(name)
    table_rows = [[str(row.get("threshold"))] + [pct((row.get("exit_share") or {}).get(b)) for b in boundaries]
                  + [pct(row.get("accuracy")), row.get("latency_ms_mean"), row.get("latency_ms_p50")]
                  for row in rows]
    full = result.get("full_model") or {}
    if full:
        table_rows.append(["full model"] + ["-"] * len(boundaries)
                          + [pct(full.get("accuracy")), full.get("latency_ms_mean"), full.get("latency_ms_p50")])
    parts.append(table(["threshold"] + [f"share exiting at {b}" for b in boundaries]
                       + ["accuracy", "latency mean ms", "latency p50 ms"], table_rows, table_id="exit-table"))
    if "goal" in result:
        goal = result["goal"] or []
        parts.append(paragraph("thresholds where at least half the samples leave early within one accuracy point "
                               "of the full model: " + (", ".join(str(t) for t in goal) or "none")))
    parts.append(figure(report_plots.exit_tradeoff(rows, full), "early exit: accuracy vs latency per threshold"))
    return "\n".join(parts)
