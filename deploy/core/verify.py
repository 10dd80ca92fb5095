"""Compare the stage chain with the unsplit model on the same inputs, byte for byte."""
import numpy as np

from deploy.core import edgetpu
from deploy.core.chain import StageChain
from deploy.core.classify import image_feed, whole_model_chain
from deploy.core.stages import StageError


def reference_path(path, tpus):
    """The file to run as reference: a compiled model falls back to its CPU twin when no TPU is used.

    Returns:
      (path, note): note is a one-line explanation or None.
    Raises:
      StageError: a compiled reference with no TPU and no twin.
    """
    if not edgetpu.is_compiled_model(path) or tpus:
        return path, None
    twin = edgetpu.cpu_twin(path)
    if twin is None:
        raise StageError(f"reference {path} is compiled for the Edge TPU (edgetpu-custom-op) and no Edge TPU "
                         "is present; give the uncompiled model instead (its CPU twin was not found next to it)")
    return twin, f"{path} is compiled for the Edge TPU and none is present: using its CPU twin {twin}"


def sample_feeds(chain, count, images=None, seed=0):
    """``count`` quantized feeds: from images when given, else seeded random values."""
    if images is not None and len(images):
        return [image_feed(chain, images[i % len(images)]) for i in range(count)]
    rng = np.random.default_rng(seed)
    feeds = []
    for _ in range(count):
        feed = {}
        for tensor in chain.inputs:
            dtype = np.dtype(tensor["dtype"])
            if dtype.kind == "f":  # a float input quantized by the model's own QUANTIZE op
                feed[tensor["name"]] = rng.random(size=tensor["shape"]).astype(dtype)
                continue
            info = np.iinfo(dtype)
            feed[tensor["name"]] = rng.integers(info.min, info.max, size=tensor["shape"],
                                                endpoint=True).astype(dtype)
        feeds.append(feed)
    return feeds


def compare(chain: StageChain, reference: StageChain, feeds, progress=None):
    """Runs both on every feed; counts outputs that differ in any byte.

    Returns:
      dict: ``samples``, ``outputs_compared``, ``mismatching_outputs``,
      ``max_abs_difference`` (in integer steps), ``top1_agreement``.
    """
    ref_names = [t["name"] for t in reference.outputs]
    chain_names = _matched([t["name"] for t in chain.outputs], ref_names, "outputs")
    input_names = _matched([t["name"] for t in chain.inputs], [t["name"] for t in reference.inputs], "inputs")
    mismatches, compared, max_diff, agree = 0, 0, 0, 0
    for i, feed in enumerate(feeds):
        ref_feed = {t["name"]: feed[c] for t, c in zip(reference.inputs, input_names)}
        expected = reference.run(ref_feed)
        actual = chain.run(feed)
        for ref_name, chain_name in zip(ref_names, chain_names):
            a, b = actual[chain_name], expected[ref_name]
            compared += 1
            if a.shape != b.shape or a.dtype != b.dtype or not np.array_equal(a, b):
                mismatches += 1
            if a.shape == b.shape:
                max_diff = max(max_diff, int(np.max(np.abs(a.astype(np.int64) - b.astype(np.int64)))))
        first_a, first_b = actual[chain_names[0]], expected[ref_names[0]]
        agree += int(np.argmax(first_a) == np.argmax(first_b))
        if progress:
            progress(i + 1, len(feeds))
    return {"samples": len(feeds), "outputs_compared": compared, "mismatching_outputs": mismatches,
            "max_abs_difference": max_diff, "top1_agreement": agree / max(len(feeds), 1),
            "bit_exact": mismatches == 0}


def _matched(chain_names, reference_names, what):
    """Chain tensor names in the reference's order: by name, else by position."""
    if sorted(chain_names) == sorted(reference_names):
        return list(reference_names)
    if len(chain_names) == len(reference_names):
        return list(chain_names)
    raise StageError(f"the chain has {what} {chain_names} but the reference has {reference_names}; "
                     "is the reference the model these stages were split from?")


def reference_chain(path, tpus=()):
    """(chain over the reference file, note) with the compiled-model fallback applied."""
    path, note = reference_path(path, tpus)
    try:
        return whole_model_chain(path), note
    except (ValueError, RuntimeError) as exc:  # not a flatbuffer, unresolved custom op, ...
        raise StageError(f"reference model {path} cannot be loaded by the tflite runtime: "
                         f"{' '.join(str(exc).split())}; give the unsplit full-int8 .tflite the stages "
                         "were split from") from exc
