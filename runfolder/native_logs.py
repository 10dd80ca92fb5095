"""Native libraries' log lines kept from the user's terminal, unless ``CORAL_STAGES_VERBOSE=1``.

TensorFlow and the TFLite runtime write from C++ straight to file descriptor 2: "All log messages
before absl::InitializeLog() is called are written to STDERR", "I0000 ... cudart_stub.cc ... Could
not find cuda drivers", the converter's "fully_quantize: 0, inference_type: 6 ...", "INFO: Created
TensorFlow Lite XNNPACK delegate for CPU.". ``TF_CPP_MIN_LOG_LEVEL`` does not reach the ones
written before absl is set up, or the runtime's own. So the few calls that print them run with
descriptor 2 pointed at a temporary file; when the call fails, what it wrote is shown after all.
Standard library only: the deploy side uses it on a Pi.
"""
import contextlib
import os
import sys
import tempfile

VERBOSE_ENV = "CORAL_STAGES_VERBOSE"


def verbose():
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0")


@contextlib.contextmanager
def quiet_native_stderr():
    """Runs the block with native writes to stderr captured; replays them if the block raises."""
    if verbose():
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):   # no real descriptor 2 (an embedded interpreter): nothing to hide
        yield
        return
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            captured.seek(0)
            os.write(2, captured.read()[-20000:])
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
