"""What happens when an Edge TPU fails under a running stage (a USB transfer error, a device unplugged).

Every stage runs through ``run_stage``. On the CPU it is one invoke. On an Edge TPU, an invoke that
raises ends that request with ``DeviceFailed``, naming the stage, the device and what to do, and the
process stays up; or, for a stage loaded with ``fallback`` (``--fallback cpu``), the stage moves to its
int8 CPU file once, says so once, and runs that request and the later ones there. The two files compute
the same model, so results stay those of the int8 model (to the bit only where the TPU's already were).

An invoke that never returns (a device that stops answering without an error) is the same failure
once ``invoke_timeout`` seconds pass: an Edge TPU stage invokes on a daemon thread of its own and the
request waits that long at most. A stuck invoke cannot be stopped, so its thread and interpreter are
abandoned: without a fallback the stage then fails every request at once, saying why.
"""
import queue
import sys
import threading

from deploy.core.stages import StageError
from deploy.core.tensors import run_interpreter

_LOCK = threading.Lock()


class InvokeTimeout(TimeoutError):
    """An Edge TPU invoke did not return in time."""


class _Invoker:
    """A daemon thread that runs one stage's invokes, so the caller can stop waiting for one."""

    def __init__(self, name):
        self._jobs = queue.SimpleQueue()
        self._lock = threading.Lock()   # one request at a time, as an interpreter allows
        threading.Thread(target=self._serve, name=name, daemon=True).start()

    def _serve(self):
        while True:
            interpreter, values, done, box = self._jobs.get()
            try:
                box["outputs"] = run_interpreter(interpreter, values)
            except BaseException as exc:   # handed to the waiting request
                box["error"] = exc
            done.set()

    def run(self, interpreter, values, timeout):
        with self._lock:
            done, box = threading.Event(), {}
            self._jobs.put((interpreter, values, done, box))
            if not done.wait(timeout):
                raise InvokeTimeout(f"invoke did not return within {timeout:g} s (--invoke-timeout); the device "
                                    "stopped answering")
        if "error" in box:
            raise box["error"]
        return box["outputs"]


def _invoke(stage, interpreter, values):
    timeout = getattr(stage, "invoke_timeout", None)
    if not timeout:
        return run_interpreter(interpreter, values)
    with _LOCK:
        invoker = getattr(stage, "invoker", None)
        if invoker is None:
            invoker = stage.invoker = _Invoker(f"stage-{stage.index}-invoke")
    return invoker.run(interpreter, values, timeout)


class DeviceFailed(StageError):
    """A stage's Edge TPU failed while running a request."""

    def __init__(self, stage, device, cause):
        super().__init__(f"stage {stage.index}: its Edge TPU ({device}) failed while running this request "
                         f"({type(cause).__name__}: {cause}); check the device (`python -m deploy doctor`), "
                         "or run with --fallback cpu to move such a stage to its int8 CPU file")
        self.stage_index, self.device, self.cause = stage.index, device, cause


def run_stage(stage, values, say=None):
    """Runs ``stage`` on ``values`` ({input name: array}) -> {output name: array}, as described above.

    Raises:
      DeviceFailed: the stage's Edge TPU failed and the stage has no CPU fallback.
    """
    interpreter, placement = stage.interpreter, getattr(stage, "placement", "cpu")   # pycoral-style segments: CPU
    if not placement.startswith("edgetpu:"):
        return run_interpreter(interpreter, values)
    device = placement.split(":", 1)[1]
    hung = getattr(stage, "hung", None)
    try:
        if hung is not None:
            raise InvokeTimeout(f"{hung}, and it is still stuck: restart the process once the device answers")
        return _invoke(stage, interpreter, values)
    except (RuntimeError, InvokeTimeout) as exc:   # RuntimeError: what the runtimes raise when a delegate fails
        if isinstance(exc, InvokeTimeout) and hung is None:
            stage.hung, stage.invoker = str(exc), None   # its thread stays inside invoke: never reuse either
        if getattr(stage, "fallback", None) is None:
            raise DeviceFailed(stage, device, exc) from exc
        with _LOCK:
            if stage.interpreter is interpreter:   # the first request to see the failure moves the stage
                stage.interpreter = stage.fallback()
                stage.placement, stage.hung = "cpu", None
                stage.reason = (f"moved to the CPU after its Edge TPU ({device}) failed: {type(exc).__name__}: "
                                f"{exc}")
                (say or _warn)(f"warning: stage {stage.index}: {stage.reason}; going on with its int8 CPU "
                               f"file {stage.cpu_path} (--fallback cpu)")
        return run_interpreter(stage.interpreter, values)


def _warn(line):
    print(line, file=sys.stderr, flush=True)
