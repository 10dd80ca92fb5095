"""Benchmark a run's stage chain: latency per stage and end to end, throughput sequential vs pipelined.

    python -m deploy bench --run runs/demo [--samples 200] [--warmup 20] [--threads 1] [--no-xnnpack]

Both modes run the same loaded stages on the same inputs after a warm-up. The
result goes into the manifest (``deploy.bench``) and, when matplotlib is
installed, a plot into the run folder (``bench.png``).
"""
import os
import time

import numpy as np

import runfolder
from deploy.pipeline.runner import PipelinedRunner
from deploy.core.runtime import load_runtime

PLOT_NAME = "bench.png"


def percentiles_ms(seconds):
    """{"p50", "p95", "p99", "mean"} in milliseconds of a list of durations in seconds."""
    ms = np.asarray(seconds, dtype=np.float64) * 1000.0
    if ms.size == 0:
        return {"p50": None, "p95": None, "p99": None, "mean": None}
    return {"p50": float(np.percentile(ms, 50)), "p95": float(np.percentile(ms, 95)),
            "p99": float(np.percentile(ms, 99)), "mean": float(ms.mean())}


def _summary(wall, end_to_end, per_stage, count):
    return {"samples": count, "seconds": wall, "throughput_per_s": count / wall if wall > 0 else None,
            "end_to_end_ms": percentiles_ms(end_to_end),
            "stages_ms": [percentiles_ms(column) for column in per_stage]}


def bench_sequential(chain, feeds, warmup=10, progress=None):
    """Runs the stages one after another on one thread, one sample at a time.

    Returns:
      dict: ``samples``, ``seconds`` (wall), ``throughput_per_s``,
      ``end_to_end_ms`` and ``stages_ms`` (each {"p50","p95","p99","mean"}).
    """
    for feed in feeds[:warmup]:
        chain.run(feed)
    timings, end_to_end = [], []
    start = time.perf_counter()
    for i, feed in enumerate(feeds):
        began = time.perf_counter()
        chain.run(feed, timings)
        end_to_end.append(time.perf_counter() - began)
        if progress:
            progress(i + 1, len(feeds))
    wall = time.perf_counter() - start
    return _summary(wall, end_to_end, list(zip(*timings)) if timings else [], len(feeds))


def bench_pipelined(chain, feeds, warmup=10, queue_size=2, progress=None, copies=None):
    """Runs the stages on one thread each (``PipelinedRunner``) with the inputs streamed in.

    End-to-end latency is from push to the end of the last stage, so it
    includes waiting in queues under full load. Returns the dict of
    ``bench_sequential``. ``copies``: as for ``PipelinedRunner``.
    """
    if warmup:
        with PipelinedRunner(chain, queue_size=queue_size, copies=copies) as runner:
            for _ in runner.stream(feeds[:warmup]):
                pass
    per_stage, end_to_end = [], []
    runner = PipelinedRunner(chain, queue_size=queue_size, copies=copies)
    start = time.perf_counter()
    for i, result in enumerate(runner.stream(feeds)):
        per_stage.append(result.stage_seconds)
        end_to_end.append(result.latency_seconds)
        if progress:
            progress(i + 1, len(feeds))
    wall = time.perf_counter() - start
    runner.close()
    return _summary(wall, end_to_end, list(zip(*per_stage)) if per_stage else [], len(feeds))


def bench_chain(chain, feeds, warmup=10, queue_size=2, progress=None, copies=None):
    """Sequential and pipelined figures for one chain, with their throughput ratio.

    Args:
      progress: optional callable(label) -> callable(done, total), e.g.
        ``deploy.core.progress.printer``.
      copies: {stage position: [more copies]}: also run the pipeline with them ("replicated").
    Returns:
      dict: ``sequential``, ``pipelined`` (see ``bench_sequential``) and
      ``speedup`` (pipelined throughput / sequential throughput); with copies also ``replicated``,
      ``copies`` ({stage index: copies in all}) and ``replicated_speedup`` (over pipelined).
    """
    sequential = bench_sequential(chain, feeds, warmup, progress and progress("sequential"))
    pipelined = bench_pipelined(chain, feeds, warmup, queue_size, progress and progress("pipelined"))
    result = {"sequential": sequential, "pipelined": pipelined,
              "speedup": _ratio(pipelined, sequential)}
    if copies:
        replicated = bench_pipelined(chain, feeds, warmup, queue_size, progress and progress("replicated"), copies)
        result.update(replicated=replicated, replicated_speedup=_ratio(replicated, pipelined),
                      copies={str(chain.stages[k].index): 1 + len(v) for k, v in copies.items()})
    return result


def _ratio(a, b):
    return a["throughput_per_s"] / b["throughput_per_s"] if a["throughput_per_s"] and b["throughput_per_s"] else None


def table_lines(result):
    """Lines of text for people: one row per stage and one for the whole chain, per mode."""
    lines = [f"{'':<12}{'mode':<12}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'per s':>9}"]
    for mode in ("sequential", "pipelined", "replicated"):
        if mode not in result:
            continue
        figures = result[mode]
        for k, stage in enumerate(figures["stages_ms"]):
            name = f"stage {result['stages'][k]['index']}" if "stages" in result else f"stage {k}"
            lines.append(f"{name:<12}{mode:<12}{stage['p50']:>9.3f}{stage['p95']:>9.3f}{stage['p99']:>9.3f}")
        e2e = figures["end_to_end_ms"]
        lines.append(f"{'end to end':<12}{mode:<12}{e2e['p50']:>9.3f}{e2e['p95']:>9.3f}{e2e['p99']:>9.3f}"
                     f"{figures['throughput_per_s']:>9.1f}")
    if result.get("speedup"):
        lines.append(f"pipelined / sequential throughput: {result['speedup']:.2f}x "
                     f"({result.get('cpu_count', os.cpu_count())} CPU cores)")
    if result.get("replicated_speedup"):
        copies = ", ".join(f"stage {k} x{n}" for k, n in result["copies"].items())
        lines.append(f"replicated ({copies}) / pipelined throughput: {result['replicated_speedup']:.2f}x")
    lines.append("(pipelined end to end: from push to result with the pipeline full, so queueing included)")
    slowest = max((stage["p50"] for stage in result["sequential"]["stages_ms"]), default=None)
    if result.get("speedup") and result["speedup"] < 1 and slowest is not None and slowest < 0.5:
        lines.append(f"note: the slowest stage takes {slowest * 1000:.0f} us; handing requests between "
                     "threads costs more than that, so pipelining pays only for stages of about a "
                     "millisecond or more (MobileNetV2 224 in 2 stages: ~1.8x on 2 cores, bench/pipeline.py)")
    return lines


def plot(result, path):
    """Writes a bar chart of per-stage and end-to-end p50 latency and the two throughputs.

    Returns:
      The path written, or None when matplotlib is not installed (a deploy-only
      environment needs none): the caller says the plot was skipped.
    """
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    modes = ("sequential", "pipelined")
    labels = [f"stage {s['index']}" for s in result["stages"]] + ["end to end\n(pipelined: queueing incl.)"]
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4), gridspec_kw={"width_ratios": [3, 1]})
    width = 0.38
    for offset, mode in zip((-width / 2, width / 2), modes):
        values = [s["p50"] for s in result[mode]["stages_ms"]] + [result[mode]["end_to_end_ms"]["p50"]]
        left.bar(np.arange(len(labels)) + offset, values, width, label=mode)
    left.set_xticks(np.arange(len(labels)), labels)
    left.set_ylabel("p50 latency (ms)")
    left.legend()
    right.bar(list(modes), [result[m]["throughput_per_s"] for m in modes], color=["C0", "C1"])
    right.set_ylabel("samples per second")
    speedup = f" - pipelined {result['speedup']:.2f}x" if result.get("speedup") else ""
    figure.suptitle(f"{result['runtime']}, {result['samples']} samples{speedup}")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def record(run_dir, manifest, result, make_plot=True):
    """Saves ``result`` as ``deploy.bench`` in the manifest, with the plot's file record when made.

    Returns:
      The plot path, or None (plot not wanted, or matplotlib missing).
    """
    written = plot(result, os.path.join(run_dir, PLOT_NAME)) if make_plot else None
    result = dict(result)
    result["plot"] = runfolder.file_record(run_dir, written) if written else None
    manifest.setdefault("deploy", {})["bench"] = result
    runfolder.save(run_dir, manifest)
    return written


def describe(chain, samples, warmup, num_threads, xnnpack, queue_size):
    """The settings that go with a benchmark's figures."""
    runtime = load_runtime()
    return {"runtime": f"{runtime.name} {runtime.version}", "samples": samples, "warmup": warmup,
            "num_threads": num_threads, "xnnpack": xnnpack, "queue_size": queue_size,
            "cpu_count": os.cpu_count(),
            "stages": [{"index": s.index, "placement": s.placement, "reason": s.reason} for s in chain.stages]}
