"""Reads what ``edgetpu_compiler`` prints, and the ``<name>_edgetpu.log`` it writes.

The compiler has no machine-readable output, so this parses its text. The
format is that of real compiler 16.0 output (samples and their sources are in
``tests/data/edgetpu_compiler/``)::

    Edge TPU Compiler version 16.0.384591198
    Model compiled successfully in 3173 ms.
    On-chip memory used for caching model parameters: 6.08MiB
    ...
    Operator                       Count      Status

    CONV_2D                        62         Mapped to Edge TPU
    QUANTIZE                       2          Operation is otherwise supported, but not mapped ...

The operation log has the same table, after ``Input:`` and ``Output:`` lines.
Standard library only.
"""
import re

MAPPED = "Mapped to Edge TPU"

_UNITS = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}
_SIZE = re.compile(r"^([0-9]+(?:\.[0-9]+)?)\s*(B|KiB|MiB|GiB)$")
_VERSION = re.compile(r"^Edge TPU Compiler version (\S+)")
_COMPILED = re.compile(r"^Models? compiled successfully in (\d+) ms\.")
_TABLE_HEADER = re.compile(r"^Operator\s+Count\s+Status$")
_ROW = re.compile(r"^(\S+)\s+(\d+)\s+(\S.*)$")


def parse_size(text):
    """Bytes in a compiler size such as ``"1.05MiB"``, ``"7.25KiB"`` or ``"0.00B"``.

    The compiler prints two decimals, so sizes above 1 KiB are approximate.
    """
    match = _SIZE.match(text.strip())
    if not match:
        raise ValueError(
            f"compiler size {text!r} is not a number followed by B, KiB, MiB or GiB "
            "(as in '1.05MiB'); the compiler's output format may have changed")
    return round(float(match.group(1)) * _UNITS[match.group(2)])


# "Label: value" lines: label -> (key in the result, converter).
_FIELDS = {
    "Input model": ("input_model", str),
    "Input": ("input_model", str),              # in the .log
    "Output model": ("output_model", str),
    "Output": ("output_model", str),            # in the .log
    "Input size": ("input_size_bytes", parse_size),
    "Output size": ("output_size_bytes", parse_size),
    "On-chip memory used for caching model parameters": ("on_chip_memory_bytes", parse_size),
    "On-chip memory remaining for caching model parameters": ("on_chip_remaining_bytes", parse_size),
    "Off-chip memory used for streaming uncached model parameters": ("off_chip_memory_bytes", parse_size),
    "Number of Edge TPU subgraphs": ("edgetpu_subgraphs", int),
    "Total number of operations": ("total_ops", int),
    "Operation log": ("operation_log", str),
    "Number of operations that will run on Edge TPU": ("_ops_tpu_line", int),
    "Number of operations that will run on CPU": ("_ops_cpu_line", int),
}

# Lines that explain a failure; kept verbatim in "errors".
_ERROR_PREFIXES = ("ERROR", "Invalid model", "Model not quantized", "Model could not be parsed",
                   "Compilation failed", "Internal compiler error")


def empty_report():
    """The report of output that says nothing: every field None, no operations."""
    report = {key: None for key, _ in _FIELDS.values() if not key.startswith("_")}
    report.update(compiler_version=None, compile_time_ms=None, succeeded=None,
                  operations=[], ops_mapped=None, ops_on_cpu=None, errors=[])
    return report


def parse_compiler_output(text):
    """Parses the compiler's stdout for ONE model, or its ``_edgetpu.log``.

    Returns:
      A dict: compiler_version, compile_time_ms, succeeded (True/False/None),
      input_model, input_size_bytes, output_model, output_size_bytes,
      on_chip_memory_bytes, on_chip_remaining_bytes, off_chip_memory_bytes,
      edgetpu_subgraphs, total_ops, operation_log, operations (list of
      {"op", "count", "status", "on_tpu"}), ops_mapped, ops_on_cpu, errors.
      Fields the text does not have are None. ops_mapped/ops_on_cpu come from
      the operation table, else from the "Number of operations that will run
      on ..." lines, else None (the compiler prints neither when every op is
      mapped and -s is not given: read the .log then).
    Raises:
      ValueError: the text describes several co-compiled models, or a size is
        not in the compiler's format.
    """
    report = empty_report()
    extra = {}
    in_table = False
    for raw in text.splitlines():
        line = raw.strip()
        if in_table:
            row = _ROW.match(line)
            if row:
                op, count, status = row.group(1), int(row.group(2)), row.group(3).strip()
                report["operations"].append(
                    {"op": op, "count": count, "status": status, "on_tpu": status == MAPPED})
                continue
            if not line:
                continue
            in_table = False
        if _TABLE_HEADER.match(line):
            if report["operations"]:
                raise ValueError(
                    "compiler output has more than one operation table, so it describes "
                    "several co-compiled models; parse the output of one model at a time")
            in_table = True
            continue
        match = _VERSION.match(line)
        if match:
            report["compiler_version"] = match.group(1)
            continue
        match = _COMPILED.match(line)
        if match:
            report["compile_time_ms"] = int(match.group(1))
            continue
        if line.startswith("Compilation succeeded"):
            report["succeeded"] = True
            continue
        if line.startswith(("Compilation failed", "Invalid model")):
            report["succeeded"] = False
        if line.startswith(_ERROR_PREFIXES):
            report["errors"].append(line)
            continue
        label, sep, value = line.partition(":")
        if sep and label in _FIELDS:
            key, convert = _FIELDS[label]
            target = extra if key.startswith("_") else report
            if target.get(key) is not None and key == "input_model":
                raise ValueError(
                    f"compiler output names a second input model ({value.strip()!r}), so it "
                    "describes several co-compiled models; parse one model's output at a time")
            target[key] = convert(value.strip())
    _count_ops(report, extra)
    return report


def _count_ops(report, extra):
    """Fills ops_mapped / ops_on_cpu from the table, else from the summary lines."""
    if report["operations"]:
        report["ops_mapped"] = sum(o["count"] for o in report["operations"] if o["on_tpu"])
        report["ops_on_cpu"] = sum(o["count"] for o in report["operations"] if not o["on_tpu"])
    elif "_ops_tpu_line" in extra or "_ops_cpu_line" in extra:
        report["ops_mapped"] = extra.get("_ops_tpu_line")
        report["ops_on_cpu"] = extra.get("_ops_cpu_line")


def format_size(num_bytes):
    """Formats bytes the way the compiler does: "0.00B", "7.25KiB", "1.05MiB"."""
    for unit in ("GiB", "MiB", "KiB"):
        if num_bytes >= _UNITS[unit]:
            return f"{num_bytes / _UNITS[unit]:.2f}{unit}"
    return f"{num_bytes:.2f}B"


_RUN_START = "Started a compilation timeout timer"


def parse_compilations(text):
    """Parses output that describes several models: co-compiled, or ``--num_segments``.

    Co-compilation prints one "Models compiled successfully" line and then one
    block per model, each from its ``Input model:`` line; ``--num_segments``
    compiles segment after segment, each run starting with "Started a compilation
    timeout timer" and ending in "Compilation succeeded!" or "Compilation failed!"
    (real samples: tests/data/edgetpu_compiler/, see SOURCES.md).

    Returns:
      A list of reports as ``parse_compiler_output`` gives for one model, in the
      order printed, each with "compile_time_ms" and "succeeded" of its own run.
      A run that failed before naming a model adds a report whose input_model is
      None, with the failure in "errors".
    """
    version = next((line.strip() for line in text.splitlines()
                    if _VERSION.match(line.strip())), "")
    runs = [{"blocks": [], "lines": []}]
    block = None
    for raw in text.splitlines():
        line = raw.strip()
        run = runs[-1]
        if line.startswith(_RUN_START) and (run["blocks"] or run["lines"]):
            runs.append({"blocks": [], "lines": []})
            block = None
            continue
        if line.startswith("Input model:"):
            block = [version, raw]
            run["blocks"].append(block)
        elif block is not None and not line.startswith(("Compilation ", "Searching for valid",
                                                        "Try to compile", _RUN_START)):
            block.append(raw)
        else:
            run["lines"].append(raw)
    reports = []
    for run in runs:
        status = parse_compiler_output("\n".join([version, *run["lines"]]))
        if not run["blocks"] and (status["succeeded"] is False or status["errors"]):
            reports.append(status)
        for lines in run["blocks"]:
            report = parse_compiler_output("\n".join(lines))
            report.update(compile_time_ms=status["compile_time_ms"],
                          succeeded=status["succeeded"],
                          errors=status["errors"] + report["errors"])
            reports.append(report)
    return reports
