"""The pre-flight report as a table for people (``python -m compile check``)."""
from compile.preflight.check import warnings
from compile.compiler_log import format_size


def format_report(report):
    """Lines of text for one model's report from ``compile.preflight.check.check_model``."""
    summary, memory = report["summary"], report["memory"]
    label = report.get("name") or report["model"]
    where = "" if label == report["model"] else f" ({report['model']})"
    head = (f"{label}{where}: {summary['total_ops']} ops, {summary['tpu_ops']} "
            f"predicted on the Edge TPU, {summary['cpu_ops']} on the CPU")
    if report["refused"]:
        head += "; the compiler will REFUSE this model"
    lines = [head, f"  {'#':>4}  {'op':<28} {'v':>2}  {'where':<5}  reason"]
    for op in report["ops"]:
        where = "tpu?" if op.get("risk") else op["placement"]
        lines.append(f"  {op['index']:>4}  {op['type']:<28} {op['version']:>2}  "
                     f"{where:<5}  {op.get('risk') or op['reason'] or op['status']}")
    fits = "fits" if memory["fits_on_chip"] else (
        f"does NOT fit: ~{format_size(memory['streamed_bytes_estimate'])} streamed per inference")
    lines.append(f"  parameters on the Edge TPU: {format_size(memory['tpu_parameter_bytes'])} of "
                 f"~{format_size(memory['usable_on_chip_bytes'])} usable on-chip memory ({fits})")
    lines += [f"  warning: {line}" for line in warnings(report)]
    lines += [f"  fix (op {', '.join(map(str, f['ops']))} {f['type']}): {f['fix']}" for f in report.get("fixes", [])]
    return lines
