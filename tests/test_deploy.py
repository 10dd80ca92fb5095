"""deploy/: the stage chain is bit-exact with the unsplit model, compiled models and Edge TPUs are
handled without hardware, images are classified, and broken inputs give clear errors.

Everything runs on the real tflite interpreter. The Coral test models come from ``coral_data``;
the project's own model is ``tiny_run`` (read-only: tests copy it before changing anything).
"""
import pathlib
import re
import shutil

import numpy as np
import pytest
from PIL import Image

import runfolder
from deploy.core.chain import ChainError, StageChain, check_feed
from deploy.core.classify import whole_model_chain
from deploy.core.open import open_chain
from deploy.cli.actions import verify_run
from deploy.core.edgetpu import cpu_twin, is_compiled_model
from deploy.core.runtime import make_interpreter
from deploy.core.stages import load_stages
from quantize.stages import split_into
from tests.conftest import copy_run, run_cli
from quantize.plan_options import PlanOptions

MOBILENET = "mobilenet_v1_0.25_128_quant.tflite"
MOBILENET_TPU = "mobilenet_v1_0.25_128_quant_edgetpu.tflite"


# ---------------------------------------------------------------- helpers

def deploy(*args, **kwargs):
    return run_cli("deploy", *args, **kwargs)


def mismatches(stdout):
    """(mismatching, compared) from the verify result line, or None when there is no such line."""
    found = re.search(r"(?m)^(\d+) mismatching outputs of (\d+)", stdout)
    return (int(found.group(1)), int(found.group(2))) if found else None


def quiet(*_):
    pass


def rerecord(run, index, key="model"):
    """Re-records the sha256 of a changed stage file so the hash check passes."""
    manifest = runfolder.load(run)
    record = manifest["stages"][index][key]
    manifest["stages"][index][key] = runfolder.file_record(run, runfolder.resolve(run, record))
    runfolder.save(run, manifest)


def stage_path(run, index):
    return runfolder.resolve(run, runfolder.load(run)["stages"][index]["model"])


def largest_weight_span(path):
    """(offset, size) in the file of the largest int8/uint8 constant tensor (e.g. conv weights)."""
    data = pathlib.Path(path).read_bytes()
    interpreter = make_interpreter(path)
    best = None
    for detail in interpreter.get_tensor_details():
        try:
            value = interpreter.get_tensor(detail["index"])
        except ValueError:
            continue
        raw = value.tobytes()
        # Constant data appears verbatim, once, in the flatbuffer; activations do not.
        if value.dtype in (np.int8, np.uint8) and value.size > 16 and len(set(raw)) > 2 \
                and data.count(raw) == 1 and (best is None or value.size > best[1]):
            best = (data.find(raw), value.size)
    assert best, f"no constant weight tensor found in {path}"
    return best


def split_mobilenet(coral_data, out, stages):
    split_into(str(out), str(coral_data / MOBILENET), PlanOptions(stages=stages), progress=quiet)
    return out


def confident_test_image(run, tmp_path, name="digit.png"):
    """A held-out test image of the run, written as PNG; the one the unsplit model is surest about."""
    with np.load(run / "data" / "test_set.npz") as data:
        images = data["images"]
    reference = whole_model_chain(runfolder.resolve(run, runfolder.load(run)["quantization"]["int8_model"]))
    first = reference.outputs[0]["name"]
    raw = np.stack([reference.run({reference.inputs[0]["name"]: im[np.newaxis]})[first].reshape(-1)
                    for im in images]).astype(np.int64)
    top2 = np.sort(raw, axis=1)[:, -2:]
    pick = int(np.argmax(top2[:, 1] - top2[:, 0]))
    path = tmp_path / name
    Image.fromarray(images[pick][:, :, 0], mode="L").save(path)
    return path, images[pick]



# ---------------------------------------------------------------- bit-exact chain

@pytest.mark.parametrize("stages", [2, 3])
def test_split_coral_model_then_verify_is_bit_exact(coral_data, tmp_path, stages):
    run = tmp_path / f"mobilenet_{stages}"
    split = run_cli("quantize", "split", coral_data / MOBILENET, "--stages", stages, "--out", run)
    assert split.returncode == 0, split.stderr
    assert len(runfolder.load(run)["stages"]) == stages

    result = deploy("verify", "--run", run, "--reference", coral_data / MOBILENET, "--samples", 8)
    assert result.returncode == 0, result.stderr
    assert mismatches(result.stdout) == (0, 8), result.stdout
    recorded = runfolder.load(run)["deploy"]["verify"]
    assert recorded["bit_exact"] is True and recorded["samples"] == 8 and recorded["inputs"] == "random"


def test_verify_run_on_own_model_is_bit_exact(tiny_run, tmp_path, capsys):
    run = copy_run(tiny_run, tmp_path)
    result = verify_run(str(run), samples=16)
    assert result["bit_exact"] is True
    assert result["mismatching_outputs"] == 0 and result["outputs_compared"] == 16
    assert result["inputs"] == "test split images"
    assert mismatches(capsys.readouterr().out) == (0, 16)

    # A fresh split of the same int8 model, into more stages, through the library.
    int8 = runfolder.resolve(run, runfolder.load(run)["quantization"]["int8_model"])
    out = tmp_path / "four"
    manifest = split_into(str(out), str(int8), PlanOptions(stages=4), progress=quiet)
    assert len(manifest["stages"]) == 4
    result = verify_run(str(out), reference=str(int8), samples=16)
    assert result["bit_exact"] is True and result["max_abs_difference"] == 0


def test_verify_catches_a_changed_weight_whose_hash_was_re_recorded(coral_data, tmp_path):
    run = split_mobilenet(coral_data, tmp_path / "m2", 2)
    path = stage_path(run, 0)
    offset, size = largest_weight_span(path)
    data = bytearray(path.read_bytes())
    data[offset + size // 2] ^= 0x80
    path.write_bytes(bytes(data))
    rerecord(run, 0)

    result = deploy("verify", "--run", run, "--reference", coral_data / MOBILENET, "--samples", 8)
    assert result.returncode == 1, result.stdout + result.stderr
    found = mismatches(result.stdout)
    assert found is not None and found[1] == 8 and found[0] > 0, result.stdout
    assert runfolder.load(run)["deploy"]["verify"]["bit_exact"] is False
    summary = deploy("summary", "--run", run)
    assert summary.returncode == 0 and "MISMATCH" in summary.stdout


# ---------------------------------------------------------------- compiled (_edgetpu) models

def test_is_compiled_model_and_cpu_twin(coral_data, tmp_path):
    compiled, plain = coral_data / MOBILENET_TPU, coral_data / MOBILENET
    assert is_compiled_model(compiled) and is_compiled_model(compiled.read_bytes())
    assert not is_compiled_model(plain) and not is_compiled_model(plain.read_bytes())
    assert cpu_twin(compiled) == plain
    assert cpu_twin(plain) is None                       # not a compiled name
    alone = tmp_path / MOBILENET_TPU
    shutil.copy(compiled, alone)
    assert cpu_twin(alone) is None                       # compiled name, but no twin beside it


def test_verify_against_compiled_reference_uses_its_cpu_twin(coral_data, tmp_path):
    run = split_mobilenet(coral_data, tmp_path / "m2", 2)
    result = deploy("verify", "--run", run, "--reference", coral_data / MOBILENET_TPU, "--samples", 4)
    assert result.returncode == 0, result.stderr
    notes = [line for line in result.stdout.splitlines() if "CPU twin" in line]
    assert len(notes) == 1, result.stdout
    assert str(coral_data / MOBILENET) in notes[0] and "none is present" in notes[0]
    assert mismatches(result.stdout) == (0, 4)


def test_compiled_reference_without_twin_is_refused(coral_data, tmp_path):
    run = split_mobilenet(coral_data, tmp_path / "m2", 2)
    alone = tmp_path / "alone" / MOBILENET_TPU
    alone.parent.mkdir()
    shutil.copy(coral_data / MOBILENET_TPU, alone)
    result = deploy("verify", "--run", run, "--reference", alone, "--samples", 4)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert str(alone) in result.stderr and "compiled for the Edge TPU" in result.stderr
    assert "give the uncompiled model" in result.stderr


def test_stage_file_replaced_by_compiled_model_is_refused(tiny_run, coral_data, tmp_path):
    run = copy_run(tiny_run, tmp_path)
    path = stage_path(run, 1)
    shutil.copy(coral_data / MOBILENET_TPU, path)
    rerecord(run, 1)
    result = deploy("--run", run, "--eval")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert "edgetpu-custom-op" in result.stderr and str(path) in result.stderr
    assert "python -m quantize" in result.stderr


@pytest.mark.parametrize("reference", ["text", "invalid_model_invoking_error.tflite"])
def test_unloadable_reference_is_a_clear_error(coral_data, tmp_path, reference):
    run = split_mobilenet(coral_data, tmp_path / "m2", 2)
    if reference == "text":
        path = tmp_path / "notes.tflite"
        path.write_text("this is not a tflite model\n" * 10)
    else:
        path = coral_data / reference
    result = deploy("verify", "--run", run, "--reference", path, "--samples", 2)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert f"reference model {path} cannot be loaded" in result.stderr
    assert "give the unsplit full-int8 .tflite" in result.stderr


# ---------------------------------------------------------------- run-folder errors

def _drop_stages(run):
    manifest = runfolder.load(run)
    del manifest["stages"]
    runfolder.save(run, manifest)


@pytest.mark.parametrize("breakage, words", [
    ("missing stage", ["stage 1 file", "stage_1.tflite", "is missing", "Restore it or re-run"]),
    ("tampered stage", ["stage 1 file", "stage_1.tflite", "was changed", "restore the original"]),
    ("invalid json", ["manifest.json is not valid JSON", "restore it or re-run"]),
    ("schema version", ["schema_version 99", "reads version 1", "re-run the steps"]),
    ("no stages", ["'stages' part", "is missing", "run `python -m quantize --run"]),
])
def test_broken_run_folder_is_a_clear_error(tiny_run, tmp_path, breakage, words):
    run = copy_run(tiny_run, tmp_path)
    stage = stage_path(run, 1)
    manifest_file = run / "manifest.json"
    if breakage == "missing stage":
        stage.unlink()
    elif breakage == "tampered stage":
        stage.write_bytes(stage.read_bytes() + b"\0")
    elif breakage == "invalid json":
        manifest_file.write_text(manifest_file.read_text()[:-20])
    elif breakage == "schema version":
        manifest_file.write_text(manifest_file.read_text().replace('"schema_version": 1,', '"schema_version": 99,'))
    else:
        _drop_stages(run)
    for args in (["--run", run, "--eval"], ["verify", "--run", run, "--samples", 2]):
        result = deploy(*args)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert "Traceback" not in result.stderr
        for word in words:
            assert word in result.stderr, (word, result.stderr)


def test_missing_run_folder_says_to_train_first(tmp_path):
    missing = tmp_path / "never_trained"
    result = deploy("--run", missing, "--eval")
    assert result.returncode == 2
    assert f"run folder {missing} does not exist" in result.stderr
    assert f"python -m training --run {missing}" in result.stderr


# ---------------------------------------------------------------- chain wiring

def test_chain_rejects_stages_in_the_wrong_order(tiny_run):
    stages = load_stages(tiny_run, runfolder.load(tiny_run), tpus=[])
    StageChain(stages)                                   # the right order is fine
    with pytest.raises(ChainError) as caught:
        StageChain([stages[1], stages[0]])
    message = str(caught.value)
    assert f"stage {stages[0].index} needs tensor '{stages[0].inputs[0]['name']}'" in message
    assert "no earlier stage produces" in message and "python -m quantize" in message


def test_check_feed_names_the_tensor_and_what_is_wrong(tiny_run):
    _, chain = open_chain(tiny_run, tpus=[])
    tensor = chain.inputs[0]
    name, shape = tensor["name"], tensor["shape"]
    good = np.zeros(shape, dtype=np.uint8)
    check_feed({name: good}, chain.inputs, "chain")

    with pytest.raises(ChainError, match=re.escape(f"chain: input '{name}' has dtype float32, expected uint8")):
        chain.run({name: good.astype(np.float32)})
    wrong_shape = np.zeros(shape[1:], dtype=np.uint8)
    with pytest.raises(ChainError, match=re.escape(f"input '{name}' has shape {list(shape[1:])}, "
                                                   f"expected {list(shape)}")):
        check_feed({name: wrong_shape}, chain.inputs, "chain")
    with pytest.raises(ChainError, match=re.escape(f"input '{name}' is missing; given: other")):
        check_feed({"other": good}, chain.inputs, "chain")


# ---------------------------------------------------------------- --eval and summary

def test_eval_records_chain_accuracy_equal_to_int8_and_stage_latency(tiny_run, tmp_path):
    run = copy_run(tiny_run, tmp_path)
    before = deploy("summary", "--run", run)
    assert before.returncode == 0 and "not verified" in before.stdout and "bit-exact" not in before.stdout

    result = deploy("--run", run, "--eval")
    assert result.returncode == 0, result.stderr
    manifest = runfolder.load(run)
    accuracy = manifest["accuracy"]
    assert accuracy["chain"] == accuracy["int8"]        # a bit-exact chain predicts exactly the same
    evaluation = manifest["deploy"]["eval"]
    with np.load(run / "data" / "test_set.npz") as data:
        assert evaluation["samples"] == len(data["labels"])
    assert [s["index"] for s in evaluation["stages"]] == [s["index"] for s in manifest["stages"]]
    for stage in evaluation["stages"]:
        assert stage["placement"] == "cpu" and stage["reason"]
        assert stage["latency_ms_median"] > 0
    assert evaluation["latency_ms"]["p95"] >= evaluation["latency_ms"]["median"] > 0
    assert f"{accuracy['chain']:.4f}" in result.stdout

    verified = deploy("verify", "--run", run, "--samples", 8)
    assert verified.returncode == 0, verified.stderr
    summary = deploy("summary", "--run", run)
    assert summary.returncode == 0
    assert "chain vs unsplit int8: bit-exact (0 mismatching outputs of 8)" in summary.stdout
    assert f"chain {100 * accuracy['chain']:.2f}%" in summary.stdout
    estimates = manifest["split"]["balance"]["stage_edgetpu_ms_estimated"]
    assert len(estimates) == len(manifest["stages"]) and all(e > 0 for e in estimates)
    assert "TPU est." in summary.stdout and f"~{estimates[0]:.3f}" in summary.stdout
    assert "estimated ms on one Edge TPU per stage over usb3 (an estimate" in summary.stdout
