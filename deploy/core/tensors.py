"""Quantization arithmetic between float values and a tensor's integer type.

real = scale * (q - zero_point);  q = round(real / scale) + zero_point, clipped
to the integer type's range. Rounding is half away from zero, as TFLite's
reference kernels do; the clip happens in float64 before the cast so
out-of-range values saturate instead of wrapping around. And ``run_interpreter``: an interpreter's
inputs set and outputs read by tensor name.
"""
import weakref

import numpy as np

_DTYPES = {"uint8": np.uint8, "int8": np.int8, "int16": np.int16, "int32": np.int32,
           "float32": np.float32}


def numpy_dtype(name):
    """numpy dtype for a manifest dtype name such as ``uint8``."""
    try:
        return np.dtype(_DTYPES[name])
    except KeyError:
        raise ValueError(f"unsupported tensor dtype '{name}'; expected one of {sorted(_DTYPES)}") from None


def describe_details(details):
    """Manifest-style tensor descriptions (name, shape, dtype, scale, zero_point) from interpreter details."""
    described = []
    for d in details:
        scale, zero = d["quantization"]
        described.append({"name": d["name"], "shape": [int(s) for s in d["shape"]],
                          "dtype": np.dtype(d["dtype"]).name, "scale": float(scale), "zero_point": int(zero)})
    return described


def short_name(name, width=40):
    """A tensor's name as tables show it: the first of a converter's fused names (``a;b;c`` -> ``a``, the op's
    own output), cut from the left to fit. One rule for the plan, the summary and the report."""
    first = name.split(";")[0]
    return first if len(first) <= width else "..." + first[-(width - 3):]


def _params(detail):
    scale, zero = detail["scale"], detail["zero_point"]
    return float(np.asarray(scale).ravel()[0]), int(np.asarray(zero).ravel()[0])


def quantize(values, detail):
    """Float values to the integer type of ``detail`` (a manifest tensor description)."""
    dtype = numpy_dtype(detail["dtype"])
    if dtype.kind == "f":
        return np.asarray(values, dtype=dtype)
    scale, zero = _params(detail)
    if scale == 0:
        raise ValueError(f"tensor {detail['name']} has no quantization scale")
    info = np.iinfo(dtype)
    scaled = np.asarray(values, dtype=np.float64) / scale
    rounded = np.sign(scaled) * np.floor(np.abs(scaled) + 0.5) + zero
    return np.clip(rounded, info.min, info.max).astype(dtype)


def dequantize(values, detail):
    """Integer tensor values to float32 using the tensor's scale and zero point."""
    values = np.asarray(values)
    if values.dtype.kind == "f":
        return values.astype(np.float32)
    scale, zero = _params(detail)
    return ((values.astype(np.int32) - zero) * scale).astype(np.float32)


def softmax(logits):
    """Softmax over the last axis, stable for large logits."""
    shifted = logits - np.max(logits, axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / np.sum(exp, axis=-1, keepdims=True)


def holds_probabilities(detail):
    """True for an output quantized as TFLite quantizes a SOFTMAX's (scale 1/256, zero point 0 for uint8,
    -128 for int8): its values are probabilities already, and a second softmax would flatten them."""
    scale, zero = _params(detail)
    dtype = np.dtype(detail.get("dtype", "float32"))
    expected = {np.dtype(np.uint8): 0, np.dtype(np.int8): -128}.get(dtype)
    return expected is not None and abs(float(scale) - 1.0 / 256.0) < 1e-9 and zero == expected


def class_scores(values, detail, kind=None):
    """Scores that sum to one from a classifier's dequantized output: the values themselves when the
    model ends in a softmax (``kind`` "probabilities", or None and ``holds_probabilities``), else their
    softmax (``kind`` "logits")."""
    probabilities = kind == "probabilities" or (kind is None and holds_probabilities(detail))
    return np.asarray(values, dtype=np.float32) if probabilities else softmax(values)


_TENSORS = weakref.WeakKeyDictionary()   # interpreter -> ([(input index, name)], [(output index, name)])


def _tensors(interpreter):
    """An interpreter's input and output (index, name) pairs, read once: the details calls cost
    several microseconds each, which adds up at every stage of every sample."""
    try:
        return _TENSORS[interpreter]
    except KeyError:
        pairs = ([(d["index"], d["name"]) for d in interpreter.get_input_details()],
                 [(d["index"], d["name"]) for d in interpreter.get_output_details()])
        _TENSORS[interpreter] = pairs
        return pairs


def run_interpreter(interpreter, feeds):
    """Sets named inputs, invokes, returns {output name: array copy}."""
    inputs, outputs = _tensors(interpreter)
    for index, name in inputs:
        interpreter.set_tensor(index, feeds[name])
    interpreter.invoke()
    return {name: interpreter.get_tensor(index) for index, name in outputs}
