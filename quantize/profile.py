"""Measure CPU latency with the real interpreter: of each op alone, and of whole stages.

Each op is cut out into a one-op model (the same surgery as a stage) and
invoked on random inputs of its real shapes and types. Timings go round-robin
over all models, one invoke each per round, so a burst of noise on a shared
machine spreads over every op instead of landing on one; the median of the
rounds is kept. This is the idea behind Coral's ``partition_with_profiling``,
done on the CPU so no Edge TPU needs to be plugged in.
"""
import itertools
import time

import numpy as np

from tflitegraph import schema as fb
from quantize.split import extract_stage


def _random_feeds(interpreter, rng):
    feeds = []
    for detail in interpreter.get_input_details():
        dtype = np.dtype(detail["dtype"])
        if dtype.kind in "iu":
            info = np.iinfo(dtype)
            low, high = max(info.min, -128), min(info.max, 255)
            value = rng.integers(low, high + 1, size=detail["shape"]).astype(dtype)
        else:
            value = rng.standard_normal(detail["shape"]).astype(dtype)
        feeds.append((detail["index"], value))
    return feeds


def _interpreters(model_bytes_list, num_threads, xnnpack):
    from deploy.core.runtime import make_interpreter
    return [make_interpreter(data, num_threads=num_threads, xnnpack=xnnpack) for data in model_bytes_list]


def time_models(model_bytes_list, runs=30, warmup=3, num_threads=1, xnnpack=True, seed=0, progress=None):
    """Median milliseconds of one invoke of each model, timed round-robin.

    Args:
      model_bytes_list: .tflite models as bytes.
      runs: timed rounds; warmup: untimed rounds first.
      num_threads: interpreter threads (1: one core per pipeline stage).
      progress: optional callable(done, total) after each round.
    """
    interpreters = _interpreters(model_bytes_list, num_threads, xnnpack)
    rng = np.random.default_rng(seed)
    feeds = [_random_feeds(interp, rng) for interp in interpreters]
    for interp, feed in zip(interpreters, feeds):
        for index, value in feed:
            interp.set_tensor(index, value)
    times = np.zeros((runs, len(interpreters)))
    for round_ in range(warmup + runs):
        for k, interp in enumerate(interpreters):
            start = time.perf_counter_ns()
            interp.invoke()
            if round_ >= warmup:
                times[round_ - warmup, k] = (time.perf_counter_ns() - start) / 1e6
        if progress and round_ >= warmup:
            progress(round_ - warmup + 1, runs)
    return [float(v) for v in np.median(times, axis=0)]


def op_latencies(graph, runs=30, num_threads=1, xnnpack=True, progress=None):
    """Median CPU milliseconds of every op of ``graph``, each run as a one-op model."""
    models = [fb.model_to_bytes(extract_stage(graph, p, p + 1)[0]) for p in range(len(graph.ops))]
    return time_models(models, runs=runs, num_threads=num_threads, xnnpack=xnnpack, progress=progress)


def stage_models(graph, cuts):
    """Bytes of the stage models the cuts make."""
    bounds = [0] + list(cuts) + [len(graph.ops)]
    return [fb.model_to_bytes(extract_stage(graph, a, b)[0]) for a, b in itertools.pairwise(bounds)]


def stage_latencies(graph, cuts, runs=30, num_threads=1, xnnpack=True):
    """Median CPU milliseconds of each stage the cuts make, each stage a real stage model."""
    return time_models(stage_models(graph, cuts), runs=runs, num_threads=num_threads, xnnpack=xnnpack)
