"""--isolate-unsupported: a CPU op in the middle no longer drags every later op off the Edge TPU."""
import json

import numpy as np
import pytest

import runfolder
from compile.preflight.check import check_model
from tests.conftest import run_cli


def _model_with_abs_in_the_middle(path):
    """Real TF conversion: two convolutions, ABS (not an Edge TPU op), then five more ops."""
    from training.keras_setup import keras, tf
    layers = keras.layers
    x = image = keras.Input((16, 16, 3), batch_size=1, name="image")
    x = layers.Conv2D(8, 3, padding="same", activation="relu", name="c1")(x)
    x = layers.Conv2D(8, 3, padding="same", name="c2")(x)
    x = layers.Lambda(tf.math.abs, name="unsupported_abs")(x)
    x = layers.Conv2D(8, 3, padding="same", activation="relu", name="c3")(x)
    x = layers.DepthwiseConv2D(3, padding="same", activation="relu", name="d4")(x)
    x = layers.Conv2D(16, 1, activation="relu", name="c5")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    model = keras.Model(image, layers.Dense(10, name="logits")(x))
    rng = np.random.default_rng(0)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([rng.random((1, 16, 16, 3), np.float32)] for _ in range(20))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = converter.inference_output_type = tf.uint8
    path.write_bytes(converter.convert())
    return path


@pytest.fixture(scope="module")
def abs_model(tmp_path_factory):
    return _model_with_abs_in_the_middle(tmp_path_factory.mktemp("isolate") / "abs_middle.tflite")


def test_isolating_moves_the_ops_after_the_cpu_op_back_to_the_tpu(abs_model, tmp_path, standin_env):
    whole = check_model(abs_model)["summary"]
    unsupported = [i for i, op in enumerate(check_model(abs_model)["ops"]) if op["type"] == "ABS"]
    assert whole["tpu_ops"] == unsupported[0]  # the compiler stops mapping at ABS
    out = tmp_path / "run"
    result = run_cli("quantize", "split", abs_model, "--isolate-unsupported", "--out", out)
    assert result.returncode == 0, result.stderr
    manifest = runfolder.load(out)
    stages = manifest["stages"]
    assert [s["target"] for s in stages] == ["tpu", "cpu", "tpu"]
    assert [s["edgetpu_estimate"] is None for s in stages] == [False, True, False]   # no TPU estimate for the CPU
    assert stages[1]["ops"] == ["ABS"]
    assert manifest["split"]["method"] == "isolate-macs"
    isolated_tpu_ops = sum(s["preflight"]["tpu_ops"] for s in stages)
    assert isolated_tpu_ops == whole["total_ops"] - 1  # every op but ABS
    assert all(s["preflight"]["cpu_ops"] == 0 for s in stages if s["target"] == "tpu")
    moved = isolated_tpu_ops - whole["tpu_ops"]
    assert moved == whole["total_ops"] - unsupported[0] - 1
    print(f"ops on the Edge TPU: {whole['tpu_ops']} unsplit, {isolated_tpu_ops} isolated ({moved} moved back)")

    compiled = run_cli("compile", "--run", out, env=standin_env)
    assert compiled.returncode == 0, compiled.stderr
    stages = runfolder.load(out)["stages"]
    assert stages[1]["compiled"] is None and stages[1]["compile"]["status"] == "skipped"
    assert all(s["compiled"] for s in stages if s["target"] == "tpu")
    assert "compiled 2 stage(s)" in compiled.stdout
    verify = run_cli("deploy", "verify", "--run", out, "--reference", abs_model, "--samples", "4")
    assert verify.returncode == 0 and "0 mismatching outputs of 4" in verify.stdout, verify.stdout + verify.stderr
    summary = run_cli("deploy", "summary", "--run", out).stdout
    assert "ops (predicted, not compiled): Edge TPU 0, CPU 1; on the CPU: ABS" in summary
    assert summary.count("ops (compiled): Edge TPU") == 2 and "isolated by" not in summary
    from deploy.core.open import open_chain
    _, chain = open_chain(out)
    assert "isolated by" in chain.stages[1].reason and chain.stages[1].placement == "cpu"


def test_isolating_with_more_stages_and_too_few(abs_model, tmp_path):
    result = run_cli("quantize", "plan", abs_model, "--isolate-unsupported", "--stages", "4", "--no-profile")
    assert result.returncode == 0, result.stderr
    assert "objective: isolate-macs" in result.stdout
    assert len([line for line in result.stdout.splitlines() if line.startswith("cut ")]) == 3
    result = run_cli("quantize", "plan", abs_model, "--isolate-unsupported", "--stages", "2", "--no-profile")
    assert result.returncode == 2 and "needs at least 3 stages" in result.stderr


def test_quantize_warns_before_the_compiler(abs_model, tmp_path):
    result = run_cli("quantize", "split", abs_model, "--stages", "2", "--out", tmp_path / "plain")
    assert result.returncode == 0, result.stderr
    assert "WARNING" in result.stdout and "ABS" in result.stdout
    manifest = json.loads((tmp_path / "plain" / "manifest.json").read_text())
    assert sum(s["preflight"]["cpu_ops"] for s in manifest["stages"]) > 0


def _stamped(coral_data, tmp_path):
    """MobileNet v1 with CONV_2D stamped version 6, as TF 2.9 wrote and compiler 16.0 refuses."""
    from tflitegraph import schema as fb
    model = fb.read_model(str(coral_data / "mobilenet_v1_0.25_128_quant.tflite"))
    for code in model.operatorCodes:
        if max(code.builtinCode, code.deprecatedBuiltinCode) == fb.schema.BuiltinOperator.CONV_2D:
            code.version = 6
    path = tmp_path / "stamped.tflite"
    path.write_bytes(fb.model_to_bytes(model))
    return path


def _conv_versions(path):
    from tflitegraph import schema as fb
    model = fb.read_model(str(path))
    return {c.version for c in model.operatorCodes
            if max(c.builtinCode, c.deprecatedBuiltinCode) == fb.schema.BuiltinOperator.CONV_2D}


def test_split_lowers_refused_op_versions_and_stays_exact(coral_data, tmp_path):
    stamped = _stamped(coral_data, tmp_path)
    assert check_model(stamped)["refused"]
    out = tmp_path / "lowered"
    result = run_cli("quantize", "split", stamped, "--stages", "2", "--out", out)
    assert result.returncode == 0, result.stderr
    assert "lowered for edgetpu_compiler 16.0: CONV_2D version 6 -> 1" in result.stdout
    manifest = runfolder.load(out)
    assert manifest["split"]["op_version_rewrites"][0]["op"] == "CONV_2D"
    for stage in manifest["stages"]:
        assert _conv_versions(out / stage["model"]["path"]) <= {1}
        assert not stage["preflight"]["refused"]
    verify = run_cli("deploy", "verify", "--run", out, "--reference", stamped, "--samples", "3")
    assert verify.returncode == 0 and "0 mismatching outputs of 3" in verify.stdout, verify.stdout


def test_keep_op_versions_keeps_them_and_warns(coral_data, tmp_path):
    stamped = _stamped(coral_data, tmp_path)
    out = tmp_path / "kept"
    result = run_cli("quantize", "split", stamped, "--stages", "2", "--keep-op-versions", "--out", out)
    assert result.returncode == 0, result.stderr
    manifest = runfolder.load(out)
    assert manifest["split"]["op_version_rewrites"] == []
    assert _conv_versions(out / manifest["stages"][0]["model"]["path"]) == {6}
    assert manifest["stages"][0]["preflight"]["refused"]
    assert "WARNING" in result.stdout and "CONV_2D" in result.stdout
