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
plus a fixed ~2 ms per invoke.

Other hosts (PROFILES): pycoral's reference figures per host (Raspberry Pi 4 on USB 3, Pi 3 B on USB 2,
the Dev Board) refit the per-invoke cost and the data rate, the chip's constants kept
(``tflitegraph.edgetpu_fit.fit_host``). "usb2" is the desktop with the USB 2 rate seen on the Pi 3 B;
"pcie" (an M.2 or mini-PCIe card in a desktop) is the desktop's USB 3 figures: PCIe Gen2 x1 carries
data as fast, and no published figure measures it.
"""
import numpy as np

from tflitegraph import fallthrough
from tflitegraph.graph import buffer_bytes, stage_io

USABLE_ON_CHIP_BYTES = int(7.0 * (1 << 20))
"""Parameter room after the executable's reserve: real 16.0 logs report used + remaining ~7.0 MiB
(6.02 + 1.02 MiB in edgetpu issue #557; 5.90 + 1.16 MiB in yolov7 PR #1672)."""

# Fitted by bench/edgetpu_model.py on bench/data/edgetpu_published.json (tests/test_edgetpu_latency.py
# refits them from that file and compares).
USB3 = {"invoke_ms": 2.024692438798795, "macs_per_ms": 1999999999.9848442, "bytes_per_ms": 499999.99999999994,
        "fc_bytes_per_ms": 5007452.1523107905}
# Each published model estimated from constants fitted on the others (bench/edgetpu_model.py).
LEAVE_ONE_OUT = {'models': 11, 'median_error': 0.124, 'max_error': 1.08}
# Per host: fitted by bench/edgetpu_hosts.py on bench/data/edgetpu_hosts.json (pycoral's reference CSVs).
HOSTS = {"desktop": {"invoke_ms": 1.64912, "bytes_per_ms": 466867.640147},
         "rpi4": {"invoke_ms": 3.748878, "bytes_per_ms": 271410.818691},
         "rpi3": {"invoke_ms": 6.121819, "bytes_per_ms": 33941.41993},
         "rpi3plus": {"invoke_ms": 5.922677, "bytes_per_ms": 34104.875113},
         "devboard": {"invoke_ms": 1.819315, "bytes_per_ms": 386192.796049}}
# Their data rates rest on Inception v4, the one model of the four that streams parameters: leaving it
# out, a host's fit has no figure that sets its rate (bench/edgetpu_hosts.py prints the errors).

PEAK_MACS_PER_MS = 2e9          # 4 TOPS (Coral), 2 operations per multiply-accumulate
USB3_BYTES_PER_MS = 5e5         # 5 Gb/s, 8b/10b coded: 4 Gb/s of data
# The most a link carries: USB 2.0 480 Mb/s (60 MB/s, no 8b/10b); PCIe Gen2 x1 5 GT/s with 8b/10b.
LINK_BYTES_PER_MS = {"usb3": USB3_BYTES_PER_MS, "usb2": 6e4, "pcie": USB3_BYTES_PER_MS}


def _profiles():
    hosts = {name: dict(USB3, **{k: h[k] for k in ("invoke_ms", "bytes_per_ms")}) for name, h in HOSTS.items()}
    return {"usb3": USB3, "usb2": dict(USB3, bytes_per_ms=HOSTS["rpi3"]["bytes_per_ms"]), "pcie": USB3,
            "usb3-rpi4": hosts["rpi4"], "usb2-rpi3": hosts["rpi3"], "pcie-devboard": hosts["devboard"]}


PROFILES = _profiles()
"""Constants per ``--link``: the link, and for the named ones the host the figures were measured on."""
LINKS = tuple(PROFILES)


def model_features(graph):
    """What the estimate reads from a whole model (a ``tflitegraph.graph.Graph``)."""
    return stage_features(graph, 0, len(graph.ops))


def stage_features(graph, start, end, on_tpu=None):
    """The same for ops ``[start, end)``: their MACs, constant bytes (each buffer once) and the bytes of
    the activations crossing into and out of the range. ``on_tpu``: the positions the compiler maps
    (default all); the others are left out and counted in "cpu_ops"."""
    ops = [op for op in graph.ops[start:end] if on_tpu is None or op.position in on_tpu]
    parameters = buffer_bytes(graph, {t for op in ops for t in op.inputs if t >= 0 and graph.tensors[t].is_constant})
    ins, outs = stage_io(graph, start, end) if on_tpu is None else _part_io(graph, start, end, on_tpu)
    return {"macs": int(sum(op.macs for op in ops)), "parameter_bytes": int(parameters),
            "io_bytes": int(sum(graph.tensors[t].activation_bytes for t in [*ins, *outs])),
            "streamed_bytes": int(max(0, parameters - USABLE_ON_CHIP_BYTES)),
            "fc_bytes": int(sum(_fc_bytes(graph, op) for op in ops)), "tpu_ops": len(ops),
            "cpu_ops": end - start - len(ops)}


def _part_io(graph, start, end, on_tpu):
    """The activations the Edge TPU part of ops [start, end) reads from outside it, and those it makes
    that a CPU op of the range or a later stage reads: what crosses the link."""
    made = {t for p in on_tpu for t in graph.ops[p].outputs if t >= 0}
    ins = {t for p in on_tpu for t in graph.ops[p].inputs if t >= 0 and graph.tensors[t].is_activation} - made
    read_on_cpu = {t for op in graph.ops[start:end] if op.position not in on_tpu for t in op.inputs}
    outs = {t for t in made if t in graph.outputs or graph.last_use.get(t, -1) >= end or t in read_on_cpu}
    return sorted(ins), sorted(outs)


def placed_on_tpu(graph, start, end, supported=None):
    """Positions of ops ``[start, end)`` compiled as one stage that land on the Edge TPU
    (``tflitegraph.fallthrough``); all of them when ``supported`` is None."""
    if supported is None:
        return set(range(start, end))
    return {p for p, on_tpu, _ in fallthrough.walk(graph, supported, start, end) if on_tpu}


def _fc_bytes(graph, op):
    if op.name != "FULLY_CONNECTED":
        return 0
    return sum(graph.tensors[t].constant_bytes for t in op.inputs if t >= 0 and graph.tensors[t].is_constant)


def model_ms(features, constants=None, link="usb3"):
    """Estimated milliseconds per inference on one Edge TPU over ``link`` (the Edge TPU part only)."""
    if features.get("tpu_ops", 1) == 0:
        return 0.0   # nothing of it is on the Edge TPU: no invoke, nothing over the link
    c = constants or PROFILES[link]
    moved = features["io_bytes"] + features["streamed_bytes"]
    return float(c["invoke_ms"] + features["macs"] / c["macs_per_ms"] + moved / c["bytes_per_ms"]
                 + features["fc_bytes"] / c["fc_bytes_per_ms"])


def stage_estimate(graph, start, end, link="usb3", supported=None, latencies=None):
    """The manifest record (``estimate_record``) of ops ``[start, end)`` as one compiled stage on its
    own Edge TPU: the Edge TPU part estimated, the ops the compiler leaves on the CPU at their measured
    CPU ``latencies`` (per op ms; without them "cpu_ms" is None and "ms" is the Edge TPU part)."""
    on_tpu = placed_on_tpu(graph, start, end, supported)
    cpu_ms = 0.0 if len(on_tpu) == end - start else None if latencies is None else \
        float(sum(latencies[p] for p in range(start, end) if p not in on_tpu))
    return estimate_record(stage_features(graph, start, end, on_tpu), link, cpu_ms)


def stage_ms(graph, start, end, link="usb3", constants=None):
    """Estimated milliseconds of ops ``[start, end)`` as one compiled stage on its own Edge TPU."""
    return model_ms(stage_features(graph, start, end), constants, link)


def estimate_record(features, link="usb3", cpu_ms=0.0):
    """What the manifest keeps of a stage's estimate: the figure ("ms": Edge TPU part + CPU part), its
    parts, the link, and what it was made from."""
    tpu_ms = model_ms(features, link=link)
    return {"ms": round(tpu_ms + (cpu_ms or 0.0), 4), "tpu_ms": round(tpu_ms, 4),
            "cpu_ms": None if cpu_ms is None else round(cpu_ms, 4), "cpu_ops": features.get("cpu_ops", 0),
            "link": link, "features": dict(features), "streamed_from": "estimate"}


def with_compiler_figures(record, off_chip_bytes):
    """The estimate redone with the parameter bytes the compiler reported it streams (its log's
    "Off-chip memory used for streaming uncached model parameters") in place of this module's guess."""
    features = dict(record["features"], streamed_bytes=int(off_chip_bytes))
    return dict(estimate_record(features, record["link"], record.get("cpu_ms", 0.0)), streamed_from="compiler")


def range_cost(graph, parameter_table, link="usb3", placed=None, cache_bytes=USABLE_ON_CHIP_BYTES):
    """``cost(i, j)``: the estimate for ops [i, j) in O(1), for the partitioner. What crosses a cut is
    charged as the stage's input or output (a tensor only passing by is counted too). ``placed``
    (``placed_tables``): charge only the ops the compiler maps, and the others their CPU time.
    ``cache_bytes``: the parameter bytes one Edge TPU caches (what the compiler reported, when known)."""
    c = PROFILES[link]
    macs = np.concatenate([[0.0], np.cumsum([op.macs for op in graph.ops], dtype=np.float64)])
    fc = np.concatenate([[0.0], np.cumsum([_fc_bytes(graph, op) for op in graph.ops], dtype=np.float64)])
    n = len(graph.ops)
    edge = [sum(graph.tensors[t].activation_bytes for t in graph.inputs)] + \
        [graph.crossing_bytes(k) for k in range(1, n)] + [sum(graph.tensors[t].activation_bytes for t in graph.outputs)]

    def tpu(io, stage_macs, stage_fc, parameters):
        moved = io + max(0, int(parameters) - cache_bytes)
        return (c["invoke_ms"] + stage_macs / c["macs_per_ms"] + moved / c["bytes_per_ms"]
                + stage_fc / c["fc_bytes_per_ms"])

    if placed is None:
        return lambda i, j: tpu(edge[i] + edge[j], macs[j] - macs[i], fc[j] - fc[i], parameter_table[i, j])
    return lambda i, j: (tpu(*(placed[k][i, j] for k in ("io", "macs", "fc", "parameters")))
                         if placed["tpu_ops"][i, j] else 0.0) + placed["cpu_ms"][i, j]


def placed_tables(graph, supported, latencies):
    """For every range [i, j) compiled as one stage, of the ops on the Edge TPU: MACs, fully-connected
    bytes, constant bytes, count and bytes over the link (as ``_part_io``); and the measured CPU ms of
    the others. One fall-through walk from each start: O(n²), as ``quantize.costs.parameter_table``."""
    n = len(graph.ops)
    names = ("macs", "fc", "parameters", "tpu_ops", "cpu_ms", "io")
    tables = {k: np.zeros((n + 1, n + 1)) for k in names}
    uses = [[(graph.model.subgraphs[0].tensors[t].buffer, graph.tensors[t].constant_bytes)
             for t in op.inputs if t >= 0 and graph.tensors[t].is_constant] for op in graph.ops]
    size = [t.activation_bytes for t in graph.tensors]
    for i in range(n):
        seen, read, made, sent, row = set(), set(), set(), set(), np.zeros(6)
        leaving = np.zeros(n + 2)   # by end j: bytes the Edge TPU part sends back (a difference array)
        for p, on_tpu, _ in fallthrough.walk(graph, supported, i):
            op = graph.ops[p]
            ins = [t for t in op.inputs if t >= 0 and graph.tensors[t].is_activation]
            if on_tpu:
                fresh = [(b, nbytes) for b, nbytes in uses[p] if b not in seen]
                seen.update(b for b, _ in fresh)
                new_in = [t for t in set(ins) if t not in made and t not in read]
                read.update(new_in)
                row += [op.macs, _fc_bytes(graph, op), sum(nb for _, nb in fresh), 1, 0, sum(size[t] for t in new_in)]
                for t in (t for t in op.outputs if t >= 0):
                    made.add(t)
                    last = n if t in graph.outputs else graph.last_use.get(t, -1)
                    if last > p:
                        leaving[p + 1] += size[t]
                        leaving[last + 1] -= size[t]
            else:
                row[4] += latencies[p]
                for t in (set(ins) & made) - sent:   # read on the CPU: it leaves the Edge TPU whatever the end
                    sent.add(t)
                    leaving[graph.last_use.get(t, n) + 1] += size[t]
            for k, name in enumerate(names):
                tables[name][i, p + 1] = row[k]
        tables["io"][i, i + 1:] += np.cumsum(leaving)[i + 1:n + 1]
    return tables
