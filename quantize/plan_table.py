"""The partition plan as a table people read: one row per stage, then the cuts."""
from deploy.core.tensors import short_name


def _bytes(n):
    for unit, size in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def _estimate(record, cpu_stage):
    """A stage's Edge TPU estimate as a cell: with the CPU time of the ops the compiler would leave on
    the CPU when they were timed, else how many such ops it leaves out."""
    cpu_ms, cpu_ops = record.get("cpu_ms"), record.get("cpu_ops", 0)
    if cpu_stage or record["features"].get("tpu_ops", 1) == 0:
        return f"{cpu_ms:.3f} on CPU" if cpu_ms is not None else "(CPU stage)"
    if not cpu_ops:
        return f"{record['ms']:.3f}"
    if cpu_ms is None:
        return f"{record['tpu_ms']:.3f} + {cpu_ops} CPU op(s) untimed"
    return f"{record['ms']:.3f} ({cpu_ops} op(s) on CPU {cpu_ms:.3f})"


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
               _estimate(plan.estimates[k], plan.targets and plan.targets[k] == "cpu") if plan.estimates else "-"]
        if plan.measured_ms:
            row.append(f"{plan.measured_ms[k]:.3f}")
        rows.append(row)
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in [header] + rows]
    balances = ", ".join(f"{name} {value:.3f}" for name, value in plan.balances().items())
    lines.append(f"objective: {plan.objective}; max/mean per stage: {balances}")
    if plan.edgetpu_ms:
        lines.append(f"TPU est. ms: an estimate for one Edge TPU per stage over {plan.link} (no TPU was used; "
                     "tflitegraph/edgetpu_latency.py; its error: bench/edgetpu_model.py), plus the measured "
                     "CPU time of ops the compiler would leave on the CPU")
    if plan.refined_by == "compiler":
        for k, past in enumerate(plan.rounds, start=1):
            lines.append(f"profile-cuts round {k}: cuts {past['cut_positions']}, TPU est. ms per stage "
                         f"{past['stage_ms_estimated']} -> with the compiler's figures {past['stage_ms_compiled']}")
    for k, (names, nbytes) in enumerate(plan.crossing):
        lines.append(f"cut {k} (before op {plan.cuts[k]}): {_bytes(nbytes)} in {len(names)} tensor(s): "
                     + ", ".join(short_name(n) for n in names))
    return lines
