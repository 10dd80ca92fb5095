"""Early exit (seed 001): stop at a stage boundary when its exit head is confident enough.

A stage that ends at a boundary with an exit head has one more output, the
head's logits; the manifest names it in the stage's ``exit`` entry
({"output": tensor name, "boundary": ...}). The decision is made on the
dequantized logits, so it is the same in-process and over the network.
"""
import numpy as np


def exit_probabilities(stage_entry, outputs):
    """Softmax of the stage's exit logits, or None when the stage has no exit."""
    exit_entry = stage_entry.get("exit")
    if not exit_entry:
        return None
    name = exit_entry["output"]
    described = next(t for t in stage_entry["outputs"] if t["name"] == name)
    logits = (np.asarray(outputs[name], np.float32).reshape(-1) - described.get("zero_point", 0)) * \
        described.get("scale", 1.0)
    logits = logits - logits.max()
    weights = np.exp(logits)
    return weights / weights.sum()


def exit_taken(stage_entry, outputs, threshold):
    """The exit output's tensor name when its top softmax probability reaches ``threshold``, else None.

    Args:
      stage_entry: the stage's manifest entry.
      outputs: {tensor name: array} the stage produced.
      threshold: None (early exit off) or a probability; 1.0 exits only on certainty.
    """
    if threshold is None:
        return None
    probabilities = exit_probabilities(stage_entry, outputs)
    if probabilities is None or probabilities.max() < threshold:
        return None
    return stage_entry["exit"]["output"]
