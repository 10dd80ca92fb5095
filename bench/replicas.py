"""Throughput of a pipeline whose middle stage is slow, without and with copies of that stage.

    .venv/bin/python bench/replicas.py [--slow-ms 8] [--copies 1,2,3,4] [--samples 200] [--repeats 3]

MobileNet v1 0.25 (Coral's test model) split in 3 stages with real CPU interpreters; stage 1 also
sleeps ``--slow-ms`` per request, standing in for a stage on a slow Edge TPU (sleeping frees the GIL as
``invoke()`` does, so copies overlap as copies on separate TPUs would). A pipeline runs at its slowest
stage, so k copies of it should approach k times the throughput until the other stages or the host
limit it. Every run checks that results come in input order with the bytes of the chain run one
request at a time. Prints a table (medians over ``--repeats``), then one JSON line.
"""
import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from deploy.core.chain import run_interpreter
from deploy.core.open import Runtime, open_chain
from deploy.core.verify import sample_feeds
from deploy.pipeline import replicas
from deploy.pipeline.runner import PipelinedRunner

MODEL = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared",
                     "coral_test_data", "mobilenet_v1_0.25_128_quant.tflite")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=MODEL)
    parser.add_argument("--slow-ms", type=float, default=8.0, help="sleep added to stage 1 per request")
    parser.add_argument("--copies", default="1,2,3,4", help="copies of stage 1 to compare (1: none)")
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from quantize.plan_options import PlanOptions
    from quantize.stages import split_into
    run = os.path.join(tempfile.mkdtemp(prefix="replicas-"), "run")
    split_into(run, args.model, PlanOptions(stages=3), progress=lambda *_: None)
    manifest, chain = open_chain(run, "cpu", tpus=[])
    feeds = sample_feeds(chain, args.samples, None)
    expected = [chain.run(feed) for feed in feeds]

    def run_stage(stage, values):
        if stage.index == 1:
            time.sleep(args.slow_ms / 1000)
        return run_interpreter(stage.interpreter, values)

    rows = []
    for total in (int(c) for c in args.copies.split(",")):
        copies = replicas.load_copies(run, manifest, {1: total}, Runtime("cpu", tpus=[])) if total > 1 else None
        rates = []
        for _ in range(args.repeats):
            with PipelinedRunner(chain, run_stage=run_stage, copies=copies) as runner:
                start = time.perf_counter()
                results = list(runner.stream(feeds))
                rates.append(len(feeds) / (time.perf_counter() - start))
            in_order = [r.request_id for r in results] == list(range(len(feeds)))
            exact = all(np.array_equal(r.outputs[n], e[n]) for r, e in zip(results, expected) for n in e)
            if not (in_order and exact):
                sys.exit(f"copies {total}: results out of order or not byte-exact")
        rows.append({"copies": total, "throughput_per_s": round(statistics.median(rates), 1)})
    base = rows[0]["throughput_per_s"]
    bound = 1000 / args.slow_ms
    print(f"stage 1 slowed by {args.slow_ms} ms (one copy alone: at most {bound:.0f}/s); "
          f"{args.samples} samples, median of {args.repeats}; order and bytes checked every run")
    print(f"{'copies':>6}  {'per s':>8}  {'vs 1 copy':>9}")
    for row in rows:
        row["speedup"] = round(row["throughput_per_s"] / base, 3)
        print(f"{row['copies']:>6}  {row['throughput_per_s']:>8.1f}  {row['speedup']:>8.2f}x")
    print(json.dumps({"slow_ms": args.slow_ms, "samples": args.samples, "rows": rows}))


if __name__ == "__main__":
    main()
