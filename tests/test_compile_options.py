"""Compiler options, co-compilation and ``--num_segments``: parsing real multi-model output
(tests/data/edgetpu_compiler/, SOURCES.md there), failures with their fixes, and the whole
step with the stand-in compiler (tests/standins/edgetpu_compiler) first on PATH.
"""
import pathlib
import shutil

import pytest

import runfolder
from compile import CompilerFlags, compile_options, parse_compilations, parse_compiler_output
from compile.compiler import CompilerRun
from compile.outcome import failure
from compile.preflight.placement import compiled_placement
from compile.preflight.check import check_model
from tests.test_compile import (
    MOBILENET,
    SPLIT_CONCAT,
    cli,
    custom_ops,
    edited_model,
    fbu,
    make_run,
    manifest_of,
    needs_models,
    standin_env,
)

DATA = pathlib.Path(__file__).resolve().parent / "data" / "edgetpu_compiler"
# Long options of edgetpu_compiler 16.0 (coral.ai/docs/edgetpu/compiler/, "Usage").
DOCUMENTED = {"--out_dir", "--show_operations", "--min_runtime_version", "--search_delegate",
              "--delegate_search_step", "--timeout_sec", "--num_segments",
              "--enable_multiple_subgraphs", "--intermediate_tensors", "--help", "--version"}


def test_options_are_the_documented_long_flags():
    options = compile_options("compiled", CompilerFlags(timeout=60, min_runtime_version=14, search_delegate=True,
                                                        delegate_search_step=5, num_segments=3,
                                                        enable_multiple_subgraphs=True))
    assert {o for o in options if o.startswith("-")} <= DOCUMENTED
    assert options[options.index("--num_segments") + 1] == "3"
    assert options[options.index("--timeout_sec") + 1] == "60"
    assert "--enable_multiple_subgraphs" in options
    with pytest.raises(ValueError, match="2 or more"):
        compile_options("compiled", CompilerFlags(num_segments=1))
    assert "--num_segments" not in compile_options("compiled")


def test_parse_real_co_compiled_output():
    first, second = parse_compilations((DATA / "cocompiled_two_models_stdout_head.txt").read_text())
    assert (first["input_model"], second["input_model"]) == ("temp_models/1.tflite",
                                                             "temp_models/2.tflite")
    assert second["output_model"] == "temp_models/co-compiled/2/2_edgetpu.tflite"
    assert first["compile_time_ms"] == second["compile_time_ms"] == 524
    assert (first["total_ops"], second["total_ops"]) == (57, 6)
    assert first["on_chip_memory_bytes"] == round(2.27 * (1 << 20))
    assert first["on_chip_remaining_bytes"] == second["on_chip_remaining_bytes"]
    assert first["compiler_version"] == "16.0.384591198"


def test_parse_real_segmented_output_with_a_failed_segment():
    ok, failed = parse_compilations(
        (DATA / "num_segments_2_second_fails_stdout_head.txt").read_text())
    assert ok["output_model"] == "efficientdet_lite3_512_ptq_segment_0_of_2_edgetpu.tflite"
    assert (ok["succeeded"], ok["compile_time_ms"], ok["total_ops"]) == (True, 1857, 84)
    assert failed["input_model"] is None
    assert failed["errors"] == [
        "ERROR: Restored original execution plan after delegate application failure."]


def test_parse_one_model_output_the_same_either_way():
    text = (DATA / "yolov5s-int8-224_stdout.txt").read_text()
    [report] = parse_compilations(text)
    assert report == parse_compiler_output(text)


@pytest.mark.parametrize("log, hint", [
    ("model_not_quantized_stdout.txt", "python -m quantize --run"),
    ("op_version_refused_stdout.txt", "python -m compile check"),
    ("dynamic_tensors_failed_stdout.txt", "static tensor sizes"),
])
def test_real_failures_get_the_compilers_words_and_a_fix(tmp_path, log, hint):
    text = (DATA / log).read_text()
    run = CompilerRun(args=[], returncode=1, stdout=text, stderr="", timed_out=False, seconds=1)
    report = parse_compiler_output(text)
    message = failure(run, report["succeeded"], "stage stage_3 (stages/stage_3.tflite)",
                      tmp_path, {"stdout": "compiled/x.txt"}, 180)
    assert "stage_3" in message and "exit status 1" in message and hint in message
    assert report["errors"][-1].rstrip("! ") in message


@needs_models
def test_co_compile_puts_all_stages_in_one_call(tmp_path):
    run = make_run(tmp_path, [MOBILENET, SPLIT_CONCAT])
    out = cli(["--run", run, "--co-compile"], env=standin_env())
    assert out.returncode == 0, out.stderr
    assert "co-compiling 2 stage(s) in one call: stage_0, stage_1" in out.stdout
    manifest = manifest_of(run)
    assert manifest["compile"]["mode"] == "co-compiled"
    stdout = (run / "compiled" / "co-compiled_compiler_stdout.txt").read_text()
    assert stdout.count("Models compiled successfully") == 1
    assert stdout.count("Input model:") == 2
    real = {line.split(":")[0] for name in ("cocompiled_two_models_stdout_head.txt",
                                            "yolov5s-int8-224_stdout.txt")
            for line in (DATA / name).read_text().splitlines() if ": " in line}
    assert {line.split(":")[0] for line in stdout.splitlines() if ": " in line} <= real
    remaining = set()
    for stage, other in zip(manifest["stages"], ["stage_1", "stage_0"]):
        path = runfolder.verify_file(run, stage["compiled"], "compiled stage")
        assert path.name == f"{stage['name']}_edgetpu.tflite"
        assert custom_ops(path)[0][0] == "edgetpu-custom-op"
        info = stage["compile"]
        assert info["co_compiled_with"] == [other]
        assert info["ops_mapped"] == check_model(run / stage["model"]["path"])["summary"]["tpu_ops"]
        remaining.add(info["on_chip_remaining_bytes"])
    assert len(remaining) == 1   # one shared cache, as in the real co-compiled output


@needs_models
def test_co_compile_failure_names_the_stages(tmp_path):
    run = make_run(tmp_path, [MOBILENET, SPLIT_CONCAT])
    out = cli(["--run", run, "--co-compile"], env=standin_env(STANDIN_COMPILER_FAIL="1"))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "co-compiled stages stage_0, stage_1" in out.stderr
    assert manifest_of(run)["compile"]["status"] == "failed"


@needs_models
def test_num_segments_records_the_compilers_segments(tmp_path):
    run = make_run(tmp_path, [MOBILENET, SPLIT_CONCAT])
    manifest = runfolder.load(run)
    shutil.copyfile(MOBILENET, run / "model_int8.tflite")
    manifest["quantization"] = {"int8_model": runfolder.file_record(run, run / "model_int8.tflite")}
    runfolder.save(run, manifest)
    out = cli(["--run", run, "--num-segments", "2"], env=standin_env())
    assert out.returncode == 0, out.stderr
    section = manifest_of(run)["compile"]
    assert section["mode"] == "segments"
    assert section["options"][-2:] == ["--num_segments", "2"]
    segments = section["segments"]
    assert [s["compiled"]["path"] for s in segments] == [
        f"compiled/model_int8_segment_{k}_of_2_edgetpu.tflite" for k in range(2)]
    for segment in segments:
        runfolder.verify_file(run, segment["compiled"], "segment")
        runfolder.verify_file(run, segment["model"], "segment model")
    ops = sum(s["compile"]["total_ops"] for s in segments)
    assert ops == len(fbu.read_model(str(MOBILENET)).subgraphs[0].operators)
    assert all(s["compiled"] is None for s in manifest_of(run)["stages"])


@needs_models
def test_num_segments_needs_the_int8_model_and_excludes_co_compile(tmp_path):
    run = make_run(tmp_path, [SPLIT_CONCAT])
    out = cli(["--run", run, "--num-segments", "2"], env=standin_env())
    assert out.returncode == 2 and "python -m quantize --run" in out.stderr
    both = cli(["--run", run, "--num-segments", "2", "--co-compile"], env=standin_env())
    assert both.returncode == 2 and "not allowed with" in both.stderr


@needs_models
def test_standin_maps_what_the_preflight_predicts(tmp_path):
    def middle_hard_swish(model):
        pool = [fbu.schema_fb.BuiltinOperator.AVERAGE_POOL_2D]
        code = fbu.schema_fb.OperatorCodeT()
        code.builtinCode = code.deprecatedBuiltinCode = fbu.schema_fb.BuiltinOperator.HARD_SWISH
        code.version = 1
        model.operatorCodes.append(code)
        for op in model.subgraphs[0].operators:
            c = model.operatorCodes[op.opcodeIndex]
            if max(c.builtinCode, c.deprecatedBuiltinCode) in pool:
                op.opcodeIndex = len(model.operatorCodes) - 1
    model = edited_model(tmp_path, "hs.tflite", middle_hard_swish)
    run = make_run(tmp_path, [model])
    out = cli(["--run", run], env=standin_env())
    assert out.returncode == 0, out.stderr
    info = manifest_of(run)["stages"][0]["compile"]
    predicted = check_model(model)
    assert (info["ops_mapped"], info["ops_on_cpu"]) == (predicted["summary"]["tpu_ops"],
                                                        predicted["summary"]["cpu_ops"])
    assert {"op": "HARD_SWISH", "count": 1, "on_tpu": False,
            "status": "Operation not supported"} in info["operations"]
    compiled = run / "compiled" / "stage_0_edgetpu.tflite"
    assert [p["placement"] for p in compiled_placement(run / "stages" / "stage_0.tflite",
                                                       compiled)] == \
        [p["placement"] for p in predicted["ops"]]


@needs_models
def test_standin_refuses_an_op_version_the_real_compiler_cannot_parse(tmp_path):
    def newer_conv(model):
        for code in model.operatorCodes:
            if max(code.builtinCode, code.deprecatedBuiltinCode) == \
                    fbu.schema_fb.BuiltinOperator.CONV_2D:
                code.version = 6   # grouped convolution, TF 2.9 (edgetpu issue #631)
    run = make_run(tmp_path, [edited_model(tmp_path, "v6.tflite", newer_conv)])
    out = cli(["--run", run], env=standin_env())
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "stage_0" in out.stderr and "Model could not be parsed" in out.stderr
    assert "python -m compile check" in out.stderr


def test_help_lists_the_new_modes_and_the_check():
    out = cli(["--help"], env=standin_env())
    assert out.returncode == 0
    for option in ("--co-compile", "--num-segments", "--enable-multiple-subgraphs", "check"):
        assert option in out.stdout
    check = cli(["check", "--help"], env=standin_env())
    assert check.returncode == 0 and "--json" in check.stdout and "MODEL_OR_RUN" in check.stdout
