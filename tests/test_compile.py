"""Tests of ``python -m compile`` and of the compiler stand-in.

The real edgetpu_compiler cannot run here: the parser is tested on verbatim real output
(tests/data/edgetpu_compiler/, sources in SOURCES.md there), the step end to end with
tests/standins/edgetpu_compiler first on PATH on real int8 models, and the stand-in
against the real format and against models Coral ships compiled.
"""
import json
import os
import pathlib
import shutil
import subprocess
import sys
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

import runfolder
from compile import (
    CompilerError,
    CompilerMissing,
    find_compiler,
    parse_compiler_output,
)
from tests.conftest import _coral_dir

STANDINS = ROOT / "tests" / "standins"
STANDIN = STANDINS / "edgetpu_compiler"
DATA = ROOT / "tests" / "data" / "edgetpu_compiler"
CORAL = _coral_dir()
MOBILENET = CORAL / "mobilenet_v1_0.25_128_quant.tflite"
SPLIT_CONCAT = CORAL / "split_concat.tflite"

fbu = pytest.importorskip("ai_edge_litert.tools.flatbuffer_utils")
needs_models = pytest.mark.skipif(not MOBILENET.exists() or not SPLIT_CONCAT.exists(),
                                  reason=f"Coral test models missing from {CORAL}")


def standin_env(**extra):
    """Environment with the stand-in first on PATH (and this Python, for its #! line)."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(STANDINS), str(pathlib.Path(sys.executable).parent),
                                   env.get("PATH", "")])
    env.update({k: str(v) for k, v in extra.items()})
    return env


def no_compiler_env(tmp_path):
    """Environment whose PATH surely has no edgetpu_compiler."""
    empty = tmp_path / "empty-path"
    empty.mkdir(exist_ok=True)
    env = dict(os.environ)
    env["PATH"] = str(empty)
    return env


def cli(args, env, timeout=120):
    return subprocess.run([sys.executable, "-m", "compile", *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, check=False, timeout=timeout)


def make_run(tmp_path, models, stale=False):
    """A run folder whose manifest lists ``models`` (copied in) as stages, as quantize would."""
    run = tmp_path / "run"
    (run / "stages").mkdir(parents=True)
    stages = []
    for index, source in enumerate(models):
        path = run / "stages" / f"stage_{index}.tflite"
        shutil.copyfile(source, path)
        stages.append({"index": index, "name": f"stage_{index}",
                       "model": runfolder.file_record(run, path),
                       "parameter_bytes": 0, "op_count": 0, "ops": [], "inputs": [], "outputs": [],
                       "compiled": {"path": "stale"} if stale else None,
                       "compile": {"status": "stale"} if stale else None})
    runfolder.save(run, {**runfolder.load(run, create=True), "stages": stages})
    return run


def manifest_of(run):
    return json.loads((run / "manifest.json").read_text())


def edited_model(tmp_path, name, edit):
    """A copy of the mobilenet model changed by ``edit(model)``."""
    model, path = fbu.read_model(str(MOBILENET)), tmp_path / name
    edit(model)
    fbu.write_model(model, str(path))
    return path


def append_dequantize(model):
    """Adds a DEQUANTIZE after the last op, so the model ends in float32 (an op for the CPU)."""
    schema = fbu.schema_fb
    sg = model.subgraphs[0]
    model.buffers.append(schema.BufferT())
    out, code = schema.TensorT(), schema.OperatorCodeT()
    out.shape, out.type, out.name = [1, 1001], schema.TensorType.FLOAT32, "dequantized"
    out.buffer = len(model.buffers) - 1
    sg.tensors.append(out)
    code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.DEQUANTIZE
    code.version = 1
    model.operatorCodes.append(code)
    op = schema.OperatorT()
    op.opcodeIndex = len(model.operatorCodes) - 1
    op.inputs, op.outputs = [int(sg.outputs[0])], [len(sg.tensors) - 1]
    sg.operators.append(op)
    sg.outputs = [len(sg.tensors) - 1]


def make_float_input(model):
    """Marks the input tensor float32, so a CONV_2D reads float: not a quantized model."""
    model.subgraphs[0].tensors[model.subgraphs[0].inputs[0]].type = fbu.schema_fb.TensorType.FLOAT32


def custom_ops(path):
    """(custom_code, inputs, outputs) of every op of subgraph 0, custom_code None if builtin."""
    model = fbu.read_model(str(path))
    codes = [model.operatorCodes[op.opcodeIndex].customCode for op in model.subgraphs[0].operators]
    return [(code.decode() if isinstance(code, bytes) else code, list(op.inputs), list(op.outputs))
            for code, op in zip(codes, model.subgraphs[0].operators)]


def test_standin_is_marked_and_prints_real_version():
    head = STANDIN.read_text().splitlines()
    assert head[0] == "#!/usr/bin/env python3"
    assert "STAND-IN" in head[1] and "NOT the real compiler" in head[1]
    out = subprocess.run([str(STANDIN), "--version"], env=standin_env(), capture_output=True,
                         text=True, check=False, timeout=60)
    assert out.returncode == 0
    assert out.stdout.strip() == "Edge TPU Compiler version 16.0.384591198"


@needs_models
def test_standin_summary_has_the_real_format(tmp_path):
    shutil.copyfile(MOBILENET, tmp_path / "m.tflite")
    out = subprocess.run([str(STANDIN), "-s", "-o", "out", "m.tflite"], cwd=tmp_path,
                         env=standin_env(), capture_output=True, text=True, check=False, timeout=60)
    assert out.returncode == 0, out.stderr
    real = (DATA / "yolov5s-int8-224_stdout.txt").read_text()

    def labels(text):
        return {line.split(":")[0] for line in text.splitlines() if ": " in line}
    assert labels(out.stdout) <= labels(real)
    assert out.stdout.index("Operator                       Count      Status") > 0
    report = parse_compiler_output(out.stdout)
    assert all(report[k] is not None for k in (
        "compiler_version", "compile_time_ms", "input_size_bytes", "output_size_bytes",
        "on_chip_memory_bytes", "on_chip_remaining_bytes", "off_chip_memory_bytes",
        "edgetpu_subgraphs", "total_ops", "operation_log"))
    assert report["output_model"] == "out/m_edgetpu.tflite"
    assert (report["total_ops"], report["ops_mapped"], report["ops_on_cpu"]) == (31, 31, 0)
    log = parse_compiler_output((tmp_path / "out" / "m_edgetpu.log").read_text())
    assert log["operations"] == report["operations"]


@needs_models
@pytest.mark.parametrize("name", ["split_concat", "keras_lstm_mnist_ptq"])
def test_standin_output_has_the_structure_of_the_real_compiled_model(tmp_path, name):
    real_compiled = CORAL / f"{name}_edgetpu.tflite"
    if not real_compiled.exists():
        pytest.skip(f"{real_compiled} missing")
    shutil.copyfile(CORAL / f"{name}.tflite", tmp_path / f"{name}.tflite")
    out = subprocess.run([str(STANDIN), "-o", "out", f"{name}.tflite"], cwd=tmp_path,
                         env=standin_env(), capture_output=True, text=True, check=False, timeout=60)
    assert out.returncode == 0, out.stderr
    ours = custom_ops(tmp_path / "out" / f"{name}_edgetpu.tflite")
    assert ours == custom_ops(real_compiled)
    assert ours[0][0] == "edgetpu-custom-op"


def test_help_lists_the_options():
    out = cli(["--help"], env=standin_env())
    assert out.returncode == 0
    for option in ("--run", "--compiler", "--timeout", "--min-runtime-version",
                   "--search-delegate", "--delegate-search-step"):
        assert option in out.stdout


@needs_models
def test_compiles_every_stage_with_the_standin(tmp_path):
    run = make_run(tmp_path, [MOBILENET, SPLIT_CONCAT], stale=True)
    from tflitegraph import edgetpu_latency
    before = runfolder.load(run)
    guess = {"macs": 10 ** 7, "parameter_bytes": 9 << 20, "io_bytes": 50_000, "streamed_bytes": 2 << 20,
             "fc_bytes": 0}
    before["stages"][0]["edgetpu_estimate"] = edgetpu_latency.estimate_record(guess)
    runfolder.save(run, before)
    out = cli(["--run", run, "--min-runtime-version", "13", "--search-delegate",
               "--delegate-search-step", "4"], env=standin_env())
    assert out.returncode == 0, out.stderr
    assert "compiling stage 1/2: stage_0 (stages/stage_0.tflite)" in out.stdout
    assert "compiling stage 2/2: stage_1 (stages/stage_1.tflite)" in out.stdout

    manifest = manifest_of(run)
    section = manifest["compile"]
    assert section["status"] == "compiled"
    assert section["compiler"]["version"] == "16.0.384591198"
    assert pathlib.Path(section["compiler"]["path"]) == STANDIN
    assert section["options"][:3] == ["--show_operations", "--out_dir", "compiled"]
    assert ["--min_runtime_version", "13"] == section["options"][5:7]
    assert section["options"][-3:] == ["--search_delegate", "--delegate_search_step", "4"]

    expected_ops = [(31, 31), (3, 3)]
    for stage, (total, mapped) in zip(manifest["stages"], expected_ops):
        name = stage["name"]
        record = stage["compiled"]
        assert record["path"] == f"compiled/{name}_edgetpu.tflite"
        path = runfolder.verify_file(run, record, "compiled stage")
        assert b"edgetpu-custom-op" in path.read_bytes()
        assert custom_ops(path)[0][0] == "edgetpu-custom-op"
        info = stage["compile"]
        assert info["status"] == "compiled"
        assert info["compiler_version"] == "16.0.384591198"
        assert (info["total_ops"], info["ops_mapped"], info["ops_on_cpu"]) == (total, mapped, 0)
        assert info["edgetpu_subgraphs"] == 1
        assert all(o["on_tpu"] and o["status"] == "Mapped to Edge TPU" for o in info["operations"])
        assert sum(o["count"] for o in info["operations"]) == total
        assert isinstance(info["on_chip_memory_bytes"], int)
        assert info["off_chip_memory_bytes"] == 0
        assert info["log"] == f"compiled/{name}_edgetpu.log"
        assert info["stdout"] == f"compiled/{name}_compiler_stdout.txt"
        assert (run / info["log"]).is_file()
        assert "Model compiled successfully" in (run / info["stdout"]).read_text()
    assert manifest["stages"][0]["compile"]["operations"][0] == {
        "op": "CONV_2D", "count": 15, "status": "Mapped to Edge TPU", "on_tpu": True}
    refined = manifest["stages"][0]["edgetpu_estimate"]   # the compiler said 0 bytes are streamed
    assert refined["streamed_from"] == "compiler" and refined["features"]["streamed_bytes"] == 0
    assert refined["ms"] == round(edgetpu_latency.model_ms(dict(guess, streamed_bytes=0)), 4)
    assert refined["ms"] < before["stages"][0]["edgetpu_estimate"]["ms"]


@needs_models
def test_ops_left_on_the_cpu_are_recorded(tmp_path):
    model = edited_model(tmp_path, "dq.tflite", append_dequantize)
    run = make_run(tmp_path, [model])
    out = cli(["--run", run], env=standin_env())
    assert out.returncode == 0, out.stderr
    info = manifest_of(run)["stages"][0]["compile"]
    assert (info["total_ops"], info["ops_mapped"], info["ops_on_cpu"]) == (32, 31, 1)
    assert {"op": "DEQUANTIZE", "count": 1, "on_tpu": False,
            "status": "Operation is working on an unsupported data type"} in info["operations"]
    ops = custom_ops(run / "compiled" / "stage_0_edgetpu.tflite")
    assert [code for code, _, _ in ops] == ["edgetpu-custom-op", None]
    assert "1 on the CPU" in out.stdout


@needs_models
def test_missing_compiler_records_cpu_fallback_and_exits_0(tmp_path):
    run = make_run(tmp_path, [MOBILENET, SPLIT_CONCAT], stale=True)
    out = cli(["--run", run], env=no_compiler_env(tmp_path))
    assert out.returncode == 0, out.stderr
    lines = [line for line in (out.stdout + out.stderr).splitlines() if line.strip()]
    assert len(lines) == 1, lines
    for words in ("edgetpu_compiler", "apt", "edgetpu-compiler", "x86-64", "CPU"):
        assert words in lines[0]
    manifest = manifest_of(run)
    assert manifest["compile"]["status"] == "compiler-missing"
    assert manifest["compile"]["compiler"] is None
    assert manifest["compile"]["message"] == lines[0]
    assert all(s["compiled"] is None and s["compile"] is None for s in manifest["stages"])
    assert not (run / "compiled").exists()


def test_find_compiler_api(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(CompilerMissing, match="edgetpu-compiler"):
        find_compiler()
    assert find_compiler(str(STANDIN)) == str(STANDIN)
    with pytest.raises(CompilerError, match="nowhere/edgetpu_compiler") as info:
        find_compiler(str(tmp_path / "nowhere" / "edgetpu_compiler"))
    assert not isinstance(info.value, CompilerMissing)


@needs_models
def test_explicit_compiler_path_is_used_or_refused(tmp_path):
    run = make_run(tmp_path, [SPLIT_CONCAT])
    env = no_compiler_env(tmp_path)
    env["PATH"] += os.pathsep + str(pathlib.Path(sys.executable).parent)   # for the stand-in's #!
    out = cli(["--run", run, "--compiler", STANDIN], env=env)
    assert out.returncode == 0, out.stderr
    assert manifest_of(run)["compile"]["status"] == "compiled"

    bad = cli(["--run", run, "--compiler", tmp_path / "no_such_compiler"], env=env)
    assert bad.returncode != 0
    assert "no_such_compiler" in bad.stderr and "is not an executable file" in bad.stderr


@needs_models
def test_failing_compiler_names_the_stage_and_records_failure(tmp_path):
    run = make_run(tmp_path, [MOBILENET, SPLIT_CONCAT])
    out = cli(["--run", run], env=standin_env(STANDIN_COMPILER_FAIL="stage_1"))
    assert out.returncode != 0
    assert "stage_1" in out.stderr and "exit status 1" in out.stderr
    assert "Compilation failed due to large activation tensors in model" in out.stderr
    manifest = manifest_of(run)
    assert manifest["compile"]["status"] == "failed"
    assert manifest["compile"]["failed_stage"] == "stage_1"
    first, second = manifest["stages"]
    assert first["compile"]["status"] == "compiled" and first["compiled"] is not None
    assert second["compile"]["status"] == "failed" and second["compiled"] is None
    assert second["compile"]["returncode"] == 1
    assert "Compilation failed!" in (run / second["compile"]["stdout"]).read_text()


@needs_models
def test_float_stage_is_refused_with_the_compilers_message(tmp_path):
    model = edited_model(tmp_path, "float.tflite", make_float_input)
    run = make_run(tmp_path, [model])
    out = cli(["--run", run], env=standin_env())
    assert out.returncode != 0
    assert "stage_0" in out.stderr and "Model not quantized" in out.stderr
    assert "python -m quantize --run" in out.stderr
    assert manifest_of(run)["stages"][0]["compile"]["status"] == "failed"


@needs_models
def test_tampered_stage_is_refused_before_compiling(tmp_path):
    run = make_run(tmp_path, [MOBILENET, SPLIT_CONCAT])
    stage = run / "stages" / "stage_1.tflite"
    stage.write_bytes(stage.read_bytes() + b"\0")
    out = cli(["--run", run], env=standin_env())
    assert out.returncode != 0
    assert "stage stage_1 model" in out.stderr and "changed after it was recorded" in out.stderr
    assert "compile" not in manifest_of(run)
    assert not (run / "compiled").exists()


def test_no_stages_is_a_step_order_error(tmp_path):
    run = tmp_path / "run"
    runfolder.save(run, runfolder.load(run, create=True))
    out = cli(["--run", run], env=standin_env())
    assert out.returncode != 0
    assert "'stages'" in out.stderr and f"python -m quantize --run {run}" in out.stderr


@needs_models
def test_hung_compiler_is_stopped_at_the_timeout(tmp_path):
    run = make_run(tmp_path, [SPLIT_CONCAT])
    pidfile = tmp_path / "standin.pid"
    start = time.monotonic()
    out = cli(["--run", run, "--timeout", "1"],
              env=standin_env(STANDIN_COMPILER_SLEEP=120, STANDIN_COMPILER_PIDFILE=pidfile))
    elapsed = time.monotonic() - start
    assert out.returncode != 0
    assert elapsed < 30
    assert "stage_0" in out.stderr and "within 1 s" in out.stderr and "--timeout" in out.stderr
    pid = int(pidfile.read_text())
    assert not pathlib.Path(f"/proc/{pid}").exists() or \
        "zombie" in pathlib.Path(f"/proc/{pid}/status").read_text()
    info = manifest_of(run)["stages"][0]["compile"]
    assert info["status"] == "failed" and info["timed_out"] is True
