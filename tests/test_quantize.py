"""PTQ on a trained run: full int8, accuracy recorded, named cuts, step-order and bad-cut errors."""
import pytest

import runfolder
from deploy.core.runtime import make_interpreter
from tflitegraph.graph import GraphError, read_graph
from quantize.run import quantize_run
from tests.conftest import copy_run, run_cli
from quantize.plan_options import PlanOptions
from quantize.qat import QatPolicy


def test_int8_model_is_full_int8_with_uint8_io(tiny_run):
    manifest = runfolder.load(tiny_run)
    path = runfolder.verify_file(tiny_run, manifest["quantization"]["int8_model"], "int8 model")
    interpreter = make_interpreter(path)
    assert interpreter.get_input_details()[0]["dtype"].__name__ == "uint8"
    assert interpreter.get_output_details()[0]["dtype"].__name__ == "uint8"
    graph = read_graph(str(path))
    compute = [op for op in graph.ops if op.name not in ("QUANTIZE", "DEQUANTIZE")]
    assert all(graph.tensors[t].dtype in ("int8", "int32") for op in compute for t in op.inputs if t >= 0)
    assert not any(op.name in ("SHAPE", "STRIDED_SLICE", "PACK") for op in graph.ops)  # static batch 1


def test_accuracies_and_stages_are_recorded(tiny_run):
    manifest = runfolder.load(tiny_run)
    accuracy = manifest["accuracy"]
    assert 0 <= accuracy["int8"] <= 1 and 0 <= accuracy["float"] <= 1
    assert manifest["quantization"]["accuracy_drop_points"] == pytest.approx(
        100 * (accuracy["float"] - accuracy["int8"]))
    stages = manifest["stages"]
    assert len(stages) == 3
    for before, after in zip(stages, stages[1:]):
        assert {t["name"] for t in after["inputs"]} <= {t["name"] for t in before["outputs"]}
    assert stages[0]["inputs"][0]["dtype"] == "uint8"
    assert stages[-1]["outputs"][0]["dtype"] == "uint8"


def test_cut_after_block_names_and_int8_io(tiny_run, tmp_path, capsys):
    run = copy_run(tiny_run, tmp_path)
    manifest = quantize_run(str(run), PlanOptions(cut_after=["after_block1", "after_block2"]),
                            io_type="int8", samples=20, qat=QatPolicy(threshold=-100))
    assert "WARNING: int8 quantization lost" in capsys.readouterr().err  # threshold below any drop
    names = [s["outputs"][0]["name"] for s in manifest["stages"][:2]]
    assert "after_block1" in names[0] and "after_block2" in names[1]
    assert manifest["stages"][0]["inputs"][0]["dtype"] == "int8"
    assert manifest["split"]["method"] == "cut-after"


def test_unknown_cut_name_fails_with_suggestions(tiny_run, tmp_path):
    run = copy_run(tiny_run, tmp_path)
    with pytest.raises(GraphError, match="no tensor or layer named 'after_blok1'.*after_block1"):
        quantize_run(str(run), PlanOptions(cut_after=["after_blok1"]), samples=10)


def test_quantize_before_training_says_what_to_run(tmp_path):
    result = run_cli("quantize", "--run", tmp_path / "empty")
    assert result.returncode == 2
    assert "python -m training --run" in result.stderr


def test_quantize_split_cli_on_a_user_model(coral_data, tmp_path):
    out = tmp_path / "split"
    result = run_cli("quantize", "split", coral_data / "mobilenet_v1_0.25_128_quant.tflite",
                     "--stages", 3, "--out", out)
    assert result.returncode == 0, result.stderr
    assert len(runfolder.load(out)["stages"]) == 3
    bad = run_cli("quantize", "split", coral_data / "mobilenet_v1_0.25_128_quant.tflite",
                  "--cut-after", "no_such_layer", "--out", tmp_path / "bad")
    assert bad.returncode == 2 and "no tensor or layer named 'no_such_layer'" in bad.stderr
    invalid = run_cli("quantize", "split", coral_data / "bird.bmp", "--out", tmp_path / "bmp")
    assert invalid.returncode == 2 and "not a readable .tflite model" in invalid.stderr
