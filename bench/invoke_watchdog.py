"""What the hang watchdog (``--invoke-timeout``) costs per Edge TPU invoke: one hand-off to the stage's
invoke thread and back.

    .venv/bin/python bench/invoke_watchdog.py [--invokes 2000] [--repeats 5]

No Edge TPU here, so Coral's MobileNet v1 0.25 (128 px) runs on the CPU as a stage marked as on an Edge
TPU, through ``deploy.core.fallback.run_stage``: once waiting on the invoke thread with a timeout, once
invoking on the caller's thread (``--invoke-timeout 0``), interleaved, same inputs. Prints the median
microseconds per call of each, their difference (the hand-off) and ratio, then one JSON line. An Edge
TPU invoke takes 1.9 ms or more (tflitegraph/edgetpu_latency.py), which the difference is to be read
against.
"""
import argparse
import json
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from deploy.core.fallback import run_stage
from deploy.core.runtime import make_interpreter
from deploy.core.stages import LoadedStage
from deploy.core.tensors import describe_details

MODEL = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared",
                     "coral_test_data", "mobilenet_v1_0.25_128_quant.tflite")


def _stage(path, timeout):
    interpreter = make_interpreter(path, num_threads=1)
    inputs = describe_details(interpreter.get_input_details())
    outputs = describe_details(interpreter.get_output_details())
    return LoadedStage(0, "stage_0", path, inputs, outputs, "edgetpu:bench", "bench", interpreter,
                       invoke_timeout=timeout)


def _per_call_us(stage, feed, invokes):
    start = time.perf_counter()
    for _ in range(invokes):
        run_stage(stage, feed)
    return (time.perf_counter() - start) / invokes * 1e6


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=MODEL)
    parser.add_argument("--invokes", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    watched, direct = _stage(args.model, 10.0), _stage(args.model, None)
    spec = watched.inputs[0]
    feed = {spec["name"]: np.random.default_rng(0).integers(0, 256, spec["shape"], dtype=np.uint8)}
    assert all(np.array_equal(a, b) for a, b in zip(run_stage(watched, feed).values(),
                                                    run_stage(direct, feed).values()))
    times = {"watched": [], "direct": []}
    for _ in range(args.repeats):
        times["watched"].append(_per_call_us(watched, feed, args.invokes))
        times["direct"].append(_per_call_us(direct, feed, args.invokes))
    median = {k: statistics.median(v) for k, v in times.items()}
    print(f"{'':24}{'us per call (median of ' + str(args.repeats) + ')':>30}")
    print(f"{'invoke on the caller':24}{median['direct']:>30.1f}")
    print(f"{'invoke thread, timeout':24}{median['watched']:>30.1f}")
    print(f"hand-off: {median['watched'] - median['direct']:+.1f} us per call, ratio "
          f"{median['watched'] / median['direct']:.3f}")
    print(json.dumps({"invokes": args.invokes, "repeats": args.repeats, "median_us": median,
                      "handoff_us": median["watched"] - median["direct"]}))


if __name__ == "__main__":
    main()
