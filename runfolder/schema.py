"""The shape of the manifest sections later steps read, checked whenever a manifest is loaded.

A hand-edited or damaged manifest then fails in one line naming the field (``stages[0].inputs``
is null, expected a list), not with a TypeError deep inside a server. Standard library only
(the deploy side runs on a Pi with numpy, pillow and a tflite runtime), so this is a small
structural check rather than a JSON Schema validator: keys ending in ``?`` may be missing;
other keys in the manifest are allowed and left alone.
"""
import numbers

DTYPES = ("uint8", "int8", "int16", "int32", "int64", "float16", "float32", "bool")


class Nullable:
    def __init__(self, kind):
        self.kind = kind


class OneOf:
    def __init__(self, *values):
        self.values = values


class AnyOf:
    def __init__(self, *kinds):
        self.kinds = kinds


FILE = {"path": str, "sha256?": str}
# One scale and zero point, or one per channel (an empty list: a float tensor).
TENSOR = {"name": str, "shape": [int], "dtype": OneOf(*DTYPES), "scale?": Nullable(AnyOf(float, [float])),
          "zero_point?": Nullable(AnyOf(int, [int]))}
# inputs/outputs: quantize writes them; deploy refuses a stage without them (deploy.core.stages.check_io).
STAGE = {"index": int, "model": FILE, "inputs?": [TENSOR], "outputs?": [TENSOR], "compiled?": Nullable(FILE),
         "name?": str}
# How an image becomes the model input: datasets.InputSpec and the input contract (quantize.contract).
RESIZE = OneOf("bilinear", "nearest", "bicubic", "lanczos", "box")
COLOR_ORDER = OneOf("RGB", "BGR")
MANIFEST = {
    "dataset?": Nullable({"input_spec?": Nullable({"height": int, "width": int, "channels": int,
                                                   "resize_method?": RESIZE, "color_order?": COLOR_ORDER}),
                          "class_names?": Nullable([str]), "test_set?": Nullable(FILE)}),
    "quantization?": Nullable({"int8_model?": Nullable(FILE)}),
    "split?": Nullable({"model_inputs?": [TENSOR], "model_outputs?": [TENSOR]}),
    "stages?": Nullable([STAGE]),
    "input?": Nullable({"normalization?": Nullable({"mean": float, "std": float}), "resize_method?": RESIZE,
                        "color_order?": COLOR_ORDER}),
}


def problems(value, schema=None, where=""):
    """Every place where ``value`` does not have the shape ``schema`` (default: the manifest's)."""
    schema = MANIFEST if schema is None else schema
    if isinstance(schema, Nullable):
        return [] if value is None else problems(value, schema.kind, where)
    if isinstance(schema, AnyOf):
        found = [problems(value, kind, where) for kind in schema.kinds]
        return [] if any(not f for f in found) else found[0]
    if isinstance(schema, OneOf):
        return [] if value in schema.values else \
            [f"{where} is {_show(value)}, expected one of {', '.join(map(str, schema.values))}"]
    if isinstance(schema, dict):
        if not isinstance(value, dict):
            return [f"{where or 'the manifest'} is {_show(value)}, expected an object"]
        found = []
        for key, kind in schema.items():
            name, optional = key.rstrip("?"), key.endswith("?")
            path = f"{where}.{name}" if where else name
            if name not in value:
                if not optional:
                    found.append(f"{path} is missing")
                continue
            found += problems(value[name], kind, path)
        return found
    if isinstance(schema, list):
        if not isinstance(value, list):
            return [f"{where} is {_show(value)}, expected a list"]
        return [p for k, item in enumerate(value) for p in problems(item, schema[0], f"{where}[{k}]")]
    if schema is float:
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    elif schema is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, schema)
    return [] if ok else [f"{where} is {_show(value)}, expected {'a number' if schema is float else schema.__name__}"]


def stage_index_problems(manifest):
    """Stage entries must be numbered 0, 1, ... in order (files and servers are found by that number)."""
    stages = manifest.get("stages") or []
    return [f"stages[{k}].index is {entry.get('index')!r}, expected {k}" for k, entry in enumerate(stages)
            if isinstance(entry, dict) and entry.get("index") != k]


def split_problems(manifest):
    """The split's model inputs and outputs must describe the same tensors as the stage entries do."""
    split, stages = manifest.get("split") or {}, manifest.get("stages") or []
    described = {}
    for k, entry in enumerate(stages):
        for side in ("inputs", "outputs"):
            for j, tensor in enumerate(entry.get(side) or []):
                described.setdefault(tensor["name"], (f"stages[{k}].{side}[{j}]", tensor))
    found = []
    for side in ("model_inputs", "model_outputs"):
        for j, tensor in enumerate(split.get(side) or []):
            where, other = described.get(tensor["name"], (None, None))
            for field in ("shape", "dtype", "scale", "zero_point") if other else ():
                if tensor.get(field) is not None and other.get(field) is not None and tensor[field] != other[field]:
                    found.append(f"split.{side}[{j}].{field} is {_show(tensor[field])} but {where}.{field} "
                                 f"is {_show(other[field])}")
    return found


def _show(value):
    text = "null" if value is None else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
