"""The compile step: every stage of a run folder through ``edgetpu_compiler``.

Reads ``manifest["stages"]`` (written by quantize), checks each stage file's
hash, compiles each stage on its own (each stage gets its own Edge TPU in the
pipeline, so there is nothing to co-compile) into ``<run>/compiled/``, and
records per stage what the compiler reported. Without a compiler it records
that the stages will run on the CPU and succeeds.
"""
import os
import pathlib

import runfolder
from runfolder.manifest import MANIFEST_NAME
from compile.compiler import (DEFAULT_TIMEOUT, CompilerError, CompilerMissing, compile_options,
                              compiler_version, find_compiler, run_compiler, tail)
from compile.report import format_size, parse_compiler_output

STEP = "python -m compile"
OUT_DIR = "compiled"   # inside the run folder


def compile_run(run_dir, compiler=None, timeout=DEFAULT_TIMEOUT, min_runtime_version=None,
                search_delegate=False, delegate_search_step=None, log=print):
    """Compiles every stage of ``run_dir`` and records the results in its manifest.

    Args:
      run_dir: the run folder.
      compiler: path of edgetpu_compiler; None looks for it on PATH.
      timeout: seconds one stage may take (passed as --timeout_sec too).
      min_runtime_version, search_delegate, delegate_search_step: compiler options.
      log: called with each progress line.
    Returns:
      The saved manifest.
    Raises:
      runfolder.StepOrderError: no stages yet (run quantize first).
      runfolder.ManifestError: a stage file is missing or was changed.
      CompilerError: ``compiler`` is not executable, or a stage failed (the
        manifest records which, before this is raised).
    """
    run_dir = pathlib.Path(run_dir)
    manifest = runfolder.load(run_dir)
    stages = runfolder.require(manifest, "stages", run_dir, STEP)
    models = _verified_models(run_dir, stages)
    for stage in stages:
        stage["compiled"] = None
        stage["compile"] = None
    try:
        path = find_compiler(compiler)
    except CompilerMissing as exc:
        message = (f"{exc}: the {len(stages)} stage(s) will run on the CPU "
                   f"(recorded in {run_dir / MANIFEST_NAME})")
        manifest["compile"] = {"status": "compiler-missing", "compiler": None, "message": message}
        runfolder.save(run_dir, manifest)
        log(message)
        return manifest

    version = compiler_version(path)
    try:
        options = compile_options(OUT_DIR, timeout, min_runtime_version, search_delegate,
                                  delegate_search_step)
    except ValueError as exc:
        raise CompilerError(str(exc)) from exc
    section = {"status": "compiled", "compiler": {"path": path, "version": version},
               "options": options, "out_dir": OUT_DIR}
    (run_dir / OUT_DIR).mkdir(parents=True, exist_ok=True)
    for number, (stage, model) in enumerate(zip(stages, models), start=1):
        rel_model = os.path.relpath(model, run_dir)
        log(f"compiling stage {number}/{len(stages)}: {stage['name']} ({rel_model})")
        try:
            _compile_stage(run_dir, stage, rel_model, path, options, timeout)
        except CompilerError as exc:
            section.update(status="failed", failed_stage=stage["name"], message=str(exc))
            manifest["compile"] = section
            runfolder.save(run_dir, manifest)
            raise
        log("  " + _summary(stage))
    manifest["compile"] = section
    runfolder.save(run_dir, manifest)
    log(f"compiled {len(stages)} stage(s) with {os.path.basename(path)} {version} into "
        f"{run_dir / OUT_DIR}; recorded in {run_dir / MANIFEST_NAME}")
    return manifest


def _verified_models(run_dir, stages):
    """Absolute stage model paths, each checked against its recorded sha256."""
    if not isinstance(stages, list):
        raise runfolder.ManifestError(
            f"'stages' in {run_dir / MANIFEST_NAME} is a {type(stages).__name__}, "
            f"expected a list; re-run `python -m quantize --run {run_dir}`")
    models, stems = [], {}
    for index, stage in enumerate(stages):
        if not isinstance(stage, dict) or not isinstance(stage.get("model"), dict):
            raise runfolder.ManifestError(
                f"stage {index} in {run_dir / MANIFEST_NAME} has no 'model' file record; "
                f"re-run `python -m quantize --run {run_dir}`")
        stage.setdefault("name", f"stage_{index}")
        model = runfolder.verify_file(run_dir, stage["model"], f"stage {stage['name']} model")
        if model.stem in stems:
            raise runfolder.ManifestError(
                f"stages {stems[model.stem]} and {stage['name']} both have a model named "
                f"{model.name}; the compiler names its output after the input file, so they "
                f"would overwrite each other in {OUT_DIR}/. Re-run `python -m quantize --run {run_dir}`")
        stems[model.stem] = stage["name"]
        models.append(model)
    return models


def _compile_stage(run_dir, stage, rel_model, compiler, options, timeout):
    """Runs the compiler on one stage and fills ``stage["compiled"]`` and ``stage["compile"]``."""
    name = stage["name"]
    stem = pathlib.Path(rel_model).stem
    out_dir = run_dir / OUT_DIR
    compiled = out_dir / f"{stem}_edgetpu.tflite"
    op_log = out_dir / f"{stem}_edgetpu.log"
    stdout_file = out_dir / f"{name}_compiler_stdout.txt"
    stderr_file = out_dir / f"{name}_compiler_stderr.txt"
    for stale in (compiled, op_log, stdout_file, stderr_file):
        stale.unlink(missing_ok=True)

    # Hard limit a little past the compiler's own --timeout_sec, so it can stop itself first.
    run = run_compiler(compiler, [*options, rel_model], cwd=run_dir,
                       timeout=timeout + max(2.0, 0.1 * timeout))
    stdout_file.write_text(run.stdout)
    if run.stderr:
        stderr_file.write_text(run.stderr)
    logs = {"stdout": _rel(run_dir, stdout_file),
            "stderr": _rel(run_dir, stderr_file) if run.stderr else None}
    where = f"stage {name} ({rel_model})"
    output = _message(run.stdout + "\n" + run.stderr)
    try:
        report, unreadable = parse_compiler_output(run.stdout), None
    except ValueError as exc:
        report, unreadable = None, str(exc)

    problem = None
    if run.timed_out:
        problem = (f"edgetpu_compiler did not finish {where} within {timeout:g} s and was stopped. "
                   f"Its output so far: {output or '(none)'}. Raise --timeout, or make the stage smaller")
    elif run.returncode != 0 or (report and report["succeeded"] is False):
        hint = (f"the stage is not fully integer-quantized (float32 reaches an op other than "
                f"QUANTIZE/DEQUANTIZE): re-run `python -m quantize --run {run_dir}`"
                if "not quantized" in output else f"see {logs['stdout']} and fix the stage model")
        problem = (f"edgetpu_compiler failed on {where} with exit status {run.returncode}: "
                   f"{output or '(no output)'}. Fix: {hint}")
    elif not compiled.is_file():
        problem = (f"edgetpu_compiler exited 0 on {where} but did not write {_rel(run_dir, compiled)} "
                   f"(expected <out_dir>/<input name>_edgetpu.tflite). Its output: {output or '(none)'}")
    elif unreadable:
        problem = (f"could not read edgetpu_compiler's output for {where}: {unreadable}. "
                   f"The output is in {logs['stdout']}")
    elif report["output_model"] and (run_dir / report["output_model"]).resolve() != compiled.resolve():
        problem = (f"edgetpu_compiler says it wrote {report['output_model']} for {where}, "
                   f"expected {_rel(run_dir, compiled)}; check the compiler version and options")
    if problem:
        stage["compile"] = {"status": "failed", "returncode": run.returncode,
                            "timed_out": run.timed_out, "message": problem, **logs}
        raise CompilerError(problem)

    if not report["operations"] and op_log.is_file():   # e.g. no -s table in stdout
        from_log = parse_compiler_output(op_log.read_text(errors="replace"))
        for key in ("operations", "ops_mapped", "ops_on_cpu"):
            report[key] = from_log[key]
    stage["compiled"] = runfolder.file_record(run_dir, compiled)
    stage["compile"] = {
        "status": "compiled",
        **{key: report[key] for key in (
            "compiler_version", "compile_time_ms", "on_chip_memory_bytes",
            "on_chip_remaining_bytes", "off_chip_memory_bytes", "edgetpu_subgraphs",
            "total_ops", "ops_mapped", "ops_on_cpu", "operations")},
        "log": _rel(run_dir, op_log) if op_log.is_file() else None,
        **logs,
    }


def _summary(stage):
    """One progress line about a compiled stage."""
    info = stage["compile"]
    mapped, total = info["ops_mapped"], info["total_ops"]
    ops = f"{mapped}/{total} ops on the Edge TPU" if mapped is not None else "op mapping unknown"
    if info["ops_on_cpu"]:
        ops += f", {info['ops_on_cpu']} on the CPU"
    memory = ", ".join(
        f"{label} {format_size(info[key])}" for label, key in (
            ("on-chip", "on_chip_memory_bytes"), ("off-chip", "off_chip_memory_bytes"))
        if info[key] is not None)
    return f"{stage['name']}: {ops}; {memory} -> {stage['compiled']['path']}"


_ROUTINE = ("Edge TPU Compiler version", "Started a compilation timeout timer",
            "Compilation child process completed", "Searching for valid delegate",
            "Try to compile segment")


def _message(output):
    """The compiler's own explanation: its output without the lines every run prints."""
    lines = [line for line in output.splitlines() if not line.strip().startswith(_ROUTINE)]
    return tail("\n".join(lines)).rstrip(".") or tail(output).rstrip(".")


def _rel(run_dir, path):
    return os.path.relpath(path, run_dir)
