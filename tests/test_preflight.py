"""Pre-flight check (``compile.preflight.check``): rules on edited real models, ground truth
against every compiled twin in shared/coral_test_data, the command line, and no TensorFlow.
"""
import glob
import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

import runfolder
from compile.preflight import optable
from compile.preflight.placement import compiled_placement
from compile.preflight.check import (
    CheckError,
    check_model,
    check_run,
    predict_placement,
    warnings,
)
from tflitegraph.graph import read_graph

fbu = pytest.importorskip("ai_edge_litert.tools.flatbuffer_utils")
CORAL = pathlib.Path(os.environ.get("CORAL_TEST_DATA", ROOT.parent / "shared" / "coral_test_data"))
MOBILENET = CORAL / "mobilenet_v1_0.25_128_quant.tflite"
SPLIT_CONCAT = CORAL / "split_concat.tflite"
TWINS = sorted(pathlib.Path(p) for p in glob.glob(str(CORAL / "*_edgetpu.tflite"))
               if pathlib.Path(p.replace("_edgetpu.tflite", ".tflite")).exists())
needs_models = pytest.mark.skipif(not MOBILENET.exists() or not SPLIT_CONCAT.exists(),
                                  reason=f"Coral test models missing from {CORAL}")


def cli(*args):
    return subprocess.run([sys.executable, "-m", "compile", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, check=False, timeout=120)


def edited(tmp_path, source, edit, name="edited.tflite"):
    """A copy of ``source`` changed by ``edit(model)`` (flatbuffer object tree)."""
    model = fbu.read_model(str(source))
    edit(model)
    path = tmp_path / name
    fbu.write_model(model, str(path))
    return path


def op_code(model, builtin, version=1):
    """Index of a new operator code for ``builtin``."""
    code = fbu.schema_fb.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = builtin
    code.version = version
    model.operatorCodes.append(code)
    return len(model.operatorCodes) - 1


def placements(path):
    return [(p["placement"], p["status"]) for p in check_model(path)["ops"]]


@pytest.mark.skipif(not TWINS, reason=f"no X.tflite / X_edgetpu.tflite pairs in {CORAL}")
@pytest.mark.parametrize("compiled", TWINS, ids=[t.stem for t in TWINS])
def test_prediction_matches_the_real_compiler_op_by_op(compiled):
    source = pathlib.Path(str(compiled).replace("_edgetpu.tflite", ".tflite"))
    real = compiled_placement(source, compiled)
    predicted = check_model(source)["ops"]
    assert [(p["index"], p["type"]) for p in predicted] == [(r["index"], r["type"]) for r in real]
    mismatches = [(p["index"], p["type"], p["placement"], r["placement"])
                  for p, r in zip(predicted, real) if p["placement"] != r["placement"]]
    assert mismatches == []
    print(f"{source.name}: predicted {sum(p['placement'] == 'tpu' for p in predicted)} "
          f"TPU ops, real {sum(r['placement'] == 'tpu' for r in real)} of {len(real)}")


@needs_models
def test_compiled_placement_refuses_files_that_are_not_twins(tmp_path):
    with pytest.raises(ValueError, match="no edgetpu-custom-op"):
        compiled_placement(MOBILENET, MOBILENET)
    with pytest.raises(ValueError, match="ops its source does not have"):
        compiled_placement(MOBILENET, _standin_style_compiled(tmp_path))


def _standin_style_compiled(tmp_path):
    """split_concat with its first op swapped for an edgetpu-custom-op (not a mobilenet twin)."""
    def edit(model):
        code = fbu.schema_fb.OperatorCodeT()
        code.builtinCode = code.deprecatedBuiltinCode = fbu.schema_fb.BuiltinOperator.CUSTOM
        code.customCode, code.version = "edgetpu-custom-op", 1
        model.operatorCodes.append(code)
        model.subgraphs[0].operators[0].opcodeIndex = len(model.operatorCodes) - 1
    return edited(tmp_path, SPLIT_CONCAT, edit, "fake_edgetpu.tflite")


@needs_models
def test_unsupported_op_in_the_middle_sends_everything_after_it_to_the_cpu(tmp_path):
    graph = read_graph(MOBILENET)
    pool = [op.name for op in graph.ops].index("AVERAGE_POOL_2D")

    def edit(model):   # HARD_SWISH is not in Coral's list of Edge TPU operations
        model.subgraphs[0].operators[pool].opcodeIndex = op_code(
            model, fbu.schema_fb.BuiltinOperator.HARD_SWISH)
    got = check_model(edited(tmp_path, MOBILENET, edit))
    where = [p["placement"] for p in got["ops"]]
    assert where == ["tpu"] * pool + ["cpu"] * (len(where) - pool)
    assert got["ops"][pool]["status"] == optable.NOT_SUPPORTED
    assert {p["status"] for p in got["ops"][pool + 1:]} == {optable.ONE_SUBGRAPH}
    assert f"op {pool} (HARD_SWISH)" in got["ops"][pool + 1]["reason"]
    assert got["summary"] == {"total_ops": len(where), "tpu_ops": pool,
                              "cpu_ops": len(where) - pool, "at_risk_ops": 0, "edgetpu_subgraphs": 1,
                              "first_fall_through_op": pool + 1}
    assert any("predicted on the CPU" in line for line in warnings(got))


@needs_models
def test_a_cpu_op_before_the_edge_tpu_part_does_not_stop_the_ops_after_it(tmp_path):
    # The first CONCATENATION gets a fused RELU (Coral: "No fused activation function"): it
    # runs on the CPU, but reads only model inputs, so SPLIT and the second CONCATENATION,
    # which read its output, can still form the one Edge TPU part (as a float QUANTIZE at
    # the start of a real model does: yolov8s log in tests/data/edgetpu_compiler).
    def edit(model):
        model.subgraphs[0].operators[0].builtinOptions.fusedActivationFunction = 1
    got = check_model(edited(tmp_path, SPLIT_CONCAT, edit))
    assert [p["placement"] for p in got["ops"]] == ["cpu", "tpu", "tpu"]
    assert "fused activation" in got["ops"][0]["reason"]


def _mobilenet_op(name):
    return [op.name for op in read_graph(MOBILENET).ops].index(name)


def _set_dilation(model):
    model.subgraphs[0].operators[0].builtinOptions.dilationHFactor = 2


def _float_input(model):
    sg = model.subgraphs[0]
    sg.tensors[sg.inputs[0]].type = fbu.schema_fb.TensorType.FLOAT32


def _batch_of_two(model):
    sg = model.subgraphs[0]
    sg.tensors[sg.inputs[0]].shape = [2, 128, 128, 3]


def _pool_activation(model):
    model.subgraphs[0].operators[_mobilenet_op("AVERAGE_POOL_2D")] \
        .builtinOptions.fusedActivationFunction = 1


@needs_models
@pytest.mark.parametrize("edit, op, status, words", [
    (_set_dilation, 0, optable.UNSPECIFIED, "dilation 2x1"),
    (_float_input, 0, optable.BAD_TYPE, "float32"),
    (_batch_of_two, 0, optable.BAD_RANK, "3 innermost dimensions"),   # the status gh30 quotes
    (_pool_activation, "AVERAGE_POOL_2D", optable.UNSPECIFIED, "fused activation"),
])
def test_coral_limits_on_single_ops(tmp_path, edit, op, status, words):
    index = op if isinstance(op, int) else _mobilenet_op(op)
    got = check_model(edited(tmp_path, MOBILENET, edit))["ops"][index]
    assert (got["placement"], got["status"]) == ("cpu", status)
    assert words in got["reason"]


@needs_models
def test_op_version_above_the_table_refuses_the_whole_model(tmp_path):
    limit, _ = optable.version_limit("CONV_2D")

    def edit(model):
        for code in model.operatorCodes:
            if max(code.builtinCode, code.deprecatedBuiltinCode) == \
                    fbu.schema_fb.BuiltinOperator.CONV_2D:
                code.version = limit + 1
    got = check_model(edited(tmp_path, MOBILENET, edit))
    assert got["refused"] is True
    assert f"CONV_2D has version {limit + 1}" in got["problems"][0]
    assert got["summary"]["tpu_ops"] == 0
    assert all(p["placement"] == "cpu" for p in got["ops"])
    assert warnings(got)[0].startswith(f"{got['model']}: op 0 CONV_2D has version {limit + 1}")


@needs_models
def test_parameter_memory_against_on_chip_memory(monkeypatch):
    graph = read_graph(MOBILENET)
    constants = {t.index: t.constant_bytes for t in graph.tensors if t.is_constant}
    fits = check_model(MOBILENET)["memory"]
    assert fits["tpu_parameter_bytes"] == sum(constants.values())   # all ops map
    assert fits["fits_on_chip"] and fits["streamed_bytes_estimate"] == 0
    assert fits["on_chip_bytes"] == 8 << 20

    monkeypatch.setattr(optable, "USABLE_ON_CHIP_BYTES", 100 << 10)
    report = check_model(MOBILENET)
    assert not report["memory"]["fits_on_chip"]
    assert report["memory"]["streamed_bytes_estimate"] == sum(constants.values()) - (100 << 10)
    assert any("streamed" in line for line in warnings(report))


@needs_models
def test_predict_placement_interface_on_a_graph():
    graph = read_graph(SPLIT_CONCAT)
    got = predict_placement(graph)
    assert [set(p) for p in got] == [{"index", "type", "version", "placement", "status",
                                      "reason", "risk"}] * 3
    assert [p["type"] for p in got] == [op.name for op in graph.ops]


@needs_models
def test_cli_json_is_one_document_per_model(tmp_path):
    out = cli("check", MOBILENET, "--json")
    assert out.returncode == 0, out.stderr
    document = json.loads(out.stdout)
    assert len(document["ops"]) == len(read_graph(MOBILENET).ops)
    assert {"index", "type", "placement", "reason"} <= set(document["ops"][0])
    assert {"parameter_bytes", "tpu_parameter_bytes", "on_chip_bytes", "fits_on_chip"} \
        <= set(document["memory"])


@needs_models
def test_cli_table_for_a_run_folder_checks_the_int8_model_and_every_stage(tmp_path):
    run = tmp_path / "run"
    (run / "stages").mkdir(parents=True)
    shutil.copyfile(MOBILENET, run / "model_int8.tflite")
    stages = []
    for index, source in enumerate([MOBILENET, SPLIT_CONCAT]):
        shutil.copyfile(source, run / "stages" / f"stage_{index}.tflite")
        stages.append({"index": index, "name": f"stage_{index}", "model": runfolder.file_record(
            run, run / "stages" / f"stage_{index}.tflite")})
    manifest = runfolder.load(run, create=True)
    manifest.update(stages=stages, quantization={
        "int8_model": runfolder.file_record(run, run / "model_int8.tflite")})
    runfolder.save(run, manifest)
    assert [m["name"] for m in check_run(run)["models"]] == ["int8 model", "stage_0", "stage_1"]
    out = cli("check", run)
    assert out.returncode == 0, out.stderr
    for name in ("int8 model", "stage_0", "stage_1", "AVERAGE_POOL_2D", "SPLIT", "usable on-chip"):
        assert name in out.stdout

    (run / "stages" / "stage_1.tflite").write_bytes(b"changed")
    bad = cli("check", run)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "stage stage_1 model" in bad.stderr and "changed after it was recorded" in bad.stderr


def test_cli_errors_name_the_problem_without_a_traceback(tmp_path):
    garbage = tmp_path / "garbage.tflite"
    garbage.write_bytes(b"this is not a flatbuffer at all" * 4)
    empty_run = tmp_path / "run"
    runfolder.save(empty_run, runfolder.load(empty_run, create=True))
    compiled = sorted(CORAL.glob("*_edgetpu.tflite"))[:1]
    for target, words in [*[(c, "already compiled") for c in compiled],
                          (garbage, "is not a readable .tflite model"),
                          (tmp_path / "missing.tflite", "does not exist"),
                          (empty_run, "python -m quantize --run")]:
        out = cli("check", target)
        assert out.returncode == 2, (target, out.stdout)
        assert "Traceback" not in out.stderr
        assert words in out.stderr and str(target.name) in out.stderr
    with pytest.raises(CheckError, match="does not exist"):
        check_model(tmp_path / "missing.tflite")


@needs_models
def test_check_runs_without_tensorflow():
    script = (
        "import sys, json\n"
        "from compile.__main__ import main\n"
        f"code = main(['check', {str(MOBILENET)!r}, '--json'])\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'tf_keras', 'keras'))\n"
        "print('LOADED', json.dumps(loaded), code, file=sys.stderr)\n")
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                         text=True, check=False, timeout=120)
    assert out.returncode == 0, out.stderr
    line = next(x for x in out.stderr.splitlines() if x.startswith("LOADED"))
    assert line == "LOADED [] 0"


@needs_models
def test_versions_added_around_the_compilers_build_are_a_note_not_a_refusal(tmp_path):
    doubtful = sorted(op for op, version in optable.UNCERTAIN_VERSIONS
                      if version == optable.version_limit(op)[0] + 1)
    assert doubtful, "UNCERTAIN_VERSIONS should sit just above the table"
    graph = read_graph(CORAL / "mobilenet_v2_1.0_224_quant.tflite")
    if "ADD" not in {op.name for op in graph.ops} or "ADD" not in doubtful:
        pytest.skip("needs a model with ADD, and ADD among the uncertain versions")

    def edit(model):
        for code in model.operatorCodes:
            if max(code.builtinCode, code.deprecatedBuiltinCode) == fbu.schema_fb.BuiltinOperator.ADD:
                code.version = optable.version_limit("ADD")[0] + 1
    got = check_model(edited(tmp_path, CORAL / "mobilenet_v2_1.0_224_quant.tflite", edit))
    assert not got["refused"] and got["problems"] == []
    assert got["notes"] and all("ADD" in note and "2.6" in note for note in got["notes"])
    assert any("may refuse" in line for line in warnings(got))


@needs_models
def test_cli_json_for_a_run_folder(tmp_path):
    run = tmp_path / "run"
    (run / "stages").mkdir(parents=True)
    shutil.copyfile(SPLIT_CONCAT, run / "stages" / "stage_0.tflite")
    manifest = runfolder.load(run, create=True)
    manifest["stages"] = [{"index": 0, "name": "stage_0", "model": runfolder.file_record(
        run, run / "stages" / "stage_0.tflite")}]
    runfolder.save(run, manifest)
    out = cli("check", run, "--json")
    assert out.returncode == 0, out.stderr
    document = json.loads(out.stdout)
    assert document["run"] == str(run)
    assert [(m["name"], m["summary"]["total_ops"]) for m in document["models"]] == [("stage_0", 3)]


@needs_models
@pytest.mark.parametrize("builtin, words", [("LEAKY_RELU", "PReLU with a constant alpha"),
                                            ("HARD_SWISH", "x * relu6(x + 3) / 6")])
def test_an_unsupported_activation_gets_a_replacement_made_of_mapped_ops(tmp_path, builtin, words):
    graph = read_graph(MOBILENET)
    pool = [op.name for op in graph.ops].index("AVERAGE_POOL_2D")

    def edit(model):
        model.subgraphs[0].operators[pool].opcodeIndex = op_code(
            model, getattr(fbu.schema_fb.BuiltinOperator, builtin))
    got = check_model(edited(tmp_path, MOBILENET, edit))
    fixes = [f for f in got["fixes"] if f["type"] == builtin]
    assert [f["ops"] for f in fixes] == [[pool], [pool]]
    assert words in fixes[0]["fix"]
    followers = len(graph.ops) - pool - 1
    assert f"the {followers} supported op(s) after it" in fixes[1]["fix"]
