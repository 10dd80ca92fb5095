"""Pipelined vs sequential throughput of MobileNetV2 224 split in 2 and 3 stages, and the GIL check.

    .venv/bin/python bench/pipeline.py --samples 200 --warmup 20 --threads 1
    .venv-pi/bin/python bench/pipeline.py --samples 200 --threads 1   # tflite-runtime 2.14 (splits made above)

Each stage is a real share of MobileNetV2's work, so on 2 free cores the
pipelined runner (one thread per stage) should approach 2x the sequential
chain (target >= 1.8x); with more stages than cores even a pipeline without
any hand-off cost cannot, and the "ceiling" column measures exactly that. The GIL check runs two interpreters of the unsplit
model on two threads against the same invokes on one thread: 2.0x means the
runtime releases the GIL in ``invoke()``, 1.0x that it holds it.

Splits are made with ``quantize`` (main venv) into --work and reused, so the
deploy-only venv can run this script after the main one has. Prints a table,
then one JSON line with every figure (medians; ratios included).
"""
import argparse
import json
import os
import sys
import threading
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from deploy.pipeline.bench import bench_chain
from deploy.core.open import open_chain
from deploy.core.runtime import load_runtime, make_interpreter
from deploy.core.verify import sample_feeds
from quantize.plan_options import PlanOptions

MODEL = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared",
                     "coral_test_data", "mobilenet_v2_1.0_224_quant.tflite")


def split_run(model, stages, work, balance="latency"):
    """A run folder with ``model`` split in ``stages`` (made once, then reused).

    ``latency`` balance times each op on one CPU thread (quantize's profiler), so
    the stages take about equal time, which is what a pipeline needs; ``macs``
    evens out computation, which on the CPU leaves the first stages slower.
    """
    out = os.path.join(work, f"{os.path.splitext(os.path.basename(model))[0]}_{stages}_{balance}")
    if not os.path.exists(os.path.join(out, "manifest.json")):
        try:
            from quantize.stages import split_into
        except ImportError as exc:
            sys.exit(f"{out} does not exist and quantize cannot run here ({exc}); run this script once with "
                     "the main venv (.venv/bin/python) to make the splits")
        split_into(out, model, PlanOptions(stages=stages, balance=balance, threads=1), progress=lambda *_: None)
    return out


def concurrently(interpreters, invokes):
    """Seconds for each interpreter to invoke ``invokes`` times, each on its own thread, all at once."""
    def work(interpreter):
        for _ in range(invokes):
            interpreter.invoke()

    pool = [threading.Thread(target=work, args=(i,)) for i in interpreters]
    start = time.perf_counter()
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return time.perf_counter() - start


def gil_check(model, invokes, threads=1):
    """Seconds for 2 x ``invokes`` on one thread vs on two threads (one interpreter each); and the ratio."""
    interpreters = [make_interpreter(model, num_threads=threads) for _ in range(2)]
    for interpreter in interpreters:
        detail = interpreter.get_input_details()[0]
        interpreter.set_tensor(detail["index"], np.zeros(detail["shape"], dtype=detail["dtype"]))
        interpreter.invoke()

    rounds = []
    for _ in range(3):
        start = time.perf_counter()
        for interpreter in interpreters:
            for _ in range(invokes):
                interpreter.invoke()
        rounds.append((time.perf_counter() - start, concurrently(interpreters, invokes)))
    one, two = np.median([r[0] for r in rounds]), np.median([r[1] for r in rounds])
    return {"one_thread_s": float(one), "two_threads_s": float(two), "ratio": float(one / two),
            "invokes_per_thread": invokes, "rounds": 3}


def ceiling(chain, invokes):
    """Samples/s with every stage invoking at once on its own thread and no hand-offs at all.

    The most any pipeline could reach on this machine: with more stages than
    cores, the threads share the cores and this stays below 2x.
    """
    interpreters = [stage.interpreter for stage in chain.stages]
    for interpreter in interpreters:
        for detail in interpreter.get_input_details():
            interpreter.set_tensor(detail["index"], np.zeros(detail["shape"], dtype=detail["dtype"]))

    return invokes / concurrently(interpreters, invokes)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=os.path.normpath(MODEL))
    parser.add_argument("--stages", type=int, nargs="+", default=[2, 3])
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3, help="repeats; medians are reported")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads per stage interpreter")
    parser.add_argument("--queue-size", type=int, default=8,
                        help="bound of each queue (default 8: deeper queues absorb scheduling jitter when "
                             "stages outnumber cores; 3 stages on 2 cores measured 1.59x at 2, 1.81x at 8)")
    parser.add_argument("--balance", choices=["latency", "macs"], default="latency",
                        help="how quantize cuts the model (default latency: equal time per stage)")
    parser.add_argument("--gil-invokes", type=int, default=20, help="invokes per thread in the GIL check (0: skip)")
    parser.add_argument("--work", default=os.path.join(os.environ.get("TMPDIR", "/tmp"), "coral_stages_bench"))
    args = parser.parse_args(argv)
    runtime = load_runtime()
    figures = {"bench": "pipeline", "runtime": f"{runtime.name} {runtime.version}", "model": args.model,
               "cpu_count": os.cpu_count(), "threads_per_stage": args.threads, "samples": args.samples,
               "queue_size": args.queue_size,
               "balance": args.balance,
               "stages": {}}
    rows = []
    for count in args.stages:
        _, chain = open_chain(split_run(args.model, count, args.work, args.balance), "cpu", args.threads, tpus=[])
        feeds = sample_feeds(chain, args.samples)
        rounds = []
        for _ in range(args.rounds):  # interleaved, so drifting machine load hits all three alike
            result = bench_chain(chain, feeds, args.warmup, args.queue_size)
            rounds.append((result["sequential"]["throughput_per_s"], result["pipelined"]["throughput_per_s"],
                           ceiling(chain, args.samples)))
        seq, pipe = result["sequential"], result["pipelined"]
        seq_rate, pipe_rate, bound = (float(np.median(column)) for column in zip(*rounds))
        speedup = float(np.median([p / q for q, p, _ in rounds]))
        figures["stages"][str(count)] = {
            "sequential_per_s": seq_rate, "pipelined_per_s": pipe_rate,
            "speedup": speedup, "speedup_per_round": [p / q for q, p, _ in rounds], "ceiling_per_s": bound,
            "ceiling_speedup": float(np.median([c / q for q, _, c in rounds])),
            "pipelined_of_ceiling": pipe_rate / bound,
            "sequential_p50_ms": seq["end_to_end_ms"]["p50"],
            "pipelined_p50_ms": pipe["end_to_end_ms"]["p50"],
            "stage_p50_ms": [s["p50"] for s in seq["stages_ms"]]}
        rows.append((f"{count} stages", seq_rate, pipe_rate, speedup,
                     figures["stages"][str(count)]["ceiling_speedup"],
                     " / ".join(f"{s['p50']:.1f}" for s in seq["stages_ms"])))
    if args.gil_invokes:
        figures["gil"] = gil_check(args.model, args.gil_invokes, args.threads)
    print(f"{runtime.name} {runtime.version}, {os.cpu_count()} cores, {args.threads} thread(s) per stage, "
          f"queues of {args.queue_size}, {args.samples} samples, median of {args.rounds} rounds")
    print(f"{'split':<10}{'sequential/s':>14}{'pipelined/s':>13}{'speedup':>9}{'ceiling':>9}   stage p50 ms")
    for name, seq, pipe, speedup, bound, stages in rows:
        print(f"{name:<10}{seq:>14.1f}{pipe:>13.1f}{speedup:>8.2f}x{bound:>8.2f}x   {stages}")
    print("ceiling: every stage invoking at once on its own thread with no hand-offs (the most any "
          "pipeline could reach here)")
    if "gil" in figures:
        gil = figures["gil"]
        print(f"GIL check: {2 * gil['invokes_per_thread']} invokes on 1 thread {gil['one_thread_s']:.3f} s, "
              f"on 2 threads {gil['two_threads_s']:.3f} s -> {gil['ratio']:.2f}x "
              f"({'released' if gil['ratio'] > 1.5 else 'held' if gil['ratio'] < 1.2 else 'partly released'})")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
