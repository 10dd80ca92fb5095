"""An estimate of how long an Edge TPU takes per inference of a model or a stage: an estimate, not a
measurement, calibrated on Coral's published figures (bench/edgetpu_model.py reports its error).

What an Edge TPU spends its time on (Coral's docs; Villarrubia et al., arXiv 2503.01035): a fixed cost
per invoke, the multiply-accumulates at the chip's effective rate, and the bytes that cross the link
on every inference: the input and output, and the parameters beyond what its ~8 MiB on-chip memory
caches (streamed from the host each time). Fully-connected weights are used once per inference, so
they cost time per byte of their own (without that term the fit misses VGG16/19 by half). Ops left on
the CPU are not in it: add their measured time.

    ms = invoke_ms + macs / macs_per_ms + (input + output + streamed parameter bytes) / bytes_per_ms
         + fully-connected weight bytes / fc_bytes_per_ms

The constants are fitted for a USB 3.0 Accelerator on a desktop host, within what the hardware can do:
no faster than the chip's peak (4 TOPS: 2e9 MACs per ms) and than USB 3.0's data rate (5 Gb/s with
8b/10b coding: 500 MB/s). Unbounded, the published figures are fitted best by a link faster than USB 3.0
and compute faster than the chip; bounded, both end at the bound, so the estimate reads as a roofline
plus a fixed 1.9 ms per invoke. Other links scale the transfer term by their data rate against
USB 3.0's (LINKS): nominal rates, not calibrated.
"""
import numpy as np

from tflitegraph.graph import buffer_bytes, stage_io

USABLE_ON_CHIP_BYTES = int(7.0 * (1 << 20))
"""Parameter room after the executable's reserve: real 16.0 logs report used + remaining ~7.0 MiB
(6.02 + 1.02 MiB in edgetpu issue #557; 5.90 + 1.16 MiB in yolov7 PR #1672)."""

# Fitted by bench/edgetpu_model.py on bench/data/edgetpu_published.json (tests/test_edgetpu_latency.py
# refits them from that file and compares).
USB3 = {"invoke_ms": 1.915852407712946, "macs_per_ms": 1999999999.9998763, "bytes_per_ms": 499999.99999999994,
        "fc_bytes_per_ms": 4266872.949547592}
# Each published model estimated from constants fitted on the others (bench/edgetpu_model.py).
LEAVE_ONE_OUT = {'models': 9, 'median_error': 0.125, 'max_error': 1.223}

PEAK_MACS_PER_MS = 2e9          # 4 TOPS (Coral), 2 operations per multiply-accumulate
USB3_BYTES_PER_MS = 5e5         # 5 Gb/s, 8b/10b coded: 4 Gb/s of data
# Data rate against USB 3.0's: USB 2.0 480 Mb/s (60 MB/s, no 8b/10b); PCIe Gen2 x1 (the M.2 and mini-PCIe
# cards) 5 GT/s with 8b/10b, as USB 3.0. Nominal, not measured.
LINKS = {"usb3": 1.0, "usb2": 6e4 / USB3_BYTES_PER_MS, "pcie": 1.0}


def model_features(graph):
    """What the estimate reads from a whole model (a ``tflitegraph.graph.Graph``)."""
    return stage_features(graph, 0, len(graph.ops))


def stage_features(graph, start, end):
    """The same for ops ``[start, end)``: their MACs, constant bytes (each buffer once) and the bytes of
    the activations crossing into and out of the range."""
    ops = graph.ops[start:end]
    parameters = buffer_bytes(graph, {t for op in ops for t in op.inputs if t >= 0 and graph.tensors[t].is_constant})
    ins, outs = stage_io(graph, start, end)
    return {"macs": int(sum(op.macs for op in ops)), "parameter_bytes": int(parameters),
            "io_bytes": int(sum(graph.tensors[t].activation_bytes for t in [*ins, *outs])),
            "streamed_bytes": int(max(0, parameters - USABLE_ON_CHIP_BYTES)),
            "fc_bytes": int(sum(_fc_bytes(graph, op) for op in ops))}


def _fc_bytes(graph, op):
    if op.name != "FULLY_CONNECTED":
        return 0
    return sum(graph.tensors[t].constant_bytes for t in op.inputs if t >= 0 and graph.tensors[t].is_constant)


def _terms(features, link="usb3"):
    moved = (features["io_bytes"] + features["streamed_bytes"]) / LINKS[link]
    return np.array([1.0, features["macs"], moved, features["fc_bytes"]], dtype=float)


def model_ms(features, constants=None, link="usb3"):
    """Estimated milliseconds per inference on one Edge TPU over ``link``."""
    c = constants or USB3
    invoke, compute, transfer, fc = _terms(features, link)
    return float(c["invoke_ms"] * invoke + compute / c["macs_per_ms"] + transfer / c["bytes_per_ms"]
                 + fc / c["fc_bytes_per_ms"])


def stage_ms(graph, start, end, link="usb3", constants=None):
    """Estimated milliseconds of ops ``[start, end)`` as one compiled stage on its own Edge TPU."""
    return model_ms(stage_features(graph, start, end), constants, link)


def estimate_record(features, link="usb3"):
    """What the manifest keeps of a stage's estimate: the figure, the link, and what it was made from."""
    return {"ms": round(model_ms(features, link=link), 4), "link": link, "features": dict(features),
            "streamed_from": "estimate"}


def with_compiler_figures(record, off_chip_bytes):
    """The estimate redone with the parameter bytes the compiler reported it streams (its log's
    "Off-chip memory used for streaming uncached model parameters") in place of this module's guess."""
    features = dict(record["features"], streamed_bytes=int(off_chip_bytes))
    return dict(estimate_record(features, record["link"]), streamed_from="compiler")


def range_cost(graph, parameter_table, link="usb3", constants=None):
    """``cost(i, j)``: the estimate for ops [i, j) in O(1), for the partitioner. What crosses a cut is
    charged as the stage's input or output (a tensor only passing by is counted too)."""
    c = constants or USB3
    macs = np.concatenate([[0.0], np.cumsum([op.macs for op in graph.ops], dtype=np.float64)])
    fc = np.concatenate([[0.0], np.cumsum([_fc_bytes(graph, op) for op in graph.ops], dtype=np.float64)])
    n = len(graph.ops)
    edge = [sum(graph.tensors[t].activation_bytes for t in graph.inputs)] + \
        [graph.crossing_bytes(k) for k in range(1, n)] + [sum(graph.tensors[t].activation_bytes for t in graph.outputs)]

    def cost(i, j):
        streamed = max(0, int(parameter_table[i, j]) - USABLE_ON_CHIP_BYTES)
        moved = (edge[i] + edge[j] + streamed) / LINKS[link]
        return (c["invoke_ms"] + (macs[j] - macs[i]) / c["macs_per_ms"] + moved / c["bytes_per_ms"]
                + (fc[j] - fc[i]) / c["fc_bytes_per_ms"])
    return cost


def fit(rows):
    """Constants minimising the squared relative error over ``rows`` (features + "published_ms"), none
    negative, compute no faster than PEAK_MACS_PER_MS and transfers no faster than USB3_BYTES_PER_MS."""
    from scipy.optimize import lsq_linear   # calibration only (bench and tests), not at run time
    a = np.array([_terms(r) / r["published_ms"] for r in rows])
    lower = [0.0, 1 / PEAK_MACS_PER_MS, 1 / USB3_BYTES_PER_MS, 0.0]   # ms per unit: the time terms
    x = lsq_linear(a, np.ones(len(rows)), bounds=(lower, [np.inf] * 4)).x
    big = 1e30   # a term the fit found no use for costs nothing
    return {"invoke_ms": float(x[0]), "macs_per_ms": float(1 / x[1]) if x[1] > 0 else big,
            "bytes_per_ms": float(1 / x[2]) if x[2] > 0 else big,
            "fc_bytes_per_ms": float(1 / x[3]) if x[3] > 0 else big}
