"""The contract of a model brought from elsewhere: how pixels become its input, what its output means,
what its classes are called. Recorded in the manifest (``input``, ``output``, ``labels``) by
``quantize split`` and read by every deploy path through ``datasets.preprocess.normalization_of``,
``output_kind_of`` and ``datasets.labels.labels_of``.

A full-int8 model's uint8 input says how it wants its pixels: scale 1/128 and zero point 128 (Coral's
MobileNets) is the raw pixels for a model trained on [-1, 1). Unless told otherwise (``--input-range``,
``--mean/--std``) that is taken as the contract, and deploy feeds the pixels with no arithmetic.
"""
from datasets.preprocess import raw_pixel_normalization
from runfolder.errors import UserError


class ContractError(UserError, ValueError):
    """The contract given on the command line does not hold together; the message says what to change."""


def input_from_model(tensor):
    """The ``input`` section read from the model's first input tensor, or None (a float input)."""
    found = raw_pixel_normalization(tensor)
    if found is None:
        return None
    mean, std = found
    return {"normalization": {"mean": mean, "std": std},
            "source": f"the model's input quantization ({tensor['dtype']}, scale {tensor['scale']:.6g}, zero point "
                      f"{tensor['zero_point']}): the {tensor['dtype']} input is the raw pixels"
                      + (" minus 128" if tensor["dtype"] == "int8" else "")}


def describe_contract(manifest):
    """Lines saying how the run's model takes pixels, what its scores are and what its classes are called."""
    first = manifest["stages"][0]["inputs"][0]
    last = (manifest.get("split") or {}).get("model_outputs") or manifest["stages"][-1]["outputs"]
    section = manifest.get("input") or {}
    norm = section.get("normalization")
    lines = [f"input: {first['dtype']} {'x'.join(str(n) for n in first['shape'][1:])}; "
             + (f"model input = (pixels - {norm['mean']:g}) / {norm['std']:g}, from {section.get('source')}"
                if norm else "no contract (float input): pixels scaled to [0, 1]; give --input-range if not")
             + f"; {section.get('color_order', 'RGB')}, other sizes resized {section.get('resize_method', 'bilinear')}"]
    output = manifest.get("output") or {}
    lines.append(f"output: {output.get('kind', 'logits')} ({output.get('source', 'not recorded')}); deploy shows "
                 + ("them as the model gives them" if output.get("kind") == "probabilities" else "their softmax"))
    labels = manifest.get("labels")
    classes = int(last[0]["shape"][-1]) if last and last[0]["shape"] else None
    if labels:
        count = len(labels["names"])
        lines.append(f"labels: {count} from {labels['source']}"
                     + ("" if classes in (None, count) else
                        f"; WARNING: the model has {classes} classes, so some are shown by number or the file "
                        "does not belong to this model"))
    else:
        lines.append("labels: none (classes are shown by number; give --labels FILE)")
    return "\n".join(lines)
