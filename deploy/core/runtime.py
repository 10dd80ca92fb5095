"""Find a tflite runtime and make interpreters with it.

Tried in this order, first found wins:
  1. real pycoral (``pycoral.utils.edgetpu``; the PyPI project named ``pycoral``
     is unrelated and is recognised by lacking that module): its
     ``list_edge_tpus`` and delegate loading, with the tflite_runtime it is built on,
  2. ai-edge-litert (``ai_edge_litert.interpreter``),
  3. tflite-runtime (``tflite_runtime.interpreter``),
  4. TensorFlow's ``tf.lite`` as a last resort, only if it happens to be
     installed. deploy/ never needs TensorFlow.
``CORAL_STAGES_RUNTIME`` (``ai_edge_litert``, ``tflite_runtime`` or ``tensorflow``)
forces one.
"""
import collections
import functools
import importlib
import os

from runfolder.native_logs import quiet_native_stderr
from runfolder.errors import CannotRunHere

Runtime = collections.namedtuple("Runtime", "name version interpreter_class load_delegate pycoral module")

_MODULES = (
    ("ai_edge_litert", "ai_edge_litert.interpreter"),
    ("tflite_runtime", "tflite_runtime.interpreter"),
    ("tensorflow", "tensorflow.lite"),
)


class RuntimeMissing(CannotRunHere, ImportError):
    """No tflite runtime is installed."""


def _version(package):
    from importlib import metadata
    dist = {"ai_edge_litert": "ai-edge-litert", "tflite_runtime": "tflite-runtime",
            "tensorflow": "tensorflow", "pycoral": "pycoral"}.get(package, package)
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:  # not installed as a distribution (e.g. a source build)
        return "unknown"


def _real_pycoral():
    """The pycoral.utils.edgetpu module of Google's pycoral, or None."""
    try:
        return importlib.import_module("pycoral.utils.edgetpu")
    except ImportError:
        return None


@functools.cache
def load_runtime(prefer=None):
    """Returns the Runtime to use (see module docstring for the order).

    Raises:
      RuntimeMissing: none is installed; says what to install.
    """
    prefer = prefer or os.environ.get("CORAL_STAGES_RUNTIME") or None
    tried = []
    candidates = [m for m in _MODULES if prefer in (None, m[0])]
    if prefer and not candidates:
        raise RuntimeMissing(
            f"unknown runtime '{prefer}'; choose one of {', '.join(m[0] for m in _MODULES)}")
    pycoral = _real_pycoral() if prefer is None else None
    if pycoral is not None:  # pycoral is built on tflite_runtime and its libedgetpu pairs with that
        candidates.sort(key=lambda m: m[0] != "tflite_runtime")
    for package, module_name in candidates:
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            tried.append(f"{package} ({exc})")
            continue
        return Runtime(package, _version(package), module.Interpreter,
                       getattr(module, "load_delegate", None) or module.experimental.load_delegate,
                       pycoral, module)
    raise RuntimeMissing(
        "no tflite runtime found: install one with `pip install ai-edge-litert` "
        f"(or tflite-runtime on older systems); tried {'; '.join(tried)}")


def _builtin_resolver(runtime):
    """The op resolver without default delegates (TFLite's reference-style built-in kernels)."""
    module = runtime.module
    resolver = getattr(module, "OpResolverType", None) or module.experimental.OpResolverType
    return resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES


def make_interpreter(model, num_threads=None, delegates=None, runtime=None, xnnpack=True):
    """A ready (tensors allocated) interpreter for a model path or model bytes.

    Args:
      xnnpack: let the runtime apply its default XNNPACK delegate (faster on
        the CPU). Its int8 kernels round differently from the built-in ones
        by a few steps, so results differ slightly between runtimes that do
        (ai-edge-litert) and do not (tflite-runtime 2.14) apply it.
    """
    runtime = runtime or load_runtime()
    kwargs = {"num_threads": num_threads} if num_threads else {}
    if not xnnpack:
        kwargs["experimental_op_resolver_type"] = _builtin_resolver(runtime)
    if delegates:
        kwargs["experimental_delegates"] = list(delegates)
    with quiet_native_stderr():   # "INFO: Created TensorFlow Lite XNNPACK delegate for CPU."
        if isinstance(model, (bytes, bytearray)):
            interpreter = runtime.interpreter_class(model_content=bytes(model), **kwargs)
        else:
            interpreter = runtime.interpreter_class(model_path=os.fspath(model), **kwargs)
        interpreter.allocate_tensors()
    return interpreter
