"""A one-line progress counter on stderr (deploy/ keeps to numpy, pillow and a runtime).

In a terminal the line is redrawn in place at most ten times a second; in a log
(not a terminal) a line is written every ten seconds and at the end.
"""
import sys
import time


def printer(label, stream=None):
    """Returns progress(done, total); cheap enough to call for every sample."""
    stream = stream or sys.stderr
    interactive = stream.isatty()
    start = last = time.perf_counter()

    def progress(done, total):
        nonlocal last
        now = time.perf_counter()
        finished = done >= total
        if not finished and now - last < (0.1 if interactive else 10.0):
            return
        last = now
        rate = done / max(now - start, 1e-9)
        # "evaluated 172 of 172 samples", not "172/172": that read like 172 of 172 correct
        text = f"{label}: {'evaluated' if finished else 'evaluating'} {done} of {total} samples ({rate:.0f}/s)"
        stream.write(f"\r{text}" + ("\n" if finished else "") if interactive else text + "\n")
        stream.flush()

    return progress
