"""numpy arrays <-> Tensor messages: raw bytes with name, dtype and shape, checked against the manifest.

Nothing is pickled and nothing is turned into floats: an int8 activation of
shape [1, 7, 7, 15] travels as its 735 bytes. ``decode`` refuses anything that
does not match the stage's tensor descriptions exactly (name, dtype, shape,
byte length) with a ``TensorMismatch`` naming the tensor and what is expected.
"""
import numpy as np

from deploy.net import stage_pb2
from deploy.tensors import numpy_dtype


class TensorMismatch(ValueError):
    """A request's tensors do not match what the stage takes; the message says which and why."""


def encode(arrays, names=None):
    """Tensor messages for {name: array} (all of them, or ``names`` in that order)."""
    tensors = []
    for name in names if names is not None else arrays:
        array = np.ascontiguousarray(arrays[name])
        tensors.append(stage_pb2.Tensor(name=name, dtype=array.dtype.name, shape=array.shape,
                                        data=array.tobytes()))
    return tensors


def describe(spec):
    return f"{spec['dtype']} {list(spec['shape'])}"


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
    expected = {spec["name"]: spec for spec in specs}
    if not tensors:
        raise TensorMismatch(f"{where}: the request carries no tensors; expected "
                             + "; ".join(f"'{n}' ({describe(s)})" for n, s in expected.items()))
    arrays = {}
    for tensor in tensors:
        spec = expected.get(tensor.name)
        if spec is None:
            raise TensorMismatch(f"{where}: unexpected tensor '{tensor.name}'; this stage takes "
                                 + ", ".join(f"'{n}'" for n in expected))
        if tensor.name in arrays:
            raise TensorMismatch(f"{where}: tensor '{tensor.name}' is sent twice")
        arrays[tensor.name] = _array(tensor, spec, where)
    missing = [name for name in expected if name not in arrays]
    if missing:
        raise TensorMismatch(f"{where}: tensor '{missing[0]}' ({describe(expected[missing[0]])}) is missing; "
                             f"given: {', '.join(repr(n) for n in arrays)}")
    return arrays


def _array(tensor, spec, where):
    dtype = numpy_dtype(spec["dtype"])
    shape = [int(s) for s in spec["shape"]]
    if tensor.dtype != dtype.name:
        raise TensorMismatch(f"{where}: tensor '{tensor.name}' has dtype '{tensor.dtype}', expected "
                             f"'{dtype.name}' (quantize with the tensor's scale and zero point first)")
    if list(tensor.shape) != shape:
        raise TensorMismatch(f"{where}: tensor '{tensor.name}' has shape {list(tensor.shape)}, expected {shape}")
    size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(tensor.data) != size:
        raise TensorMismatch(f"{where}: tensor '{tensor.name}' carries {len(tensor.data)} bytes, expected "
                             f"{size} ({dtype.name} {shape}); the data was truncated or padded")
    return np.frombuffer(tensor.data, dtype=dtype).reshape(shape)
