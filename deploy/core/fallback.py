"""What happens when an Edge TPU fails under a running stage (a USB transfer error, a device unplugged).

Every stage runs through ``run_stage``. On the CPU it is one invoke. On an Edge TPU, an invoke that
raises ends that request with ``DeviceFailed``, naming the stage, the device and what to do, and the
process stays up; or, for a stage loaded with ``fallback`` (``--fallback cpu``), the stage moves to its
int8 CPU file once, says so once, and runs that request and the later ones there. The two files compute
the same model, so results stay those of the int8 model (to the bit only where the TPU's already were).
"""
import sys
import threading

from deploy.core.stages import StageError
from deploy.core.tensors import run_interpreter

_LOCK = threading.Lock()


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
    try:
        return run_interpreter(interpreter, values)
    except RuntimeError as exc:   # what the runtimes raise when a delegate's invoke fails
        if not placement.startswith("edgetpu:"):
            raise
        device = placement.split(":", 1)[1]
        if getattr(stage, "fallback", None) is None:
            raise DeviceFailed(stage, device, exc) from exc
        with _LOCK:
            if stage.interpreter is interpreter:   # the first request to see the failure moves the stage
                stage.interpreter = stage.fallback()
                stage.placement = "cpu"
                stage.reason = (f"moved to the CPU after its Edge TPU ({device}) failed: {type(exc).__name__}: "
                                f"{exc}")
                (say or _warn)(f"warning: stage {stage.index}: {stage.reason}; going on with its int8 CPU "
                               f"file {stage.cpu_path} (--fallback cpu)")
        return run_interpreter(stage.interpreter, values)


def _warn(line):
    print(line, file=sys.stderr, flush=True)
