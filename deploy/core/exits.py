"""Early exit (seed 001): stop at a stage boundary when its exit head is confident enough.

A stage that ends at a boundary with an exit head has one more output, the
head's logits; the manifest names it in the stage's ``exit`` entry
({"output": tensor name, "boundary": ...}). The decision is made on the
dequantized logits, so it is the same in-process and over the network.
"""
import math

import numpy as np
from runfolder.errors import OptionError

_SMALL = 64  # up to this many classes plain Python floats beat numpy's per-call overhead


def _exit_terms(stage_entry, outputs):
    """(exp(logit - top logit) per class, their sum) of the stage's exit, or None without one.

    The zero point cancels in the difference, so only the scale is needed. It
    runs once per stage per sample (also in the gRPC stage server), so small
    heads skip numpy: ~2 us instead of ~10 us, more than a tiny stage's invoke.
    Float64 throughout: the threshold test is the same with numpy 1 (a Pi) and 2.
    """
    exit_entry = stage_entry.get("exit")
    if not exit_entry:
        return None
    name = exit_entry["output"]
    described = next(t for t in stage_entry["outputs"] if t["name"] == name)
    scale = float(described.get("scale") or 1.0)  # 0.0 marks a float tensor: logits as they are
    values = np.asarray(outputs[name]).ravel()
    if values.size <= _SMALL:
        values = values.tolist()
        top = max(values)
        terms = [math.exp((v - top) * scale) for v in values]
        return terms, math.fsum(terms)
    terms = np.exp((values.astype(np.float64) - values.max()) * scale)
    return terms, float(terms.sum())


def check_exit_threshold(manifest, threshold):
    """Raises ValueError when a ``threshold`` is given for a run with no exit heads."""
    if threshold is None:
        return
    if not any(isinstance(entry, dict) and entry.get("exit") for entry in manifest.get("stages") or []):
        raise OptionError(f"--exit-threshold {threshold:g} given, but this run has no early-exit heads; leave it out, "
                         "or train with them (`python -m training --exits BOUNDARY,...`) and quantize again")


def exit_probabilities(stage_entry, outputs):
    """Softmax of the stage's exit logits, or None when the stage has no exit."""
    found = _exit_terms(stage_entry, outputs)
    if found is None:
        return None
    terms, total = found
    return np.asarray(terms, np.float64) / total


def exit_taken(stage_entry, outputs, threshold):
    """The exit output's tensor name when its top softmax probability reaches ``threshold``, else None.

    Args:
      stage_entry: the stage's manifest entry.
      outputs: {tensor name: array} the stage produced.
      threshold: None (early exit off) or a probability; 1.0 exits only on certainty.
    """
    if threshold is None:
        return None
    found = _exit_terms(stage_entry, outputs)
    if found is None or 1.0 / found[1] < threshold:  # the top class's term is exp(0) = 1
        return None
    return stage_entry["exit"]["output"]


def stage_exits(manifest):
    """{stage index: stage manifest entry} of the stages that end at an exit head."""
    return {entry["index"]: entry for entry in manifest.get("stages") or [] if entry.get("exit")}


def exit_points(manifest):
    """Boundary names of the run's exits in stage order (empty when the model has none)."""
    return [entry["exit"]["boundary"] for entry in stage_exits(manifest).values()]


def exit_shares(chain, exit_stages):
    """{boundary: share of samples that exited there, ..., "final": share that ran every stage}."""
    count = max(len(exit_stages), 1)
    shares = {entry["exit"]["boundary"]: sum(s == index for s in exit_stages) / count
              for index, entry in chain.exits.items() if index != chain.stages[-1].index}
    shares["final"] = sum(s is None for s in exit_stages) / count
    return shares
