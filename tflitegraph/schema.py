"""Access to the TFLite flatbuffer schema, from whichever package ships it.

ai-edge-litert ships TensorFlow's ``flatbuffer_utils`` and generated schema;
TensorFlow does too. Only these two are tried, so splitting works in a
deploy-style environment with ai-edge-litert and no TensorFlow.
"""
import importlib


def _load():
    errors = []
    for package in ("ai_edge_litert", "tensorflow.lite"):
        try:
            utils = importlib.import_module(f"{package}.tools.flatbuffer_utils")
            schema = importlib.import_module(
                "ai_edge_litert.schema_py_generated" if package == "ai_edge_litert"
                else "tensorflow.lite.python.schema_py_generated")
            return utils, schema
        except ImportError as exc:
            errors.append(f"{package}: {exc}")
    raise ImportError(
        "reading .tflite files needs ai-edge-litert or tensorflow "
        f"(pip install ai-edge-litert); tried {'; '.join(errors)}")


flatbuffer_utils, schema = _load()

TENSOR_TYPE_NAMES = {
    value: name.lower() for name, value in vars(schema.TensorType).items()
    if not name.startswith("_") and isinstance(value, int)
}
BUILTIN_OP_NAMES = {
    value: name for name, value in vars(schema.BuiltinOperator).items()
    if not name.startswith("_") and isinstance(value, int)
}


FILE_IDENTIFIER = b"TFL3"


def read_model(path_or_bytes):
    """Reads a .tflite file (path or bytes) into the mutable ``ModelT`` object tree."""
    if isinstance(path_or_bytes, (bytes, bytearray)):
        data = bytearray(path_or_bytes)
    else:
        with open(path_or_bytes, "rb") as f:
            data = bytearray(f.read())
    if bytes(data[4:8]) != FILE_IDENTIFIER:   # the runtime refuses such a file: "not a valid Flatbuffer buffer"
        raise ValueError(f"its flatbuffer identifier is {bytes(data[4:8])!r}, not {FILE_IDENTIFIER!r}: not a TFLite "
                         "model (the TFLite runtime refuses it too)")
    return flatbuffer_utils.read_model_from_bytearray(data)


def model_to_bytes(model):
    """Serialises a ``ModelT`` back to .tflite bytes."""
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def op_name(model, operator):
    """Builtin op name (``CONV_2D``) or the custom code of a custom op."""
    code = model.operatorCodes[operator.opcodeIndex]
    builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
    if builtin == schema.BuiltinOperator.CUSTOM:
        custom = code.customCode
        return custom.decode() if isinstance(custom, bytes) else str(custom)
    return BUILTIN_OP_NAMES.get(builtin, f"BUILTIN_{builtin}")
