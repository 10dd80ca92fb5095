"""Partitioning real Coral models by each objective: bit-exact stage chains, plans, CLI, errors."""
import json

import pytest

import runfolder
from deploy.cli.actions import verify_run
from tflitegraph.graph import GraphError, read_graph
from quantize.stages import check_full_int8, plan_split, split_into
from tests.conftest import run_cli
from quantize.plan_options import PlanOptions

MOBILENET_V2 = "mobilenet_v2_1.0_224_quant.tflite"
QUIET = {"progress": lambda *_: None}
RUNS = 3   # profiling rounds: enough to order the ops, quick enough for a test


def _exact(result):
    return result["mismatching_outputs"] == 0 and result["max_abs_difference"] == 0


@pytest.mark.parametrize("balance", ["macs", "params", "latency"])
@pytest.mark.parametrize("stages", [2, 3, 4, 5])
def test_mobilenet_v2_splits_are_bit_exact(coral_data, tmp_path, balance, stages):
    out = tmp_path / "split"
    manifest = split_into(out, coral_data / MOBILENET_V2, PlanOptions(stages=stages, balance=balance, runs=RUNS), **QUIET)
    assert len(manifest["stages"]) == stages
    assert manifest["split"]["method"] == f"balanced-{balance}"
    plan = manifest["split"]["balance"]
    assert plan["objective"] == balance and len(plan["crossing_bytes"]) == stages - 1
    assert plan["max_over_mean"][balance if balance != "latency" else "latency_measured"] >= 1.0
    if balance == "latency":
        assert len(plan["stage_latency_ms_measured"]) == stages and plan["refinement_rounds"]
    result = verify_run(out, samples=2)
    assert _exact(result) and result["outputs_compared"] == 2


def test_objectives_choose_their_own_optimum(coral_data):
    """Each objective's plan is at least as good as the others' plans by its own measure."""
    graph = read_graph(str(coral_data / MOBILENET_V2))
    plans = {b: plan_split(graph, PlanOptions(stages=4, balance=b, runs=RUNS), **QUIET) for b in ("macs", "params")}
    worst = {b: {"macs": max(s.macs for s in p.stages), "params": max(s.parameter_bytes for s in p.stages)}
             for b, p in plans.items()}
    assert worst["macs"]["macs"] <= worst["params"]["macs"]
    assert worst["params"]["params"] <= worst["macs"]["params"]
    # Weights pile up at the end of MobileNetV2: balancing MACs leaves the last stage the heaviest in bytes.
    assert worst["macs"]["params"] > worst["params"]["params"]


def test_cut_inside_a_residual_block_by_name_is_bit_exact(coral_data, tmp_path):
    graph = read_graph(str(coral_data / MOBILENET_V2))
    add = next(op for op in graph.ops if op.name == "ADD")
    inside = graph.tensors[graph.ops[add.position - 2].outputs[0]].name  # before the block's last conv
    out = tmp_path / "residual"
    manifest = split_into(out, coral_data / MOBILENET_V2, PlanOptions(cut_after=[inside], runs=RUNS), **QUIET)
    assert len(manifest["split"]["crossing"][0]) == 2  # the block's input rides along to the ADD
    assert len(manifest["stages"][1]["inputs"]) == 2
    assert _exact(verify_run(out, samples=2))


@pytest.mark.parametrize("model", ["keras_lstm_mnist_ptq.tflite", "split_concat.tflite"])
@pytest.mark.parametrize("balance", ["macs", "params", "latency"])
def test_small_coral_models_split_exactly(coral_data, tmp_path, model, balance):
    graph = read_graph(str(coral_data / model))
    for stages in range(2, len(graph.ops) + 1):
        out = tmp_path / f"{stages}"
        manifest = split_into(out, coral_data / model, PlanOptions(stages=stages, balance=balance, runs=RUNS), **QUIET)
        assert len(manifest["stages"]) == stages
        assert _exact(verify_run(out, samples=3)), (model, balance, stages)


def _float_edged_model(path):
    """Full-int8 inside, float input and output converted by QUANTIZE/DEQUANTIZE ops (the converter default)."""
    import numpy as np

    from training.keras_setup import keras, tf
    model = keras.Sequential([keras.Input((6, 6, 1), batch_size=1), keras.layers.Conv2D(4, 3, activation="relu"),
                              keras.layers.Conv2D(2, 3), keras.layers.Flatten(), keras.layers.Dense(3)])
    rng = np.random.default_rng(0)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([rng.random((1, 6, 6, 1), np.float32)] for _ in range(10))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    path.write_bytes(converter.convert())
    return path


def test_float_edges_are_allowed_and_split_exactly(tmp_path):
    path = _float_edged_model(tmp_path / "float_edges.tflite")
    graph = read_graph(str(path))
    assert graph.ops[0].name == "QUANTIZE" and graph.tensors[graph.inputs[0]].dtype == "float32"
    assert graph.ops[-1].name == "DEQUANTIZE"
    manifest = split_into(tmp_path / "run", path, PlanOptions(stages=3, runs=RUNS), **QUIET)
    assert manifest["stages"][0]["inputs"][0]["dtype"] == "float32"
    assert _exact(verify_run(tmp_path / "run", samples=3))


def test_float_inside_the_graph_is_refused_naming_the_tensor(coral_data):
    from tflitegraph import schema as fb
    model = fb.read_model(str(coral_data / "keras_lstm_mnist_ptq.tflite"))
    sg = model.subgraphs[0]
    inner = sg.operators[2].outputs[0]
    sg.tensors[inner].type = fb.schema.TensorType.FLOAT32
    name = sg.tensors[inner].name.decode()
    with pytest.raises(GraphError, match=f"op 2 .*float32 tensor '{name}'"):
        check_full_int8(read_graph(fb.model_to_bytes(model)))


def test_plan_command_prints_the_table_without_writing(coral_data, tmp_path):
    result = run_cli("quantize", "plan", coral_data / MOBILENET_V2, "--stages", "3", "--profile-runs", "3",
                     env={"TMPDIR": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["stage", "ops", "count", "MACs", "params", "act", "in", "act", "out", "est.", "ms",
                                "TPU", "est.", "ms", "(usb3)"]
    rows = [line.split() for line in lines[1:4]]
    assert [r[0] for r in rows] == ["0", "1", "2"]
    assert sum(int(r[2]) for r in rows) == len(read_graph(str(coral_data / MOBILENET_V2)).ops)
    assert all(float(r[-2]) > 0 for r in rows)  # measured with the real interpreter
    assert all(float(r[-1]) > 0 for r in rows)  # the Edge TPU estimate
    assert "an estimate for one Edge TPU per stage over usb3" in result.stdout
    assert "objective: macs; max/mean per stage: macs" in result.stdout
    assert sum(line.startswith("cut ") for line in lines) == 2
    assert list(tmp_path.iterdir()) == []


def test_split_cli_by_latency_then_compile_and_deploy_unchanged(coral_data, tmp_path, standin_env):
    out = tmp_path / "run"
    result = run_cli("quantize", "split", coral_data / MOBILENET_V2, "--stages", "3", "--balance", "latency",
                     "--profile-runs", "3", "--out", out)
    assert result.returncode == 0, result.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["split"]["method"] == "balanced-latency"
    assert all(s["estimated_latency_ms"] > 0 for s in manifest["stages"])
    assert run_cli("compile", "--run", out, env=standin_env).returncode == 0
    verify = run_cli("deploy", "verify", "--run", out, "--samples", "2")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "0 mismatching outputs of 2" in verify.stdout
    assert runfolder.load(out)["deploy"]["verify"]["bit_exact"]


@pytest.mark.parametrize("args, message", [
    (["--stages", "67"], "has 66 ops, so it cannot be cut into 67 stages; use --stages 66 or fewer"),
    (["--cut-after", "MobilenetV2/Logits/Squeeze"], "is constant data"),
    (["--cut-after", "input"], "is a model input"),
    (["--cut-after", "MobilenetV2/Predictions/Softmax"], "last stage empty"),
    (["--cut-after", "expanded_conv_9/add,expanded_conv_2/add"], "not in graph order"),
])
def test_cli_errors_are_clear(coral_data, tmp_path, args, message):
    result = run_cli("quantize", "plan", coral_data / MOBILENET_V2, "--no-profile", *args)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


def test_plan_of_a_file_that_is_not_a_model(tmp_path):
    bogus = tmp_path / "bogus.tflite"
    bogus.write_bytes(b"\x00" * 64)
    result = run_cli("quantize", "plan", bogus, "--stages", "2")
    assert result.returncode == 2 and "not a readable .tflite model" in result.stderr


def test_plan_reads_a_run_folder_int8_model(tiny_run):
    result = run_cli("quantize", "plan", tiny_run, "--stages", "2", "--balance", "params", "--no-profile")
    assert result.returncode == 0, result.stderr
    assert "objective: params" in result.stdout
    assert [line.split()[0] for line in result.stdout.splitlines()[1:3]] == ["0", "1"]


def test_latency_can_be_profiled_with_the_builtin_kernels(coral_data, tmp_path):
    """A Raspberry Pi with tflite-runtime runs the built-in kernels: the plan can be timed on those."""
    model = coral_data / "mobilenet_v1_0.25_128_quant.tflite"
    out = tmp_path / "builtin"
    manifest = split_into(out, model, PlanOptions(stages=3, balance="latency", xnnpack=False, runs=RUNS), **QUIET)
    assert manifest["split"]["balance"]["profile"] == {"runs": 3, "threads": 1, "kernels": "builtin"}
    assert _exact(verify_run(out, samples=2))
    plain = split_into(tmp_path / "macs", model, PlanOptions(stages=3, runs=RUNS), **QUIET)
    assert plain["split"]["balance"]["profile"] is None
