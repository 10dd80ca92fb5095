"""Quantization-aware training after PTQ: on request, automatically past the threshold, or refused."""
import collections

import numpy as np
import pytest

import runfolder
from deploy.cli.actions import verify_run
from tflitegraph import schema as fb
from tflitegraph.graph import find_tensor, read_graph
from quantize.ptq import QuantizeError
from quantize.qat import choose, op_counts, unfolded, wanted
from quantize.run import quantize_run
from quantize.stages import check_full_int8, split_into
from tests.conftest import copy_run, run_cli
from training.keras_setup import keras
from quantize.plan_options import PlanOptions
from quantize.qat import QatPolicy


def quiet(*_):
    pass


def conv_with_fused_relu(path):
    """How many CONV_2D ops carry a fused RELU (read with the schema, not with quantize.qat)."""
    model = fb.read_model(path)
    return sum(1 for op in model.subgraphs[0].operators if fb.op_name(model, op) == "CONV_2D"
               and op.builtinOptions.fusedActivationFunction == fb.schema.ActivationFunctionType.RELU)


def io_dtypes(graph):
    return {graph.tensors[t].dtype for t in list(graph.inputs) + list(graph.outputs)}


@pytest.mark.slow
def test_qat_on_request_records_both_and_keeps_a_splittable_full_int8_model(tiny_run, tmp_path):
    run = copy_run(tiny_run, tmp_path)
    result = run_cli("quantize", "--run", run, "--stages", 3, "--qat", "--no-auto-qat", "--qat-epochs", 1, "--samples", 50)
    assert result.returncode == 0, result.stderr
    assert "keeping" in result.stdout, result.stdout
    manifest = runfolder.load(run)
    section, accuracy = manifest["quantization"], manifest["accuracy"]

    # Both accuracies recorded side by side; the int8 one is the chosen model's.
    qat = section["qat"]
    assert qat["epochs"] == 1 and len(qat["history"]["loss"]) == 1 and qat["why"] == "asked for (--qat)"
    assert section["chosen"] == section["method"] and section["chosen"] in ("ptq", "qat")
    assert accuracy["ptq"] == section["ptq"]["accuracy"] and accuracy["qat"] == qat["accuracy"]
    assert accuracy["int8"] == section[section["chosen"]]["accuracy"]
    assert qat["drop_points"] == pytest.approx(100 * (accuracy["float"] - qat["accuracy"]))
    better = "qat" if qat["val_accuracy"] > section["ptq"]["val_accuracy"] else "ptq"
    assert section["chosen"] == better, section["reason"]
    chosen_file = runfolder.verify_file(run, section[section["chosen"]]["model"], "chosen model")
    int8 = runfolder.verify_file(run, section["int8_model"], "int8 model")
    assert int8.read_bytes() == chosen_file.read_bytes()

    # Per-sample predictions agree with the recorded accuracies.
    with np.load(runfolder.verify_file(run, section["predictions"], "predictions")) as saved:
        labels = saved["labels"]
        assert sorted(saved.files) == ["float", "labels", "ptq", "qat"]
        assert np.mean(saved["ptq"] == labels) == pytest.approx(section["ptq"]["accuracy"])
        assert np.mean(saved["qat"] == labels) == pytest.approx(qat["accuracy"])
        assert np.mean(saved["float"] == labels) == pytest.approx(accuracy["float"], abs=2 / len(labels))

    # The QAT model: full int8, uint8 I/O, BN folded and ReLU fused exactly as in the PTQ model.
    ptq_path = runfolder.verify_file(run, section["ptq"]["model"], "PTQ model")
    qat_path = runfolder.verify_file(run, qat["model"], "QAT model")
    ptq_graph, qat_graph = read_graph(str(ptq_path)), read_graph(str(qat_path))
    check_full_int8(qat_graph)
    assert io_dtypes(qat_graph) == {"uint8"}
    ops = collections.Counter(op.name for op in qat_graph.ops)
    assert ops == collections.Counter(op.name for op in ptq_graph.ops)
    assert not {"MUL", "ADD", "RELU", "SUB"} & set(ops), ops
    keras_model = keras.models.load_model(runfolder.resolve(run, manifest["training"]["keras_model"]))
    relus = sum(isinstance(layer, keras.layers.ReLU) for layer in keras_model.layers)
    assert relus > 0 and conv_with_fused_relu(qat_path) == conv_with_fused_relu(ptq_path) == relus
    assert qat["extra_ops"] == {} and qat["unfolded"] == {}
    # Boundaries keep their Keras names (no tfmot "quant_" prefix), at the same place as in PTQ.
    for boundary in manifest["training"]["boundaries"]:
        assert (qat_graph.producer[find_tensor(qat_graph, boundary)]
                == ptq_graph.producer[find_tensor(ptq_graph, boundary)])

    # The run's stages (of the chosen model) and a split of the QAT model are bit-exact chains.
    assert len(manifest["stages"]) == 3
    assert verify_run(str(run), samples=16)["bit_exact"] is True
    out = tmp_path / "qat_split"
    split_into(str(out), str(qat_path), PlanOptions(cut_after=manifest["training"]["boundaries"]), progress=quiet)
    assert len(runfolder.load(out)["stages"]) == 3
    assert verify_run(str(out), reference=str(qat_path), samples=16)["bit_exact"] is True


@pytest.mark.slow
def test_auto_qat_starts_when_ptq_loses_more_than_the_threshold(tiny_run, tmp_path):
    run = copy_run(tiny_run, tmp_path)
    manifest = quantize_run(str(run), PlanOptions(stages=2), samples=50, qat=QatPolicy(threshold=-100.0, epochs=1))
    section = manifest["quantization"]
    assert section["qat"] is not None and section["qat"]["why"].startswith("PTQ lost")
    assert section["warned"] is True and section["threshold_points"] == -100.0
    assert manifest["accuracy"]["qat"] == section["qat"]["accuracy"]
    assert len(manifest["stages"]) == 2


def test_no_auto_qat_refuses_qat_even_past_the_threshold(tiny_run, tmp_path):
    run = copy_run(tiny_run, tmp_path)
    (run / "model_int8_qat.tflite").write_bytes(b"stale from an earlier run")
    manifest = quantize_run(str(run), PlanOptions(stages=2), samples=50, qat=QatPolicy(threshold=-100.0, auto=False))
    section = manifest["quantization"]
    assert section["warned"] is True and section["qat"] is None
    assert section["method"] == section["chosen"] == "ptq" and "auto QAT is off" in section["reason"]
    assert manifest["accuracy"]["qat"] is None
    assert not (run / "model_int8_qat.tflite").exists()
    with np.load(runfolder.verify_file(run, section["predictions"], "predictions")) as saved:
        assert sorted(saved.files) == ["float", "labels", "ptq"]


def test_when_qat_runs_and_which_model_is_kept():
    assert wanted(asked=True, auto=False, drop=0.0, threshold=1.0)
    assert wanted(asked=False, auto=True, drop=0.6, threshold=0.5)
    assert not wanted(asked=False, auto=True, drop=0.5, threshold=0.5)
    assert not wanted(asked=False, auto=False, drop=9.0, threshold=0.5)
    assert choose(0.90, 0.95, {})[0] == "qat"
    assert choose(0.95, 0.95, {})[0] == "ptq"  # a tie keeps the model made without retraining
    chosen, reason = choose(0.90, 0.99, {"MUL": 2})
    assert chosen == "ptq" and "MUL" in reason


def test_unfolded_batch_norm_and_unfused_relu_are_found(tmp_path):
    """Conv -> BN -> ReLU (BN folds into the convolution, ReLU fuses) against Conv -> ReLU -> BN, whose
    batch norm cannot fold and stays as arithmetic ops."""
    from quantize.ptq import convert_int8
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1))
    conv = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    folded = keras.layers.ReLU()(keras.layers.BatchNormalization()(conv))
    apart = keras.layers.BatchNormalization()(keras.layers.ReLU()(conv))
    samples = np.random.default_rng(0).random((8, 8, 8, 1), np.float32)
    good = convert_int8(keras.Model(inputs, folded), samples)
    bad = convert_int8(keras.Model(inputs, apart), samples)
    assert unfolded(good, good) == {}
    found = unfolded(good, bad)
    assert {"MUL", "ADD"} & set(found), (op_counts(good), op_counts(bad))


def test_a_model_tfmot_cannot_wrap_keeps_ptq_unless_qat_was_asked_for(tiny_run, tmp_path):
    """GaussianNoise (identity at inference, so PTQ converts it) has no QAT support in tfmot."""
    run = copy_run(tiny_run, tmp_path)
    manifest = runfolder.load(run)
    trained = keras.models.load_model(runfolder.resolve(run, manifest["training"]["keras_model"]))
    inputs = keras.Input(trained.input_shape[1:], name="image")
    noisy = keras.Model(inputs, trained(keras.layers.GaussianNoise(0.01, name="noise")(inputs)))
    noisy.save(run / "model.keras")
    manifest["training"]["keras_model"] = runfolder.file_record(run, run / "model.keras")
    runfolder.save(run, manifest)

    kept = quantize_run(str(run), PlanOptions(stages=2), samples=50, qat=QatPolicy(threshold=-100.0, epochs=1))["quantization"]
    assert kept["chosen"] == "ptq" and kept["qat"] is None
    assert "automatic QAT could not run" in kept["reason"] and "not supported" in kept["reason"]
    assert not (run / "model_int8_ptq.tflite").exists()
    with pytest.raises(QuantizeError, match="cannot make a quantization-aware copy"):
        quantize_run(str(run), PlanOptions(stages=2), samples=50, qat=QatPolicy(asked=True, epochs=1))


def test_qat_epochs_must_be_positive(tiny_run, tmp_path):
    run = copy_run(tiny_run, tmp_path)
    result = run_cli("quantize", "--run", run, "--qat", "--qat-epochs", 0, "--samples", 20)
    assert result.returncode == 2
    assert "--qat-epochs must be at least 1" in result.stderr
