"""numpy arrays <-> Tensor messages: raw bytes with name, dtype and shape, checked against the manifest.

Nothing is pickled and nothing is turned into floats: an int8 activation of
shape [1, 7, 7, 15] travels as its 735 bytes. ``decode`` refuses anything that
does not match the stage's tensor descriptions exactly (name, dtype, shape,
byte length) with a ``TensorMismatch`` naming the tensor and what is expected.
"""
import numpy as np

from deploy.net import stage_pb2
from deploy.core.tensors import numpy_dtype


class TensorMismatch(ValueError):
    """A request's tensors do not match what the stage takes; the message says which and why."""


def encode(arrays, names=None):
    """Tensor messages for {name: array} (all of them, or ``names`` in that order)."""
    tensors = []
    for name in names if names is not None else arrays:
        array = arrays[name]
        if not isinstance(array, np.ndarray) or not array.ndim:
            array = np.ascontiguousarray(array)     # (at least 1-d, as before)
        # tobytes() is C order whatever the layout: no contiguous copy of an array first
        tensors.append(stage_pb2.Tensor(name=name, dtype=array.dtype.name, shape=array.shape,
                                        data=array.tobytes()))
    return tensors


def describe(spec):
    return f"{spec['dtype']} {list(spec['shape'])}"


MAX_ERROR_CHARS = 1000    # gRPC refuses trailing metadata past 8-16 KB and answers RESOURCE_EXHAUSTED instead


def short(text, limit=MAX_ERROR_CHARS):
    """``text`` cut to ``limit`` characters, saying how much was left out (values a request sent are
    quoted at 80 characters, whole error texts at MAX_ERROR_CHARS)."""
    text = str(text)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text) - limit} more characters)"


def _shape(shape):
    dims = list(shape)
    return str(dims) if len(dims) <= 8 else f"{dims[:8]}... ({len(dims)} dimensions)"


class Expected:
    """The checks of ``decode`` for one list of specs, worked out once (a stage checks every request).

    Each numpy call costs tens of microseconds on a core that was idle between
    requests, so sizes, dtypes and shapes are not recomputed per request."""

    def __init__(self, specs):
        self.specs = {spec["name"]: spec for spec in specs}
        self._checks = {}
        for name, spec in self.specs.items():
            dtype = numpy_dtype(spec["dtype"])
            shape = [int(s) for s in spec["shape"]]
            size = dtype.itemsize
            for dim in shape:
                size *= dim
            self._checks[name] = (dtype, shape, size)

    def decode(self, tensors, where):
        """{name: array} from Tensor messages; see ``decode``."""
        expected = self.specs
        if not tensors:
            raise TensorMismatch(f"{where}: the request carries no tensors; expected "
                                 + "; ".join(f"'{n}' ({describe(s)})" for n, s in expected.items()))
        arrays = {}
        for tensor in tensors:
            name = tensor.name
            check = self._checks.get(name)
            if check is None:
                raise TensorMismatch(f"{where}: unexpected tensor '{short(name, 80)}'; this stage takes "
                                     + ", ".join(f"'{n}'" for n in expected))
            if name in arrays:
                raise TensorMismatch(f"{where}: tensor '{short(name, 80)}' is sent twice")
            arrays[name] = _array(tensor, *check, where)
        if len(arrays) != len(expected):
            missing = [name for name in expected if name not in arrays]
            raise TensorMismatch(f"{where}: tensor '{missing[0]}' ({describe(expected[missing[0]])}) is missing; "
                                 f"given: {', '.join(repr(n) for n in arrays)}")
        return arrays


def decode(tensors, specs, where):
    """{name: array} from Tensor messages, which must be exactly the described tensors.

    Args:
      tensors: repeated Tensor of a request or reply.
      specs: manifest tensor descriptions (name, shape, dtype) expected, in any order.
      where: who checks, for the message (e.g. "stage 1").
    Raises:
      TensorMismatch: a tensor is missing, unexpected, repeated, or has another
        dtype, shape or byte length than described.
    """
    return Expected(specs).decode(tensors, where)


def _array(tensor, dtype, shape, size, where):
    if tensor.dtype != dtype.name:
        raise TensorMismatch(f"{where}: tensor '{tensor.name}' has dtype '{short(tensor.dtype, 80)}', expected "
                             f"'{dtype.name}' (quantize with the tensor's scale and zero point first)")
    if tensor.shape != shape:
        raise TensorMismatch(f"{where}: tensor '{tensor.name}' has shape {_shape(tensor.shape)}, expected {shape}")
    data = tensor.data
    if len(data) != size:
        raise TensorMismatch(f"{where}: tensor '{tensor.name}' carries {len(data)} bytes, expected "
                             f"{size} ({dtype.name} {shape}); the data was truncated or padded")
    return np.frombuffer(data, dtype=dtype).reshape(shape)
