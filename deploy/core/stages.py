"""Load the stages of a run folder, each on an Edge TPU or on the CPU, and say why.

A stage runs on an Edge TPU when it has a compiled file, a TPU is assigned to
it, and the delegate loads; otherwise it runs its own int8 file on the CPU and
the reason is kept (``placement``/``reason``), so the user sees where each
stage ran and what to change.
"""
import dataclasses

import runfolder
from deploy.core import edgetpu
from deploy.core.devices import assign_devices, parse_devices  # noqa: F401  (parse_devices: public here too)
from deploy.core.runtime import load_runtime, make_interpreter
from deploy.core.tensors import describe_details


class StageError(runfolder.ManifestError):
    """A stage cannot be loaded as the manifest describes it."""


@dataclasses.dataclass
class LoadedStage:
    index: int
    name: str
    path: str              # the file actually loaded
    inputs: list           # tensor descriptions from the manifest
    outputs: list
    placement: str         # "cpu" or "edgetpu:<device>"
    reason: str            # why it runs there
    interpreter: object
    cpu_path: str = None   # the stage's int8 CPU file
    fallback: object = None   # for an Edge TPU stage with --fallback cpu: makes its CPU interpreter
    invoke_timeout: float = None   # seconds an Edge TPU invoke may take (deploy.core.fallback); None: no limit


DEFAULT_INVOKE_TIMEOUT = 10.0
"""Seconds an Edge TPU invoke may take before its device counts as failed: well above the first invoke of
a model that streams its parameters over USB 2 (tens of MB at ~40 MB/s), far below "hung"."""


def load_stages(run_dir, manifest, devices=None, num_threads=None, tpus=None, xnnpack=True, fallback=False,
                invoke_timeout=DEFAULT_INVOKE_TIMEOUT):
    """Loads every stage listed in the manifest, checking each file's sha256.

    Args:
      run_dir: the run folder.
      manifest: its manifest (``runfolder.load``).
      devices: None for automatic (compiled stages take the TPUs found in
        turn), or a comma list as for ``deploy.core.devices.parse_devices``.
      num_threads: CPU threads per interpreter (None: the runtime's default).
      tpus: Edge TPUs to use (default: ``edgetpu.list_edge_tpus()``).
      xnnpack: let the runtime apply XNNPACK to CPU stages (see ``make_interpreter``).
      fallback: an Edge TPU stage whose TPU fails moves to its CPU file (``deploy.core.fallback``).
      invoke_timeout: seconds an Edge TPU stage's invoke may take before its TPU counts as failed
        (0 or None: wait for ever).
    Returns:
      A list of LoadedStage.
    """
    stages = runfolder.require(manifest, "stages", run_dir, "deploy")
    runtime = load_runtime()
    if tpus is None:
        tpus = edgetpu.list_edge_tpus(pycoral=runtime.pycoral)
    assigned = assign_devices([bool(e.get("compiled")) for e in stages], tpus, devices)
    delegates = edgetpu.delegate_cache(runtime)
    compile_info = manifest.get("compile") or {}
    on_cpu = "assigned to the CPU by --devices" if devices else "no Edge TPU found"
    loaded = []
    for entry, (device, note) in zip(stages, assigned):
        what = f"stage {entry['index']} file"
        cpu_path = runfolder.verify_file(run_dir, entry["model"], what)
        placement, reason, interpreter, path = "cpu", None, None, cpu_path
        compiled = entry.get("compiled")
        if not compiled:
            own = (entry.get("compile") or {}).get("reason")
            reason = (own or _not_compiled_reason(compile_info)) + (
                "; " + on_cpu if device == "cpu" and (devices or not tpus) else "")
        elif device == "cpu":
            reason = note or on_cpu
        else:
            compiled_path = runfolder.verify_file(run_dir, compiled, f"compiled stage {entry['index']} file")
            try:
                delegate = delegates.get(device)
                interpreter = make_interpreter(compiled_path, delegates=[delegate], num_threads=num_threads)
                placement, reason, path = f"edgetpu:{device}", "compiled stage on the Edge TPU", compiled_path
            except edgetpu.DelegateError as exc:
                reason = exc.reason
        if interpreter is None:
            interpreter = _cpu_interpreter(cpu_path, what, num_threads, xnnpack, run_dir)
        check_io(interpreter, entry, path, run_dir)
        stage = LoadedStage(entry["index"], entry.get("name", f"stage_{entry['index']}"), str(path),
                            entry["inputs"], entry["outputs"], placement, reason, interpreter, str(cpu_path))
        if placement != "cpu":
            stage.invoke_timeout = invoke_timeout or None
        if fallback and placement != "cpu":
            stage.fallback = _cpu_loader(cpu_path, what, num_threads, xnnpack, run_dir, entry)
        loaded.append(stage)
    return loaded


def check_io(interpreter, entry, path, run_dir="the run folder"):
    """The stage file's real inputs and outputs must be the manifest entry's: names, shapes, dtypes,
    scales and zero points. A manifest edited by hand (or a file swapped) is refused at load time
    with the field that differs, instead of failing every request later.

    Raises:
      StageError: naming the field, the file and the fix.
    """
    where = f"stages[{entry['index']}]"
    for side, details in (("inputs", interpreter.get_input_details()), ("outputs", interpreter.get_output_details())):
        real = {t["name"]: t for t in describe_details(details)}
        if not entry.get(side):
            raise StageError(f"{where} in {run_dir}/manifest.json lists no {side} for {path}; re-run "
                             f"`{runfolder.restage_command(run_dir)}` to write the stage entries again")
        listed = [t["name"] for t in entry[side]]
        if sorted(listed) != sorted(real):
            _differs(f"{where}.{side} lists {_names(listed)}", f"the file has {_names(list(real))}", path, run_dir)
        for k, tensor in enumerate(entry[side]):
            found, field = real[tensor["name"]], f"{where}.{side}[{k}]"
            for key, same in (("shape", lambda a, b: list(a) == b), ("dtype", str.__eq__), ("scale", _close),
                              ("zero_point", lambda a, b: int(a) == b)):
                listed_value = _single(tensor.get(key)) if key in ("scale", "zero_point") else tensor[key]
                if listed_value is not None and not same(listed_value, found[key]):
                    shown = list(tensor[key]) if key == "shape" else tensor[key]
                    _differs(f"{field}.{key} is {shown}", f"the file has {found[key]}", path, run_dir)


def _differs(listed, real, path, run_dir):
    raise StageError(f"the manifest does not match stage file {path}: {listed}, {real}. Restore "
                     f"{run_dir}/manifest.json, or re-run `{runfolder.restage_command(run_dir)}` to write both again")


def _names(names):
    shown = ", ".join(repr(n[:80]) for n in names[:4])
    return f"[{shown}{', ...' if len(names) > 4 else ''}]"


def _single(value):
    """The one scale or zero point a tensor has (an empty list: a float tensor, 0); None for per-channel."""
    if isinstance(value, list):
        return 0 if not value else value[0] if len(value) == 1 else None
    return value


def _close(a, b):
    return abs(float(a) - float(b)) <= 1e-6 * max(abs(float(a)), abs(float(b)), 1e-30)


def _not_compiled_reason(compile_info):
    status = compile_info.get("status", "not run")
    return {"compiler-missing": "not compiled: edgetpu_compiler was not found",
            "not run": "not compiled: `python -m compile` was not run"}.get(
                status, f"not compiled (compile status: {status})")


def _cpu_loader(path, what, num_threads, xnnpack, run_dir, entry):
    def load():
        interpreter = _cpu_interpreter(path, what, num_threads, xnnpack, run_dir)
        check_io(interpreter, entry, path, run_dir)
        return interpreter
    return load


def _cpu_interpreter(path, what, num_threads, xnnpack, run_dir):
    if edgetpu.is_compiled_model(path):
        raise StageError(f"{what} {path} is compiled for the Edge TPU (it holds edgetpu-custom-op), "
                         f"but no Edge TPU is in use; re-run `{runfolder.restage_command(run_dir)}` to restore the CPU stage")
    try:
        return make_interpreter(path, num_threads=num_threads, xnnpack=xnnpack)
    except (ValueError, RuntimeError) as exc:
        raise StageError(f"{what} {path} cannot be loaded by the tflite runtime: {str(exc).strip()}; "
                         f"re-run `{runfolder.restage_command(run_dir)}` to rewrite it") from exc
