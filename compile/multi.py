"""Compiler calls that produce several models: co-compiled stages, ``--num_segments``.

Co-compilation (coral.ai/docs/edgetpu/compiler/, "Co-compiling multiple
models"): all stage files go to one call, which gives each a share of one Edge
TPU's parameter cache (priority in the order given) and still writes one
``<stage>_edgetpu.tflite`` and ``.log`` per stage. ``--num_segments N``
("Segmenting a model for pipelining") cuts ONE model into N segments itself and
writes ``<model>_segment_K_of_N_edgetpu.tflite`` (and the uncompiled
``<model>_segment_K_of_N.tflite``) for K = 0..N-1. Standard library only.
"""
import pathlib

import runfolder
from compile.compiler import CompilerError
from compile.outcome import failure, invoke, message, record, rel, summary_line
from compile.compiler_log import parse_compilations


def compile_together(call, stages, models, log):
    """Co-compiles all stage models in one call; fills each stage's compiled/compile.

    Raises:
      CompilerError: the call failed or left a stage without its compiled file;
        the stages named in the message are marked failed.
    """
    run_dir, out_dir, out_name = call.run_dir, call.out_dir, call.out_name
    rel_models = [rel(run_dir, m) for m in models]
    outputs = [out_dir / f"{pathlib.Path(m).stem}_edgetpu.tflite" for m in rel_models]
    for output in outputs:
        output.unlink(missing_ok=True)
        output.with_suffix(".log").unlink(missing_ok=True)
    names = ", ".join(s["name"] for s in stages)
    log(f"co-compiling {len(stages)} stage(s) in one call: {names}")
    run, logs = invoke(call, rel_models, "co-compiled")
    reports = parse_compilations(run.stdout)
    by_input = {str(pathlib.PurePath(r["input_model"])): r for r in reports if r["input_model"]}
    succeeded = False if any(r["succeeded"] is False for r in reports) else None
    blamed = [s for s, m in zip(stages, rel_models) if m in message(run.stdout + run.stderr)]
    problem = failure(run, succeeded, f"co-compiled stages {names}", run_dir, logs, call.timeout)
    if problem is None:
        missing = [s for s, m, out in zip(stages, rel_models, outputs)
                   if not out.is_file() or str(pathlib.PurePath(m)) not in by_input]
        if missing:
            blamed = missing
            problem = (f"edgetpu_compiler exited 0 but wrote no compiled model or report for "
                       f"stage(s) {', '.join(s['name'] for s in missing)} (expected "
                       f"{out_name}/<stage>_edgetpu.tflite). Its output is in {logs['stdout']}")
    if problem:
        for stage in blamed or stages:
            stage["compile"] = {"status": "failed", "returncode": run.returncode,
                                "timed_out": run.timed_out, "message": problem, **logs}
        raise CompilerError(problem)
    for stage, model, output in zip(stages, rel_models, outputs):
        report = by_input[str(pathlib.PurePath(model))]
        stage["compiled"] = runfolder.file_record(run_dir, output)
        stage["compile"] = {**record(run_dir, report, output.with_suffix(".log"), logs),
                            "co_compiled_with": [s["name"] for s in stages if s is not stage]}
        log("  " + summary_line(stage["name"], stage["compile"], stage["compiled"]["path"]))


def compile_segments(call, model, count, log):
    """Lets the compiler cut ``model`` into ``count`` segments; returns their records.

    Returns:
      A list, one per segment K: {"index", "compiled" (file record), "model"
      (the uncompiled segment's file record, or None if not written), "compile"
      (the summary as for a stage)}.
    Raises:
      CompilerError: the call failed, or a segment is missing.
    """
    run_dir, out_dir, out_name, timeout = call.run_dir, call.out_dir, call.out_name, call.timeout
    stem = pathlib.Path(model).stem
    names = [f"{stem}_segment_{k}_of_{count}" for k in range(count)]
    for name in names:
        for suffix in ("_edgetpu.tflite", "_edgetpu.log", ".tflite"):
            (out_dir / f"{name}{suffix}").unlink(missing_ok=True)
    rel_model = rel(run_dir, model)
    log(f"compiling {rel_model} into {count} segments with the compiler's own cuts")
    # The compiler runs one compilation (with its own --timeout_sec timer) per segment.
    run, logs = invoke(call, [rel_model], f"{stem}_segments", timeout * count)
    reports = parse_compilations(run.stdout)
    by_output = {pathlib.PurePath(r["output_model"]).name: r for r in reports if r["output_model"]}
    succeeded = False if any(r["succeeded"] is False for r in reports) else None
    where = f"{rel_model} (--num_segments {count})"
    problem = failure(run, succeeded, where, run_dir, logs, timeout * count)
    missing = [n for n in names if not (out_dir / f"{n}_edgetpu.tflite").is_file()
               or f"{n}_edgetpu.tflite" not in by_output]
    if problem is None and missing:
        problem = (f"edgetpu_compiler exited 0 on {where} but did not write or report "
                   f"{', '.join(n + '_edgetpu.tflite' for n in missing)} in {out_name}/. "
                   f"Its output is in {logs['stdout']}")
    if problem:
        raise CompilerError(problem)
    segments = []
    for k, name in enumerate(names):
        compiled = out_dir / f"{name}_edgetpu.tflite"
        plain = out_dir / f"{name}.tflite"
        info = record(run_dir, by_output[compiled.name], out_dir / f"{name}_edgetpu.log", logs)
        segments.append({"index": k, "compiled": runfolder.file_record(run_dir, compiled),
                         "model": runfolder.file_record(run_dir, plain) if plain.is_file() else None,
                         "compile": info})
        log("  " + summary_line(f"segment {k}", info, rel(run_dir, compiled)))
    return segments
