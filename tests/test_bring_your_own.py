"""A model brought from elsewhere: Coral's own MobileNetV2 with its label file, split and run as its makers run it.

Its uint8 input (scale 1/128, zero point 128) takes the raw pixels, its last op is a SOFTMAX (its
output is probabilities already) and its classes are named by Coral's imagenet_labels.txt; deploy
must give what a direct call of the unsplit model on the raw pixels gives.
"""
import json
import re

import numpy as np
import pytest
from PIL import Image

import runfolder
from datasets.labels import LabelsError, labels_of, read_labels
from tests.conftest import run_cli

MODEL = "mobilenet_v2_1.0_224_quant.tflite"


def direct_top3(model, image, labels):
    """The unsplit model on the image's raw uint8 pixels (resized bilinearly), read as it answers."""
    from ai_edge_litert.interpreter import Interpreter
    interpreter = Interpreter(model_path=str(model))
    interpreter.allocate_tensors()
    detail = interpreter.get_input_details()[0]
    pixels = np.asarray(Image.open(image).convert("RGB").resize((224, 224), Image.BILINEAR), np.uint8)
    interpreter.set_tensor(detail["index"], pixels[np.newaxis])
    interpreter.invoke()
    out = interpreter.get_output_details()[0]
    scale, zero = out["quantization"]
    scores = (interpreter.get_tensor(out["index"])[0].astype(np.int32) - zero) * scale
    return [(labels[k], float(scores[k])) for k in np.argsort(-scores)[:3]]


def printed_top3(stdout, image):
    line = next(x for x in stdout.splitlines() if x.startswith(f"{image}: "))
    found = re.findall(r"(.+?) \((\d\.\d{3})\)(?:, |$)", line.split(": ", 1)[1])
    return [(name, float(score)) for name, score in found]


@pytest.mark.parametrize("stages", [2, 4])
def test_coral_mobilenet_v2_split_gives_its_own_labels_and_probabilities(coral_data, tmp_path, stages):
    run, labels_file = tmp_path / "m2", coral_data / "imagenet_labels.txt"
    split = run_cli("quantize", "split", coral_data / MODEL, "--stages", stages, "--out", run, "--labels", labels_file)
    assert split.returncode == 0, split.stderr[-2000:]
    assert "the uint8 input is the raw pixels" in split.stdout and "output: probabilities" in split.stdout
    manifest = runfolder.load(run)
    assert manifest["output"]["kind"] == "probabilities" and len(labels_of(manifest)) == 1001
    assert manifest["input"]["normalization"] == {"mean": 128.0, "std": 128.0}
    labels = read_labels(labels_file)
    images = [coral_data / "cat.bmp", coral_data / "bird.bmp"]
    result = run_cli("deploy", "--run", run, "--image", *images, "--resize")
    assert result.returncode == 0, result.stderr[-2000:]
    for image in images:
        expected, got = direct_top3(coral_data / MODEL, image, labels), printed_top3(result.stdout, image)
        assert [name for name, _ in got] == [name for name, _ in expected], (got, expected)
        assert np.allclose([s for _, s in got], [s for _, s in expected], atol=1 / 256 + 5e-4), (got, expected)
    assert printed_top3(result.stdout, images[0])[0][0] == "Egyptian cat"


def test_label_files_in_both_formats(tmp_path):
    plain = tmp_path / "plain.txt"
    plain.write_text("background\ntench, Tinca tinca\n\n")
    numbered = tmp_path / "numbered.txt"
    numbered.write_text("0  cat\n2: dog\n")
    assert read_labels(plain) == ["background", "tench, Tinca tinca"]
    assert read_labels(numbered) == ["cat", "1", "dog"]
    twice = tmp_path / "twice.txt"
    twice.write_text("0 cat\n0 dog\n")
    with pytest.raises(LabelsError, match="names class 0 twice"):
        read_labels(twice)
    with pytest.raises(LabelsError, match="cannot be read"):
        read_labels(tmp_path / "missing.txt")


def test_split_refuses_what_the_runtime_refuses_compiled_models_and_a_full_folder(coral_data, tmp_path):
    renamed = tmp_path / "renamed.tflite"
    data = bytearray((coral_data / "mobilenet_v1_0.25_128_quant.tflite").read_bytes())
    data[4:8] = b"XXXX"
    renamed.write_bytes(bytes(data))
    result = run_cli("quantize", "split", renamed, "--stages", 2, "--out", tmp_path / "a")
    assert result.returncode == 2 and "flatbuffer identifier is b'XXXX', not b'TFL3'" in result.stderr
    assert not (tmp_path / "a" / "stage_0.tflite").exists()
    result = run_cli("quantize", "split", coral_data / "mobilenet_v1_0.25_128_quant_edgetpu.tflite", "--stages", 2,
                     "--out", tmp_path / "b")
    assert result.returncode == 2 and "already compiled for the Edge TPU" in result.stderr
    assert "the file without _edgetpu" in result.stderr and "Traceback" not in result.stderr
    out = tmp_path / "c"
    assert run_cli("quantize", "split", coral_data / "mobilenet_v1_0.25_128_quant.tflite", "--stages", 3,
                   "--out", out).returncode == 0
    (out / "bench.png").write_bytes(b"stale")
    again = run_cli("quantize", "split", coral_data / "mobilenet_v1_0.25_128_quant.tflite", "--stages", 2, "--out", out)
    assert again.returncode == 2 and "--overwrite" in again.stderr
    assert len(json.loads((out / "manifest.json").read_text())["stages"]) == 3, "left as it was"
    again = run_cli("quantize", "split", coral_data / "mobilenet_v1_0.25_128_quant.tflite", "--stages", 2, "--out", out,
                    "--overwrite")
    assert again.returncode == 0 and not (out / "bench.png").exists()
    assert len(runfolder.load(out)["stages"]) == 2 and not (out / "stage_2.tflite").exists()


def test_input_contract_options_are_checked_and_recorded(coral_data, tmp_path):
    model = coral_data / "mobilenet_v1_0.25_128_quant.tflite"
    result = run_cli("quantize", "split", model, "--out", tmp_path / "a", "--input-range", "0,2")
    assert result.returncode == 2 and "choose one of -1,1 | 0,1 | 0,255" in result.stderr
    result = run_cli("quantize", "split", model, "--out", tmp_path / "b", "--mean", "3")
    assert result.returncode == 2 and "--mean and --std go together" in result.stderr
    result = run_cli("quantize", "split", model, "--out", tmp_path / "c", "--input-range", "0,1")
    assert result.returncode == 0, result.stderr[-2000:]
    section = runfolder.load(tmp_path / "c")["input"]
    assert section == {"normalization": {"mean": 0.0, "std": 255.0}, "source": "--input-range 0,1"}


def test_summary_columns_stay_apart_and_name_crossing_tensors_as_the_plan_does(coral_data, tmp_path):
    run = tmp_path / "m2"
    split = run_cli("quantize", "split", coral_data / MODEL, "--stages", 2, "--out", run)
    assert split.returncode == 0, split.stderr[-2000:]
    cut = next(line for line in split.stdout.splitlines() if line.strip().startswith("cut 0"))
    crossing = cut.split("tensor(s): ")[1].split(", ")
    summary = run_cli("deploy", "summary", "--run", run)
    assert summary.returncode == 0, summary.stderr
    manifest = runfolder.load(run)
    rows = [line.split() for line in summary.stdout.splitlines() if re.match(r"^\d+\s", line)]
    for row, stage in zip(rows, manifest["stages"]):
        assert row[1] == f"{stage['model']['bytes']:,}" and row[2] == f"{stage['parameter_bytes']:,}", row
    second = next(line for line in summary.stdout.splitlines() if line.startswith("1 "))
    assert all(f"{name} " in second for name in crossing), (crossing, second)


def test_any_run_is_measured_on_a_labelled_folder_matched_to_its_labels(coral_data, tmp_path):
    run = tmp_path / "m2"
    assert run_cli("quantize", "split", coral_data / MODEL, "--stages", 2, "--out", run, "--labels",
                   coral_data / "imagenet_labels.txt").returncode == 0
    photos = tmp_path / "photos"
    for name, source in (("Egyptian cat", "cat.bmp"), ("chickadee", "bird.bmp")):
        (photos / name).mkdir(parents=True)
        image = Image.open(coral_data / source).convert("RGB")
        for k, box in enumerate(((0, 0, 400, 300), (60, 20, 500, 340), (0, 0, 512, 340))):
            image.crop(box).save(photos / name / f"{k}.png")
        image.transpose(Image.FLIP_LEFT_RIGHT).save(photos / name / "flipped.jpg")
    result = run_cli("deploy", "--run", run, "--eval", "--dataset", "folder", "-o", f"path={photos}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "8 images in 2 classes, matched to the run's labels by name" in result.stdout
    section = runfolder.load(run)["deploy"]["eval_data"]
    assert section["samples"] == 8 and [c["name"] for c in section["per_class"]] == ["Egyptian cat", "chickadee"]
    matrix = np.asarray(section["confusion"]["matrix"])
    assert matrix.shape == (2, 3) and matrix.sum() == 8 and section["confusion"]["classes"][-1] == "other"
    assert section["accuracy"] == pytest.approx(np.trace(matrix[:, :2]) / 8)
    assert section["accuracy"] >= 0.75, section   # crops and a mirror image of the cat and the bird
    report = run_cli("deploy", "report", "--run", run, "--no-eval")
    assert report.returncode == 0, report.stderr[-2000:]
    html = (run / "report.html").read_text()
    assert 'id="own-data-confusion"' in html and "Egyptian cat" in html

    (photos / "not a label").mkdir()
    Image.open(coral_data / "cat.bmp").save(photos / "not a label" / "x.png")
    wrong = run_cli("deploy", "--run", run, "--eval", "--dataset", "folder", "-o", f"path={photos}")
    assert wrong.returncode == 2 and "'not a label'" in wrong.stderr and "Traceback" not in wrong.stderr


def test_a_split_run_sends_nobody_in_a_circle(coral_data, tmp_path):
    run = tmp_path / "m1"
    assert run_cli("quantize", "split", coral_data / "mobilenet_v1_0.25_128_quant.tflite", "--out", run).returncode == 0
    evaluation = run_cli("deploy", "--run", run, "--eval")
    assert evaluation.returncode == 2 and f"python -m deploy --eval --run {run} --dataset folder" in evaluation.stderr
    quantized = run_cli("quantize", "--run", run)
    assert quantized.returncode == 2 and "quantized already" in quantized.stderr
    assert "python -m training --run" not in evaluation.stderr + quantized.stderr


def _direct_scores(model, pixels):
    from ai_edge_litert.interpreter import Interpreter
    interpreter = Interpreter(model_path=str(model))
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], pixels[np.newaxis])
    interpreter.invoke()
    out = interpreter.get_output_details()[0]
    scale, zero = out["quantization"]
    return (interpreter.get_tensor(out["index"])[0].astype(np.float64) - zero) * scale


def test_colour_order_and_resize_method_of_the_contract_reach_the_model(coral_data, tmp_path):
    """A model said to take BGR, resized nearest: deploy --image feeds exactly those pixels (its scores equal
    a direct call on them), and the report of the contract says so; the default contract feeds other pixels."""
    model, image = coral_data / "mobilenet_v1_0.25_128_quant.tflite", coral_data / "cat.bmp"
    run = tmp_path / "bgr"
    split = run_cli("quantize", "split", model, "--out", run, "--color-order", "BGR", "--resize-method", "nearest")
    assert split.returncode == 0, split.stderr[-2000:]
    assert "BGR, other sizes resized nearest" in split.stdout
    assert runfolder.load(run)["input"]["normalization"] == {"mean": 128.0, "std": 128.0}, "still read from the model"
    rgb = np.asarray(Image.open(image).convert("RGB").resize((128, 128), Image.NEAREST), np.uint8)
    expected = _direct_scores(model, np.ascontiguousarray(rgb[:, :, ::-1]))
    as_trained = _direct_scores(model, np.asarray(Image.open(image).convert("RGB").resize((128, 128), Image.BILINEAR)))
    result = run_cli("deploy", "--run", run, "--image", image, "--json", "--top-k", "5")
    assert result.returncode == 0, result.stderr[-2000:]
    top = json.loads(result.stdout.strip().splitlines()[-1])["top"]
    assert np.allclose([t["score"] for t in top], expected[[t["id"] for t in top]], atol=1e-6), "each its own score"
    assert np.allclose([t["score"] for t in top], np.sort(expected)[::-1][:5], atol=1e-6), "and the five best"
    assert not np.array_equal(expected, as_trained), "the test needs a contract that changes the pixels"


def test_a_tampered_colour_order_is_named(coral_data, tmp_path):
    run = tmp_path / "bgr"
    assert run_cli("quantize", "split", coral_data / "mobilenet_v1_0.25_128_quant.tflite", "--out", run).returncode == 0
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["input"]["color_order"] = "GBR"
    (run / "manifest.json").write_text(json.dumps(manifest))
    result = run_cli("deploy", "--run", run, "--image", coral_data / "cat.bmp")
    assert result.returncode == 2 and "input.color_order" in result.stderr and "Traceback" not in result.stderr


def test_a_damaged_split_run_names_the_command_that_remakes_it_and_that_command_works(coral_data, tmp_path):
    run = tmp_path / "coral"
    model = coral_data / "mobilenet_v1_0.25_128_quant.tflite"
    made = run_cli("quantize", "split", model, "--stages", 2, "--out", run, "--labels", coral_data / "imagenet_labels.txt",
                   "--input-range", "-1,1", "--color-order", "BGR")
    assert made.returncode == 0, made.stderr[-2000:]
    manifest = json.loads((run / "manifest.json").read_text())
    original = {key: manifest[key] for key in ("labels", "input")}
    manifest["stages"][1]["inputs"][0]["shape"][1] += 1
    (run / "manifest.json").write_text(json.dumps(manifest))
    broken = run_cli("deploy", "--run", run, "--image", coral_data / "cat.bmp")
    assert broken.returncode == 2 and "Traceback" not in broken.stderr, broken.stderr
    command = re.search(r"re-run `python -m (quantize split [^`]+)`", broken.stderr)
    assert command and "python -m quantize --run" not in broken.stderr, broken.stderr
    assert run_cli(*command.group(1).split()).returncode == 0, "the command the message names works as given"
    remade = runfolder.load(run)
    assert len(remade["stages"]) == 2 and {key: remade[key] for key in original} == original, "and loses nothing"
    assert run_cli("deploy", "--run", run, "--image", coral_data / "cat.bmp").returncode == 0
