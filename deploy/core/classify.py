"""Classify with a chain of stages (or one whole model): inputs in, class scores out.

The same path serves single images, the held-out test set and the unsplit
reference model: pixels -> ``datasets.to_model_input`` (the one preprocessing
function training used) -> quantize with the input tensor's own parameters ->
chain -> dequantize with the output tensor's parameters -> class scores (the values themselves when
the model ends in a softmax, else their softmax: ``deploy.core.tensors.class_scores``).
"""
import collections
import time

import numpy as np

from datasets.preprocess import PIXELS_0_1, to_model_input
from deploy.core.chain import StageChain
from deploy.core.runtime import make_interpreter
from deploy.core.tensors import class_scores, dequantize, describe_details, quantize
from runfolder.errors import OptionError

Class = collections.namedtuple("Class", "id score")
WholeModel = collections.namedtuple("WholeModel", "index name path inputs outputs placement reason interpreter")


def whole_model_chain(path, num_threads=None, normalization=None):
    """A one-stage chain over an unsplit model file (e.g. the reference int8 model); ``normalization``
    (mean, std) of its input as for StageChain."""
    interpreter = make_interpreter(path, num_threads=num_threads)
    stage = WholeModel(0, "whole", str(path), describe_details(interpreter.get_input_details()),
                       describe_details(interpreter.get_output_details()), "cpu", "unsplit model", interpreter)
    return StageChain([stage], normalization=normalization)


def raw_pixels_exact(tensor, normalization):
    """True when quantizing (pixels - mean) / std with the input tensor's parameters gives the pixels back:
    a uint8 input of scale 1/std and zero point mean, as Coral's models have (1/128, 128 for [-1, 1))."""
    mean, std = normalization
    scale, zero = tensor.get("scale"), tensor.get("zero_point")
    if tensor.get("dtype") != "uint8" or not isinstance(scale, (int, float)) or not isinstance(zero, (int, float)):
        return False
    return abs(float(scale) * std - 1.0) < 1e-6 and int(zero) == mean


def image_feed(chain, pixels):
    """Quantized feed for a single-input chain from uint8 pixels (H, W, C): the pixels themselves when the
    input contract allows (no arithmetic, as Coral's examples feed), else normalized, then quantized."""
    if len(chain.inputs) != 1:
        raise OptionError(f"the chain has {len(chain.inputs)} inputs; images feed single-input models only")
    tensor = chain.inputs[0]
    normalization = getattr(chain, "normalization", None) or PIXELS_0_1
    if raw_pixels_exact(tensor, normalization):
        return {tensor["name"]: np.ascontiguousarray(pixels, dtype=np.uint8)[np.newaxis]}
    values = to_model_input(pixels, normalization)[np.newaxis]
    return {tensor["name"]: quantize(values, tensor)}


def logits(chain, pixels, timings=None):
    """Float outputs of the chain's first output for one image."""
    outputs = chain.run(image_feed(chain, pixels), timings)
    first = chain.outputs[0]
    return dequantize(outputs[first["name"]], first).reshape(-1)


def logits_with_exit(chain, pixels, exit_threshold=None, timings=None):
    """(float logits, exit stage index or None) for one image, stopping at a confident exit head."""
    outputs, exit_stage = chain.run_with_exit(image_feed(chain, pixels), exit_threshold, timings)
    described = chain.outputs[0] if exit_stage is None else chain.exit_output(exit_stage)
    return dequantize(outputs[described["name"]], described).reshape(-1), exit_stage


def scores(chain, pixels, exit_threshold=None):
    """(class scores summing to one, exit stage index or None) for one image."""
    outputs, exit_stage = chain.run_with_exit(image_feed(chain, pixels), exit_threshold)
    described = chain.outputs[0] if exit_stage is None else chain.exit_output(exit_stage)
    values = dequantize(outputs[described["name"]], described).reshape(-1)
    kind = getattr(chain, "output_kind", None) if exit_stage is None else None   # exit heads: our own logits
    return class_scores(values, described, kind), exit_stage


def classify(chain, pixels, top_k=3, exit_threshold=None):
    """Top-k Class(id, score) for one image; scores are probabilities (or a taken exit's)."""
    values = scores(chain, pixels, exit_threshold)[0]
    order = np.argsort(-values)[:top_k]
    return [Class(int(i), float(values[i])) for i in order]


def evaluate(chain, images, labels, progress=None, exit_threshold=None):
    """Accuracy and latency of the chain on a labelled set of uint8 images.

    Args:
      progress: optional callable(done, total) for a progress display.
      exit_threshold: take a stage's early exit at this top probability (None: run every stage).
    Returns:
      dict with ``accuracy``, ``samples``, ``predictions`` (array),
      ``latency_ms`` ({"median", "p95"} end to end) and ``stage_latency_ms``
      (median per stage), ``latencies_ms`` (per sample); with ``exit_threshold``
      also ``exit_stages`` (per sample, the stage whose exit was taken or None).
    """
    timings, predictions = [], np.empty(len(images), dtype=np.int64)
    total_times, exit_stages = [], []
    for i, pixels in enumerate(images):
        start = time.perf_counter()
        if exit_threshold is None:
            predictions[i] = int(np.argmax(logits(chain, pixels, timings)))
        else:
            values, exit_stage = logits_with_exit(chain, pixels, exit_threshold, timings)
            predictions[i] = int(np.argmax(values))
            exit_stages.append(exit_stage)
        total_times.append(time.perf_counter() - start)
        if progress:
            progress(i + 1, len(images))
    per_stage = np.asarray(timings) * 1000.0
    total = np.asarray(total_times) * 1000.0
    result = {
        "accuracy": float(np.mean(predictions == np.asarray(labels))),
        "samples": len(images),
        "predictions": predictions,
        "latency_ms": {"median": float(np.median(total)), "p95": float(np.percentile(total, 95))},
        "stage_latency_ms": [float(v) for v in np.median(per_stage, axis=0)],
        "latencies_ms": total.tolist(),
    }
    if exit_threshold is not None:  # per sample: the stage whose exit was taken, None for the full chain
        result.update(exit_threshold=exit_threshold, exit_stages=exit_stages)
    return result


def output_accuracies(chain, images, labels, exits):
    """Top-1 accuracy of each exit head alone, {boundary: accuracy}, on labelled uint8 images.

    Args:
      chain: a StageChain whose outputs include each exit's output (e.g. the unsplit int8 model).
      exits: [{"boundary", "output"}] as in the training manifest.
    """
    described = {t["name"]: t for t in chain.outputs}
    missing = [e["output"] for e in exits if e["output"] not in described]
    if missing:
        raise OptionError(f"the model has no output {', '.join(missing)}; re-run `python -m quantize`")
    hits = dict.fromkeys((e["boundary"] for e in exits), 0)
    for pixels, label in zip(images, labels):
        outputs = chain.run(image_feed(chain, pixels))
        for entry in exits:
            hits[entry["boundary"]] += int(np.argmax(outputs[entry["output"]]) == label)
    return {boundary: count / max(len(labels), 1) for boundary, count in hits.items()}
