"""Finds and runs Coral's ``edgetpu_compiler`` binary.

The compiler is a closed-source x86-64 Linux program from Coral's apt
repository; this module only locates it, builds its command line and runs it
without a shell, with a hard time limit.
"""
import dataclasses
import os
import shutil
import signal
import subprocess
import time

from compile.compiler_log import parse_compiler_output
from runfolder.errors import UserError

COMPILER_NAME = "edgetpu_compiler"
WHERE_FROM = ("it comes from Coral's apt repository, package edgetpu-compiler, "
              "x86-64 Linux only; see https://coral.ai/docs/edgetpu/compiler/")
DEFAULT_TIMEOUT = 180.0   # seconds; the compiler's own default for --timeout_sec


class CompilerError(UserError):
    """The compiler could not be used, or it failed on a model."""


class CompilerMissing(CompilerError):
    """No ``edgetpu_compiler`` on PATH (the stages can still run on the CPU)."""


@dataclasses.dataclass
class CompilerRun:
    """What one compiler invocation did."""
    args: list
    returncode: int
    stdout: str
    stderr: str
    timed_out: bool
    seconds: float


def find_compiler(explicit=None):
    """Absolute path of the compiler to use.

    Args:
      explicit: a path (or command name) given by the user; None searches PATH.
    Raises:
      CompilerError: ``explicit`` is not an executable file.
      CompilerMissing: nothing was given and PATH has no edgetpu_compiler.
    """
    if explicit:
        found = shutil.which(explicit) if os.sep not in explicit else (
            explicit if os.path.isfile(explicit) and os.access(explicit, os.X_OK) else None)
        if not found:
            raise CompilerError(
                f"--compiler {explicit!r} is not an executable file; expected the path of "
                f"{COMPILER_NAME} ({WHERE_FROM}). Fix the path, or leave out --compiler "
                f"to use the {COMPILER_NAME} on PATH")
        return os.path.abspath(found)
    found = shutil.which(COMPILER_NAME)
    if not found:
        raise CompilerMissing(f"{COMPILER_NAME} was not found on PATH ({WHERE_FROM})")
    return os.path.abspath(found)


def compiler_version(path, timeout=60.0):
    """Version string printed by ``<path> --version``, e.g. "16.0.384591198"."""
    run = run_compiler(path, ["--version"], timeout=timeout)
    version = parse_compiler_output(run.stdout + "\n" + run.stderr)["compiler_version"]
    if run.timed_out or run.returncode != 0 or not version:
        what = (f"did not answer within {timeout:.0f} s" if run.timed_out
                else f"exited with status {run.returncode}" if run.returncode
                else "did not print 'Edge TPU Compiler version ...'")
        raise CompilerError(
            f"{path} --version {what}; expected Coral's {COMPILER_NAME} ({WHERE_FROM}). "
            f"Its output: {tail(run.stdout + run.stderr) or '(none)'}. "
            "Point --compiler at the real compiler")
    return version


@dataclasses.dataclass(frozen=True)
class CompilerFlags:
    """What edgetpu_compiler is asked besides the models: seconds per compilation and the documented
    options (coral.ai/docs/edgetpu/compiler/, "Usage")."""
    timeout: float = DEFAULT_TIMEOUT
    min_runtime_version: int = None
    search_delegate: bool = False
    delegate_search_step: int = None
    num_segments: int = None
    enable_multiple_subgraphs: bool = False


def compile_options(out_dir, flags=CompilerFlags()):
    """Compiler options (without the models), as the long flags of compiler 16.0.

    ``--show_operations`` makes stdout carry the operation table we record.
    The short forms differ from what one might guess (coral.ai/docs/edgetpu/
    compiler/): -a is --enable_multiple_subgraphs, -d --search_delegate, -k
    --delegate_search_step, -t --timeout_sec, -n --num_segments, -m
    --min_runtime_version; long flags are used so the command reads plainly.

    Raises:
      ValueError: an option is given without the one it needs, or out of range.
    """
    f = flags
    options = ["--show_operations", "--out_dir", str(out_dir),
               "--timeout_sec", str(int(max(1, round(f.timeout))))]
    if f.min_runtime_version is not None:
        options += ["--min_runtime_version", str(int(f.min_runtime_version))]
    if f.search_delegate:
        options.append("--search_delegate")
        if f.delegate_search_step is not None:
            options += ["--delegate_search_step", str(int(f.delegate_search_step))]
    elif f.delegate_search_step is not None:
        raise ValueError(
            f"delegate_search_step={f.delegate_search_step} was given without search_delegate; "
            "the compiler only uses the step when searching for a delegate: "
            "add --search-delegate or drop --delegate-search-step")
    if f.enable_multiple_subgraphs:
        options.append("--enable_multiple_subgraphs")
    if f.num_segments is not None:
        if int(f.num_segments) < 2:
            raise ValueError(f"num_segments={f.num_segments}: the compiler splits a model into 2 "
                             "or more segments; pass --num-segments 2 or more")
        options += ["--num_segments", str(int(f.num_segments))]
    return options


def run_compiler(path, args, cwd=None, timeout=DEFAULT_TIMEOUT):
    """Runs ``path args...`` (no shell) and returns a CompilerRun.

    The compiler forks a child to do the work, so it runs in its own process
    group and the whole group is killed when ``timeout`` seconds pass: nothing
    is left running and nothing hangs on a pipe a grandchild still holds.
    """
    command = [path, *args]
    start = time.monotonic()
    try:
        proc = subprocess.Popen(command, cwd=cwd, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                errors="replace", start_new_session=True)
    except OSError as exc:
        raise CompilerError(
            f"could not start {path} ({exc}); expected an executable {COMPILER_NAME} "
            f"({WHERE_FROM})") from exc
    timed_out = False
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        _kill_group(proc)
        try:
            stdout, stderr = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:   # a process outside the group holds the pipes
            stdout, stderr = "", ""
    except BaseException:
        _kill_group(proc)
        raise
    return CompilerRun(args=command, returncode=proc.returncode, stdout=stdout or "",
                       stderr=stderr or "", timed_out=timed_out,
                       seconds=time.monotonic() - start)


def _kill_group(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.kill()
    proc.wait()


def tail(text, lines=12):
    """The last non-empty lines of some output, joined with " | " (for one-line errors)."""
    kept = [line.strip() for line in text.splitlines() if line.strip()]
    return " | ".join(kept[-lines:])
