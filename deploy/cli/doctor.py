"""``python -m deploy doctor``: what this machine has for Edge TPUs, and the known-bad pairings.

Two halves, so the verdicts can be tested without the hardware:
  ``gather()`` looks at the machine and returns an ``Environment`` (plain data);
  ``diagnose(env)`` turns an Environment into ``Verdict``s, each with its fix.

Known-bad pairings checked (users lose days to these):
  * Google's libedgetpu 16.0 (Coral's apt package, 2021) crashes with
    tflite-runtime 2.12 and newer (google-coral/edgetpu#812);
  * community builds (e.g. feranick/libedgetpu, ``16.0tf2.17.1``) are built
    against one TensorFlow version and need the tflite runtime of that version;
  * Google's pycoral has wheels up to Python 3.9 only; the PyPI project named
    ``pycoral`` is unrelated;
  * tflite-runtime 2.14 and older were built against numpy 1.x and fail with numpy 2.
"""
import ctypes.util
import dataclasses
import glob
import os
import platform
import re
import sys

from deploy.cli.doctor_devices import device_verdicts, gather_devices
from deploy.core import edgetpu

OK, INFO, WARN, BAD = "ok", "info", "warning", "bad"

KNOWN_DIRS = ("/usr/lib", "/usr/lib64", "/usr/local/lib", "/usr/lib/x86_64-linux-gnu",
              "/usr/lib/aarch64-linux-gnu", "/usr/lib/arm-linux-gnueabihf", "/opt/homebrew/lib", "/lib")
PACKAGES = ("libedgetpu1-std", "libedgetpu1-max", "libedgetpu1-legacy-std", "libedgetpu1-legacy-max")
# feranick's first community builds carried no "tf" tag in their version.
_OLD_COMMUNITY = {"16.0pp3": "2.10.1", "16.0pp2": "2.9.3", "16.0-0ppa1": "2.8.4"}


@dataclasses.dataclass
class Library:
    """One libedgetpu found on disk."""
    path: str
    build_label: str = None       # "COMPILER=...,DATE=...,TIME=..." read from the file, when present
    package: str = None           # Debian package that installed it, e.g. libedgetpu1-std
    package_version: str = None   # e.g. "16.0" (Google) or "16.0tf2.17.1-1" (community)
    maintainer: str = None
    load_error: str = None        # why the dynamic loader refused it (a missing libusb, another CPU architecture)


@dataclasses.dataclass
class Environment:
    """Everything ``diagnose`` looks at; every field is plain data."""
    python: str                        # "3.11.9"
    machine: str                       # "x86_64", "aarch64", ...
    runtime: str = None                # "tflite_runtime", "ai_edge_litert", "tensorflow" or None
    runtime_version: str = None
    runtime_error: str = None          # why no runtime could be loaded
    numpy: str = None
    pycoral: str = None                # "real", "unrelated" or None
    pycoral_version: str = None
    libraries: list = dataclasses.field(default_factory=list)   # [Library]
    tpus: list = dataclasses.field(default_factory=list)        # [edgetpu.EdgeTpu]
    usb_corals: list = dataclasses.field(default_factory=list)  # [doctor_devices.UsbCoral]: link speed, access
    pci_corals: list = dataclasses.field(default_factory=list)  # [doctor_devices.PciCoral]: driver, /dev/apex_*
    packages: list = dataclasses.field(default_factory=list)    # installed libedgetpu packages (std or max)


Verdict = dataclasses.make_dataclass("Verdict", ["level", "message", ("fix", str, None)])


def _major_minor(version):
    found = re.match(r"(\d+)\.(\d+)", version or "")
    return (int(found.group(1)), int(found.group(2))) if found else None


def build_kind(library):
    """("google", None), ("community", "2.17.1"), or ("unknown", None) for a Library."""
    version = library.package_version or ""
    tagged = re.search(r"tf(\d+\.\d+(?:\.\d+)?)", version)
    if tagged:
        return "community", tagged.group(1)
    if version in _OLD_COMMUNITY:
        return "community", _OLD_COMMUNITY[version]
    if (library.maintainer or "").lower().find("coral") >= 0 or re.fullmatch(r"1[0-6]\.\d+(-\d+)?", version):
        return "google", None
    return "unknown", None


def describe_library(library):
    kind, tf = build_kind(library)
    what = {"google": f"Google's build {library.package_version}",
            "community": f"community build for TensorFlow {tf} ({library.package_version})",
            "unknown": "build unknown (not installed by a Debian package)"}[kind]
    label = f"; {library.build_label}" if library.build_label else ""
    return f"{library.path}: {what}{label}"


def diagnose(env):
    """Verdicts on an Environment, worst first.

    Returns:
      [Verdict(level, message, fix)], level one of "bad", "warning", "info", "ok".
    """
    verdicts = []
    add = verdicts.append
    py = _major_minor(env.python)
    rt = _major_minor(env.runtime_version)
    if env.runtime is None:
        add(Verdict(BAD, f"no tflite runtime: {env.runtime_error or 'none installed'}",
                    "pip install ai-edge-litert (or tflite-runtime on Python 3.11 and older)"))
    else:
        add(Verdict(OK, f"tflite runtime: {env.runtime} {env.runtime_version}"))
    if env.runtime == "tflite_runtime" and rt and rt <= (2, 14) and (_major_minor(env.numpy) or (0, 0)) >= (2, 0):
        add(Verdict(BAD, f"tflite-runtime {env.runtime_version} was built against numpy 1.x; "
                         f"numpy {env.numpy} is installed and the interpreter fails to import or crashes",
                    'pip install "numpy<2"'))
    if env.pycoral == "unrelated":
        add(Verdict(WARN, "the installed 'pycoral' is the unrelated PyPI project, not Google's Coral library",
                    "pip uninstall pycoral (deploy/ ignores it, but it hides a real pycoral)"))
    elif env.pycoral == "real" and py and py > (3, 9):
        add(Verdict(WARN, f"pycoral {env.pycoral_version} on Python {env.python}: Google's pycoral wheels stop "
                          "at Python 3.9, so this is a community build; it must match your libedgetpu and "
                          "tflite runtime",
                    "if it crashes, uninstall it: deploy/ runs without pycoral and "
                    "deploy.pipeline.pipelined_model_runner.PipelinedModelRunner replaces pycoral's pipeline"))
    elif env.pycoral is None and py and py > (3, 9):
        add(Verdict(INFO, f"no pycoral (Google's wheels stop at Python 3.9; this is {env.python}); "
                          "deploy/ does not need it",
                    "for pycoral's pipeline API use deploy.pipeline.pipelined_model_runner.PipelinedModelRunner"))
    if not env.libraries:
        level = BAD if env.tpus else INFO
        add(Verdict(level, "libedgetpu (the Edge TPU runtime, libedgetpu.so.1) was not found"
                    + ("; Edge TPUs are plugged in but cannot be used" if env.tpus else "; stages run on the CPU"),
                    "install libedgetpu1-std from Coral's apt repository, or a community build matching your "
                    "tflite runtime (github.com/feranick/libedgetpu/releases)"))
    for library in env.libraries:
        verdicts.extend(_library_verdicts(library, env, rt))
    if env.tpus:
        fresh = [t for t in env.tpus if t.type == "usb"]
        add(Verdict(OK, f"{len(env.tpus)} Edge TPU(s) found: "
                        + ", ".join(f"{t.type} {t.path}" for t in env.tpus)
                        + (" (a USB Accelerator shows 1a6e:089a until first used, then 18d1:9302)" if fresh else "")))
    else:
        add(Verdict(INFO, "no Edge TPU found (USB ids 1a6e:089a / 18d1:9302, or /dev/apex_*)",
                    "plug the USB Accelerator into a USB 3 port; on Linux check the udev rule from "
                    "libedgetpu1-std and that you are in the plugdev group; PCIe modules need gasket-dkms"))
    verdicts.extend(Verdict(*v) for v in device_verdicts(env.usb_corals, env.pci_corals, env.packages))
    order = {BAD: 0, WARN: 1, INFO: 2, OK: 3}
    return sorted(verdicts, key=lambda v: order[v.level])


def _library_verdicts(library, env, rt):
    kind, tf = build_kind(library)
    found = Verdict(OK, f"libedgetpu: {describe_library(library)}")
    if library.load_error:
        return [Verdict(BAD, f"libedgetpu {library.path} cannot be loaded: {library.load_error}",
                        "install what it needs (e.g. sudo apt-get install libusb-1.0-0) or the build for this "
                        f"machine's architecture ({env.machine}); then re-run python -m deploy doctor")]
    if env.runtime is None:
        return [found]
    if kind == "google" and _major_minor(library.package_version) == (16, 0) and (
            env.runtime == "ai_edge_litert" or (rt and rt >= (2, 12))):
        return [found, Verdict(
            BAD, f"Google's libedgetpu 16.0 crashes (segmentation fault) with {env.runtime} {env.runtime_version}: "
                 "it was built against TensorFlow 2.5 and breaks with tflite-runtime 2.12 and newer",
            "either pip install 'tflite-runtime<2.12' (e.g. 2.11.0, Python 3.11 and older), or replace "
            "libedgetpu with a community build for your runtime's TensorFlow version "
            "(github.com/feranick/libedgetpu/releases, e.g. 16.0tf2.14.1 for tflite-runtime 2.14)")]
    if kind == "community" and env.runtime == "tflite_runtime" and rt and _major_minor(tf) != rt:
        return [found, Verdict(
            BAD, f"libedgetpu was built for TensorFlow {tf}, but tflite-runtime {env.runtime_version} is in use; "
                 "community builds work only with the runtime of their own TensorFlow version",
            f"pip install tflite-runtime=={tf} (if a wheel exists for Python {env.python}), or install the "
            f"libedgetpu build for TensorFlow {env.runtime_version}")]
    if kind == "community" and env.runtime == "ai_edge_litert":
        return [found, Verdict(
            WARN, f"libedgetpu was built for TensorFlow {tf}; ai-edge-litert {env.runtime_version} follows its own "
                  "TensorFlow version, and a mismatch crashes when the delegate loads",
            f"if it crashes, use tflite-runtime=={tf} with this libedgetpu (CORAL_STAGES_RUNTIME=tflite_runtime)")]
    if kind == "unknown":
        return [found, Verdict(INFO, "libedgetpu's build could not be identified (no Debian package record); "
                                     "it must have been built for the TensorFlow version of your tflite runtime")]
    return [found]


# ---------------------------------------------------------------- looking at this machine

def search_dirs(environ=None, ld_conf="/etc/ld.so.conf"):
    """Folders the dynamic loader searches: LD_LIBRARY_PATH, ld.so.conf (and its includes), known dirs."""
    environ = os.environ if environ is None else environ
    dirs = [d for d in environ.get("LD_LIBRARY_PATH", "").split(os.pathsep) if d]
    pending, seen = [ld_conf], set()
    while pending:
        conf = pending.pop()
        if conf in seen or not os.path.isfile(conf):
            continue
        seen.add(conf)
        with open(conf, errors="replace") as f:
            for line in f:
                line = line.split("#")[0].strip()
                if line.startswith("include "):
                    pending.extend(sorted(glob.glob(line.split(None, 1)[1])))
                elif line:
                    dirs.append(line)
    dirs.extend(KNOWN_DIRS)
    return list(dict.fromkeys(dirs))


def find_libraries(dirs, name=None):
    """Real paths of libedgetpu files in ``dirs``, plus what ctypes.util.find_library reports."""
    name = name or edgetpu.library_name()
    found = []
    for folder in dirs:
        path = os.path.join(folder, name)
        if os.path.exists(path):
            found.append(os.path.realpath(path))
    by_ctypes = ctypes.util.find_library("edgetpu")
    if by_ctypes and os.path.isabs(by_ctypes) and os.path.exists(by_ctypes):
        found.append(os.path.realpath(by_ctypes))
    return list(dict.fromkeys(found))


def read_build_label(path, limit=64 << 20):
    """The "COMPILER=...,DATE=...,TIME=..." build label compiled into libedgetpu, or None."""
    try:
        with open(path, "rb") as f:
            data = f.read(limit)
    except OSError:
        return None
    found = re.search(rb"COMPILER=[\x20-\x7e]{1,80}?,DATE=[\x20-\x7e]{1,40}?,TIME=[\x20-\x7e]{1,20}", data)
    return found.group(0).decode("ascii") if found else None


def dpkg_packages(dpkg_dir="/var/lib/dpkg"):
    """{package: (version, maintainer, files)} of installed libedgetpu packages, from dpkg's records."""
    try:
        with open(os.path.join(dpkg_dir, "status"), errors="replace") as f:
            text = f.read()
    except OSError:
        return {}
    packages = {}
    for block in text.split("\n\n"):
        fields = dict(re.findall(r"(?m)^([A-Za-z-]+): (.*)$", block))
        name = fields.get("Package")
        if name in PACKAGES and "installed" in fields.get("Status", ""):
            files = set()
            for listing in glob.glob(os.path.join(dpkg_dir, "info", f"{name}*.list")):
                with open(listing, errors="replace") as f:
                    files.update(line.strip() for line in f)
            packages[name] = (fields.get("Version"), fields.get("Maintainer"), files)
    return packages


def gather(sysfs_root="/sys", dev_root="/dev", environ=None, ld_conf="/etc/ld.so.conf", dpkg_dir="/var/lib/dpkg"):
    """The Environment of this machine (imports the runtime; never loads the delegate)."""
    from deploy.core.runtime import RuntimeMissing, _real_pycoral, _version, load_runtime
    env = Environment(python=platform.python_version(), machine=platform.machine())
    try:
        import numpy
        env.numpy = numpy.__version__
    except ImportError:
        pass
    try:
        runtime = load_runtime()
        env.runtime, env.runtime_version = runtime.name, runtime.version
    except (RuntimeMissing, ImportError) as exc:
        runtime, env.runtime_error = None, str(exc)
    if _real_pycoral() is not None:
        env.pycoral, env.pycoral_version = "real", _version("pycoral")
    elif _version("pycoral") != "unknown":
        env.pycoral = "unrelated"
    packages = dpkg_packages(dpkg_dir)
    env.packages = sorted(packages)
    env.usb_corals, env.pci_corals = gather_devices(sysfs_root, dev_root)
    for path in find_libraries(search_dirs(environ, ld_conf)):
        library = Library(path, read_build_label(path), load_error=_load_error(path))
        for name, (version, maintainer, files) in packages.items():
            if path in files:
                library.package, library.package_version, library.maintainer = name, version, maintainer
        env.libraries.append(library)
    env.tpus = edgetpu.list_edge_tpus(sysfs_root, dev_root, runtime.pycoral if runtime else None)
    return env


def _load_error(path):
    """None when the dynamic loader can open the library (this does not touch any TPU), else its error."""
    try:
        ctypes.CDLL(path)
    except OSError as exc:
        return str(exc)
    return None


def report_lines(env, verdicts):
    """The doctor's report for people."""
    lines = [f"Python {env.python} on {sys.platform} {env.machine}; numpy {env.numpy or 'missing'}",
             f"runtime: {env.runtime or 'none'} {env.runtime_version or ''}".rstrip(),
             f"pycoral: {env.pycoral or 'not installed'}",
             "libedgetpu: " + ("; ".join(describe_library(lib) for lib in env.libraries) or "not found"),
             f"Edge TPUs: {len(env.tpus)}", ""]
    marks = {BAD: "BAD ", WARN: "WARN", INFO: "info", OK: "ok  "}
    for verdict in verdicts:
        lines.append(f"[{marks[verdict.level]}] {verdict.message}")
        if verdict.fix and verdict.level != OK:
            lines.append(f"       fix: {verdict.fix}")
    return lines


def parser():
    from runfolder import cli
    return cli.ArgumentParser(
        prog="python -m deploy doctor",
        description="Python, tflite runtime, libedgetpu (where, which build), Edge TPUs, and verdicts on "
                    "known-bad pairings with their fixes. Exit 1 when one is found.",
        epilog="example:\n  python -m deploy doctor")


def run(args):
    env = gather()
    verdicts = diagnose(env)
    for line in report_lines(env, verdicts):
        print(line)
    return 1 if any(v.level == BAD for v in verdicts) else 0
