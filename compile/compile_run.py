"""The compile step: every stage of a run folder through ``edgetpu_compiler``.

Reads ``manifest["stages"]`` (written by quantize), checks each stage file's
hash, compiles the stages into ``<run>/compiled/`` and records per stage what
the compiler reported. By default each stage is compiled on its own (each gets
its own Edge TPU in the pipeline); ``co_compile`` passes them to one compiler
call so stages that share one Edge TPU share its parameter cache; and
``num_segments`` lets the compiler cut the unsplit int8 model instead
(``compile.multi``). Without a compiler it records that the stages will run on
the CPU and succeeds.
"""
import os
import pathlib

import runfolder
from compile.compiler import (
    CompilerError,
    CompilerFlags,
    CompilerMissing,
    compile_options,
    compiler_version,
    find_compiler,
)
from compile.multi import compile_segments, compile_together
from compile.outcome import Call, failure, invoke, message, record, refine_estimate, rel, summary_line
from compile.compiler_log import parse_compiler_output
from runfolder.manifest import MANIFEST_NAME

STEP = "python -m compile"
OUT_DIR = "compiled"   # inside the run folder


def compile_run(run_dir, compiler=None, flags=CompilerFlags(), co_compile=False, log=print):
    """Compiles the stages of ``run_dir`` and records the results in its manifest.

    Three ways: each stage on its own (default); all stages in one compiler call
    (``co_compile``: they share the on-chip parameter cache of one Edge TPU, the
    compiled files stay per stage); or the run's unsplit int8 model cut by the
    compiler itself into ``num_segments`` segments (recorded under
    ``manifest["compile"]["segments"]``; the stages are then left uncompiled).

    Args:
      run_dir: the run folder.
      compiler: path of edgetpu_compiler; None looks for it on PATH.
      flags: seconds one compilation may take (passed as --timeout_sec too) and the
        compiler's options (compile.compiler.CompilerFlags).
      log: called with each progress line.
    Returns:
      The saved manifest.
    Raises:
      runfolder.StepOrderError: no stages yet (run quantize first).
      runfolder.ManifestError: a stage file is missing or was changed.
      CompilerError: bad options, ``compiler`` is not executable, or a compile
        failed (the manifest records which stage, before this is raised).
    """
    num_segments = flags.num_segments
    if co_compile and num_segments is not None:
        raise CompilerError("--co-compile and --num-segments exclude each other: the compiler "
                            "segments one model at a time. Pass one of them")
    run_dir = pathlib.Path(run_dir)
    manifest = runfolder.load(run_dir)
    stages = runfolder.require(manifest, "stages", run_dir, STEP)
    models = _verified_models(run_dir, stages)
    whole = None
    if num_segments is not None:
        record = (manifest.get("quantization") or {}).get("int8_model")
        if not record:
            raise runfolder.StepOrderError(
                f"--num-segments compiles the run's unsplit int8 model, which "
                f"{run_dir / MANIFEST_NAME} does not list: run `python -m quantize --run "
                f"{run_dir}` first, or compile the stages without --num-segments")
        whole = runfolder.verify_file(run_dir, record, "int8 model")
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
        options = compile_options(OUT_DIR, flags)
    except ValueError as exc:
        raise CompilerError(str(exc)) from exc
    section = {"status": "compiled", "compiler": {"path": path, "version": version},
               "options": options, "out_dir": OUT_DIR,
               "mode": "segments" if whole else "co-compiled" if co_compile else "per-stage"}
    (run_dir / OUT_DIR).mkdir(parents=True, exist_ok=True)
    call = Call(run_dir, path, options, flags.timeout, OUT_DIR)
    try:
        if whole is not None:
            section["segments"] = compile_segments(call, whole, num_segments, log)
        elif co_compile:
            chosen = [(s, m) for s, m in zip(stages, models) if not _cpu_stage(s, log)]
            if chosen:
                compile_together(call, [s for s, _ in chosen], [m for _, m in chosen], log)
        else:
            for number, (stage, model) in enumerate(zip(stages, models), start=1):
                if _cpu_stage(stage, log):
                    continue
                rel_model = rel(run_dir, model)
                log(f"compiling stage {number}/{len(stages)}: {stage['name']} ({rel_model})")
                _compile_stage(call, stage, rel_model)
                log("  " + summary_line(stage["name"], stage["compile"], stage["compiled"]["path"]))
    except CompilerError as exc:
        failed = next((s["name"] for s in stages
                       if (s.get("compile") or {}).get("status") == "failed"), None)
        section.update(status="failed", failed_stage=failed, message=str(exc))
        manifest["compile"] = section
        runfolder.save(run_dir, manifest)
        raise
    for stage in stages:
        refine_estimate(stage)
    manifest["compile"] = section
    runfolder.save(run_dir, manifest)
    what = (f"{num_segments} segments of {rel(run_dir, whole)}" if whole
            else f"{sum(1 for s in stages if s['compiled'])} stage(s){' together' if co_compile else ''}")
    log(f"compiled {what} with {os.path.basename(path)} {version} into "
        f"{run_dir / OUT_DIR}; recorded in {run_dir / MANIFEST_NAME}")
    return manifest


CPU_STAGE = ("not compiled: it holds only ops the Edge TPU cannot run, isolated by "
             "`python -m quantize --isolate-unsupported`")


def _cpu_stage(stage, log):
    """True (and recorded) for a stage quantize marked to run on the CPU."""
    if stage.get("target") != "cpu":
        return False
    stage["compile"] = {"status": "skipped", "reason": CPU_STAGE}
    log(f"skipping stage {stage['name']}: {CPU_STAGE}")
    return True


def _verified_models(run_dir, stages):
    """Absolute stage model paths, each checked against its recorded sha256."""
    if not isinstance(stages, list):
        raise runfolder.ManifestError(
            f"'stages' in {run_dir / MANIFEST_NAME} is a {type(stages).__name__}, "
            f"expected a list; re-run `{runfolder.restage_command(run_dir)}`")
    models, stems = [], {}
    for index, stage in enumerate(stages):
        if not isinstance(stage, dict) or not isinstance(stage.get("model"), dict):
            raise runfolder.ManifestError(
                f"stage {index} in {run_dir / MANIFEST_NAME} has no 'model' file record; "
                f"re-run `{runfolder.restage_command(run_dir)}`")
        stage.setdefault("name", f"stage_{index}")
        model = runfolder.verify_file(run_dir, stage["model"], f"stage {stage['name']} model")
        if model.stem in stems:
            raise runfolder.ManifestError(
                f"stages {stems[model.stem]} and {stage['name']} both have a model named "
                f"{model.name}; the compiler names its output after the input file, so they "
                f"would overwrite each other in {OUT_DIR}/. Re-run `{runfolder.restage_command(run_dir)}`")
        stems[model.stem] = stage["name"]
        models.append(model)
    return models


def _compile_stage(call, stage, rel_model):
    """Runs the compiler on one stage and fills ``stage["compiled"]`` and ``stage["compile"]``."""
    name = stage["name"]
    stem = pathlib.Path(rel_model).stem
    run_dir, out_dir, timeout = call.run_dir, call.out_dir, call.timeout
    compiled = out_dir / f"{stem}_edgetpu.tflite"
    op_log = out_dir / f"{stem}_edgetpu.log"
    for stale in (compiled, op_log):
        stale.unlink(missing_ok=True)
    run, logs = invoke(call, [rel_model], name)
    where = f"stage {name} ({rel_model})"
    try:
        report, unreadable = parse_compiler_output(run.stdout), None
    except ValueError as exc:
        report, unreadable = None, str(exc)
    problem = failure(run, report and report["succeeded"], where, run_dir, logs, timeout)
    if problem is None and not compiled.is_file():
        problem = (f"edgetpu_compiler exited 0 on {where} but did not write "
                   f"{rel(run_dir, compiled)} (expected <out_dir>/<input name>_edgetpu.tflite). "
                   f"Its output: {message(run.stdout + run.stderr) or '(none)'}")
    elif problem is None and unreadable:
        problem = (f"could not read edgetpu_compiler's output for {where}: {unreadable}. "
                   f"The output is in {logs['stdout']}")
    elif problem is None and report["output_model"] and \
            (run_dir / report["output_model"]).resolve() != compiled.resolve():
        problem = (f"edgetpu_compiler says it wrote {report['output_model']} for {where}, "
                   f"expected {rel(run_dir, compiled)}; check the compiler version and options")
    if problem:
        stage["compile"] = {"status": "failed", "returncode": run.returncode,
                            "timed_out": run.timed_out, "message": problem, **logs}
        raise CompilerError(problem)
    stage["compiled"] = runfolder.file_record(run_dir, compiled)
    stage["compile"] = record(run_dir, report, op_log, logs)
