"""Fitting the Edge TPU estimate's constants (``tflitegraph.edgetpu_latency``) to published figures:
for calibration (bench/ and tests), never at run time; needs scipy.

``fit``: all four constants on Coral's benchmark table (USB 3.0 Accelerator, desktop host).
``fit_host``: a host's per-invoke cost and data rate on pycoral's per-host reference figures, the
chip's own constants (compute, fully-connected weights) kept from ``fit``: the host changes what the
CPU spends per invoke and how fast its bus moves bytes, not the Edge TPU.
"""
import numpy as np

from tflitegraph.edgetpu_latency import LINK_BYTES_PER_MS, PEAK_MACS_PER_MS, USB3, USB3_BYTES_PER_MS

_BIG = 1e30   # a rate the fit found no use for: its term costs nothing


def _terms(row):
    return np.array([1.0, row["macs"], row["io_bytes"] + row["streamed_bytes"], row["fc_bytes"]], dtype=float)


def fit(rows):
    """Constants minimising the squared relative error over ``rows`` (features + "published_ms"), none
    negative, compute no faster than PEAK_MACS_PER_MS and transfers no faster than USB3_BYTES_PER_MS."""
    from scipy.optimize import lsq_linear
    a = np.array([_terms(r) / r["published_ms"] for r in rows])
    lower = [0.0, 1 / PEAK_MACS_PER_MS, 1 / USB3_BYTES_PER_MS, 0.0]   # ms per unit: the time terms
    x = lsq_linear(a, np.ones(len(rows)), bounds=(lower, [np.inf] * 4)).x
    return {"invoke_ms": float(x[0]), "macs_per_ms": float(1 / x[1]) if x[1] > 0 else _BIG,
            "bytes_per_ms": float(1 / x[2]) if x[2] > 0 else _BIG,
            "fc_bytes_per_ms": float(1 / x[3]) if x[3] > 0 else _BIG}


def fit_host(rows, measured_ms, link, chip=None):
    """{"invoke_ms", "bytes_per_ms"} of one host: least squared relative error over the ``rows`` whose
    name ``measured_ms`` gives a figure for, the transfer no faster than ``link``'s data rate."""
    from scipy.optimize import lsq_linear
    chip = chip or USB3
    used = [r for r in rows if r["name"] in measured_ms]
    ms = np.array([measured_ms[r["name"]] for r in used])
    fixed = np.array([r["macs"] / chip["macs_per_ms"] + r["fc_bytes"] / chip["fc_bytes_per_ms"] for r in used])
    a = np.array([[1.0, r["io_bytes"] + r["streamed_bytes"]] for r in used]) / ms[:, None]
    x = lsq_linear(a, 1 - fixed / ms, bounds=([0.0, 1 / LINK_BYTES_PER_MS[link]], [np.inf, np.inf])).x
    return {"invoke_ms": float(x[0]), "bytes_per_ms": float(1 / x[1]) if x[1] > 0 else _BIG}


def leave_one_out(rows, measured_ms, link, chip=None):
    """Per model of ``measured_ms``: its relative error estimated from a host fit on the others."""
    from tflitegraph.edgetpu_latency import model_ms
    chip = chip or USB3
    errors = {}
    for name, ms in measured_ms.items():
        others = {k: v for k, v in measured_ms.items() if k != name}
        row = next(r for r in rows if r["name"] == name)
        errors[name] = abs(model_ms(row, dict(chip, **fit_host(rows, others, link, chip))) - ms) / ms
    return errors
