"""Edge TPU checks ``python -m quantize`` makes before the user reaches the compiler.

Three things from ``compile``'s pre-flight check (no compiler, no TensorFlow):
which ops the Edge TPU supports (for ``--isolate-unsupported``), op versions
lowered where compiler 16.0 would refuse them and the kernels provably compute
the same, and a per-stage prediction of where each op will run, printed as
warnings and kept in the manifest. compile never imports quantize, so this is a plain import.
"""
import pathlib

from compile.preflight import check_model, op_support, rewrite_op_versions, warnings


def supported_ops(graph):
    """Per op of ``graph``: can the Edge TPU run it, judged by itself (compile.preflight.opcheck)."""
    return [bool(ok) for ok, _ in op_support(graph)]


def lower_op_versions(model_bytes):
    """(bytes, changes): op versions above compiler 16.0's limits lowered where provably safe.

    ``changes`` lists {op, from, to, reason}; when empty the bytes are the input.
    """
    new_bytes, changes = rewrite_op_versions(bytes(model_bytes))
    return (new_bytes, changes) if changes else (bytes(model_bytes), [])


def describe_changes(changes):
    return [f"{c['op']} version {c['from']} -> {c['to']}: {c['reason']}" for c in changes]


def preflight_stages(run_dir, stage_entries, progress=print):
    """Predicts per stage where each op runs; prints warnings; adds ``preflight`` to each entry.

    Returns the warning lines (empty when every stage maps fully and fits on chip).
    """
    lines = []
    for entry in stage_entries:
        report = check_model(pathlib.Path(run_dir) / entry["model"]["path"], name=entry["name"])
        entry["preflight"] = {
            "refused": report["refused"], "problems": report["problems"],
            "tpu_ops": report["summary"]["tpu_ops"], "cpu_ops": report["summary"]["cpu_ops"],
            "placement": [op["placement"] for op in report["ops"]],
            "fits_on_chip": report["memory"]["fits_on_chip"],
        }
        lines += warnings(report)
    total = sum(e["preflight"]["tpu_ops"] for e in stage_entries)
    ops = sum(e["op_count"] for e in stage_entries)
    progress(f"Edge TPU pre-flight (compiler 16.0 predicted, not run): {total} of {ops} ops on the TPU"
             + ("" if not lines else "; see `python -m compile check " + str(run_dir) + "` for every op"))
    for line in lines:
        progress("  WARNING: " + line)
    return lines
