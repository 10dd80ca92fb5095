"""Turns one compiler invocation into a verdict and a manifest record.

Shared by every way ``python -m compile`` calls the compiler (per stage,
co-compiled, ``--num_segments``): the failure checks, the hints that name the
fix, and the summary kept per compiled model. Standard library only.
"""
import dataclasses
import os
import pathlib

from compile.compiler import run_compiler, tail
from compile.compiler_log import format_size, parse_compiler_output

RECORD_KEYS = ("compiler_version", "compile_time_ms", "on_chip_memory_bytes",
               "on_chip_remaining_bytes", "off_chip_memory_bytes", "edgetpu_subgraphs",
               "total_ops", "ops_mapped", "ops_on_cpu", "operations")

_ROUTINE = ("Edge TPU Compiler version", "Started a compilation timeout timer",
            "Compilation child process completed", "Searching for valid delegate",
            "Try to compile segment")


@dataclasses.dataclass(frozen=True)
class Call:
    """How this run calls the compiler: in ``run_dir``, the binary at ``compiler`` with ``options``
    (compile_options), ``timeout`` seconds per compilation, output into ``run_dir / out_name``."""
    run_dir: pathlib.Path
    compiler: str
    options: list
    timeout: float
    out_name: str

    @property
    def out_dir(self):
        return self.run_dir / self.out_name


def invoke(call, models, log_name, timeout=None):
    """Runs the compiler on ``models`` (paths relative to the run folder) and keeps its output.

    The hard limit is a little past ``timeout`` (default: the call's, the compiler's own
    --timeout_sec), so it can stop itself first. Returns (CompilerRun, logs) where logs holds
    the stdout and stderr file paths relative to the run folder (stderr None when empty).
    """
    timeout = call.timeout if timeout is None else timeout
    stdout_file = call.out_dir / f"{log_name}_compiler_stdout.txt"
    stderr_file = call.out_dir / f"{log_name}_compiler_stderr.txt"
    for stale in (stdout_file, stderr_file):
        stale.unlink(missing_ok=True)
    run = run_compiler(call.compiler, [*call.options, *models], cwd=call.run_dir,
                       timeout=timeout + max(2.0, 0.1 * timeout))
    stdout_file.write_text(run.stdout)
    if run.stderr:
        stderr_file.write_text(run.stderr)
    return run, {"stdout": rel(call.run_dir, stdout_file),
                 "stderr": rel(call.run_dir, stderr_file) if run.stderr else None}


def failure(run, succeeded, where, run_dir, logs, timeout):
    """Why an invocation failed, as one message naming ``where`` and the fix; None if it did not."""
    output = message(run.stdout + "\n" + run.stderr)
    if run.timed_out:
        return (f"edgetpu_compiler did not finish {where} within {timeout:g} s and was stopped. "
                f"Its output so far: {output or '(none)'}. Raise --timeout, or make the stage "
                "smaller")
    if run.returncode == 0 and succeeded is not False:
        return None
    if "not quantized" in output:
        hint = ("the model is not fully integer-quantized (float32 reaches an op other than "
                f"QUANTIZE/DEQUANTIZE): re-run `python -m quantize --run {run_dir}`")
    elif "Didn't find op for builtin opcode" in output or "could not be parsed" in output:
        hint = ("an op version is newer than compiler 16.0 knows: run `python -m compile check "
                f"{run_dir}` to see which, and convert with an older TensorFlow or lower the "
                "version with compile.preflight.rewrite_op_versions where that is safe")
    elif "dynamic-sized tensors" in output:
        hint = "give the model static tensor sizes (batch 1) when converting it"
    else:
        hint = f"see {logs['stdout']}, and `python -m compile check {run_dir}`"
    return (f"edgetpu_compiler failed on {where} with exit status {run.returncode}: "
            f"{output or '(no output)'}. Fix: {hint}")


def record(run_dir, report, op_log, logs):
    """The manifest's compile summary for one compiled model.

    Fills the operation table from the ``_edgetpu.log`` when stdout has none.
    """
    if not report["operations"] and op_log.is_file():
        from_log = parse_compiler_output(op_log.read_text(errors="replace"))
        for key in ("operations", "ops_mapped", "ops_on_cpu"):
            report[key] = from_log[key]
    return {"status": "compiled", **{key: report[key] for key in RECORD_KEYS},
            "log": rel(run_dir, op_log) if op_log.is_file() else None, **logs}


def refine_estimate(stage):
    """Redoes a compiled stage's Edge TPU estimate with the parameter bytes the compiler says it streams."""
    off_chip = (stage.get("compile") or {}).get("off_chip_memory_bytes")
    if off_chip is not None and stage.get("edgetpu_estimate"):
        from tflitegraph.edgetpu_latency import with_compiler_figures   # numpy: not for compile alone
        stage["edgetpu_estimate"] = with_compiler_figures(stage["edgetpu_estimate"], off_chip)


def summary_line(name, info, compiled_path):
    """One progress line about a compiled model."""
    mapped, total = info["ops_mapped"], info["total_ops"]
    ops = f"{mapped}/{total} ops on the Edge TPU" if mapped is not None else "op mapping unknown"
    if info["ops_on_cpu"]:
        ops += f", {info['ops_on_cpu']} on the CPU"
    memory = ", ".join(
        f"{label} {format_size(info[key])}" for label, key in (
            ("on-chip", "on_chip_memory_bytes"), ("off-chip", "off_chip_memory_bytes"))
        if info[key] is not None)
    return f"{name}: {ops}; {memory} -> {compiled_path}"


def message(output):
    """The compiler's own explanation: its output without the lines every run prints."""
    lines = [line for line in output.splitlines() if not line.strip().startswith(_ROUTINE)]
    return tail("\n".join(lines)).rstrip(".") or tail(output).rstrip(".")


def rel(run_dir, path):
    return os.path.relpath(path, run_dir)
