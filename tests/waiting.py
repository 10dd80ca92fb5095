"""Waiting on state, not on the clock: a loaded 2-core machine makes fixed sleeps flaky."""
import time


def wait_until(predicate, timeout_s=60.0, what="condition", every_s=0.05):
    """``predicate()``'s first true value, polled every ``every_s``; AssertionError after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(every_s)
