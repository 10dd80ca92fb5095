"""Edge TPU devices, compiled models and the Edge TPU delegate.

Device strings follow pycoral's ``make_interpreter``: ``usb:<N>``, ``pci:<N>``,
or ``:<N>`` (the N-th TPU of any kind). Devices come from real pycoral's
``list_edge_tpus()`` when it is installed, otherwise from sysfs: USB
Accelerators show up as ``1a6e:089a`` (before first use) or ``18d1:9302``
(after), PCIe/M.2 modules as ``/dev/apex_<N>``.
"""
import collections
import ctypes
import glob
import os
import pathlib
import platform
import threading

EdgeTpu = collections.namedtuple("EdgeTpu", "type path")

CUSTOM_OP = b"edgetpu-custom-op"
USB_IDS = {("1a6e", "089a"), ("18d1", "9302")}
_LIBRARY = {"Linux": "libedgetpu.so.1", "Darwin": "libedgetpu.1.dylib", "Windows": "edgetpu.dll"}


class DelegateError(OSError):
    """The Edge TPU delegate could not be loaded for a device. ``reason``: what failed, in a few words
    (the placement shown per stage); ``str()`` adds what to do."""

    def __init__(self, reason, fix):
        super().__init__(f"{reason}. {fix}")
        self.reason, self.fix = reason, fix


def library_name():
    """File name of libedgetpu on this operating system."""
    return _LIBRARY.get(platform.system(), "libedgetpu.so.1")


def list_edge_tpus(sysfs_root="/sys", dev_root="/dev", pycoral=None):
    """Edge TPUs attached to this machine, USB first, as EdgeTpu(type, path)."""
    if pycoral is not None:
        return [EdgeTpu(d["type"], d["path"]) for d in pycoral.list_edge_tpus()]
    found = []
    for device in sorted(glob.glob(os.path.join(sysfs_root, "bus/usb/devices/*"))):
        try:
            ids = (pathlib.Path(device, "idVendor").read_text().strip().lower(),
                   pathlib.Path(device, "idProduct").read_text().strip().lower())
        except OSError:
            continue
        if ids in USB_IDS:
            found.append(EdgeTpu("usb", device))
    for apex in sorted(glob.glob(os.path.join(dev_root, "apex_*"))):
        found.append(EdgeTpu("pci", apex))
    return found


def is_compiled_model(path_or_bytes):
    """True when the model contains the Edge TPU custom op (made by edgetpu_compiler)."""
    if isinstance(path_or_bytes, (bytes, bytearray)):
        return CUSTOM_OP in path_or_bytes
    with open(path_or_bytes, "rb") as f:
        return CUSTOM_OP in f.read()


def cpu_twin(compiled_path):
    """The uncompiled model next to ``X_edgetpu.tflite`` (``X.tflite``), or None."""
    path = pathlib.Path(compiled_path)
    if path.stem.endswith("_edgetpu"):
        twin = path.with_name(path.stem[: -len("_edgetpu")] + path.suffix)
        if twin.exists():
            return twin
    return None


class DelegateCache:
    """Loads the Edge TPU delegate once per device and hands out the same one.

    Two interpreters on one TPU must share a delegate: libedgetpu opens the
    device once.
    """

    def __init__(self, runtime, open_library=ctypes.CDLL):
        """Args: open_library: opens libedgetpu by name, raising OSError when it cannot (tests replace it)."""
        self._runtime = runtime
        self._open_library = open_library
        self._delegates = {}
        self._lock = threading.Lock()

    def get(self, device):
        """The delegate for ``device`` (e.g. ``usb:0``). Raises DelegateError."""
        with self._lock:
            return self._get(device)

    def _get(self, device):
        if device not in self._delegates:
            options = {"device": device} if device else {}
            try:
                if self._runtime.pycoral is not None:
                    self._delegates[device] = self._runtime.pycoral.load_edgetpu_delegate(options)
                else:
                    # Open the library first: when it is missing, ai-edge-litert's half-made Delegate
                    # object prints a traceback from its __del__; this way no such object is made.
                    self._open_library(library_name())
                    self._delegates[device] = self._runtime.load_delegate(library_name(), options)
            except (OSError, ValueError, RuntimeError) as exc:
                # Remembered, so later stages on this device do not retry a load that failed.
                self._delegates[device] = DelegateError(
                    f"cannot load the Edge TPU delegate {library_name()} for device '{device}': {exc}",
                    "Install libedgetpu1-std from Coral's apt repository and check the TPU is plugged in")
        delegate = self._delegates[device]
        if isinstance(delegate, DelegateError):
            raise delegate
        return delegate


_CACHES = {}
_CACHES_LOCK = threading.Lock()


def delegate_cache(runtime):
    """The process-wide DelegateCache of a runtime: every chain opened in this process shares it,
    so a TPU is opened once however many stages, chains or runners use it."""
    with _CACHES_LOCK:
        return _CACHES.setdefault(runtime.name, DelegateCache(runtime))
