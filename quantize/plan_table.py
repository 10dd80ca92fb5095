"""The partition plan as a table people read: one row per stage, then the cuts."""
from deploy.core.tensors import short_name


def _bytes(n):
    for unit, size in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def format_plan(plan):
    """Lines of text: stage table, balance (max/mean) per cost, crossing tensors per cut."""
    header = ["stage", "ops", "count", "MACs", "params", "act in", "act out", "est. ms",
              f"TPU est. ms ({plan.link})"]
    if plan.measured_ms:
        header.append("meas. ms")
    rows = []
    for k, s in enumerate(plan.stages):
        row = [str(k), f"{s.start}-{s.end - 1}", str(s.op_count), f"{s.macs:,}", _bytes(s.parameter_bytes),
               _bytes(s.activation_in_bytes), _bytes(s.activation_out_bytes),
               f"{plan.latency_ms[k]:.3f}" if plan.latency_ms else "-",
               "(CPU stage)" if plan.targets and plan.targets[k] == "cpu" else
               f"{plan.edgetpu_ms[k]:.3f}" if plan.edgetpu_ms else "-"]
        if plan.measured_ms:
            row.append(f"{plan.measured_ms[k]:.3f}")
        rows.append(row)
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in [header] + rows]
    balances = ", ".join(f"{name} {value:.3f}" for name, value in plan.balances().items())
    lines.append(f"objective: {plan.objective}; max/mean per stage: {balances}")
    if plan.edgetpu_ms:
        lines.append(f"TPU est. ms: an estimate for one Edge TPU per stage over {plan.link} (no TPU was used; "
                     "tflitegraph/edgetpu_latency.py; its error: bench/edgetpu_model.py)")
    for k, (names, nbytes) in enumerate(plan.crossing):
        lines.append(f"cut {k} (before op {plan.cuts[k]}): {_bytes(nbytes)} in {len(names)} tensor(s): "
                     + ", ".join(short_name(n) for n in names))
    return lines
