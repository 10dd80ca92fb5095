"""A Keras model trained elsewhere, brought into a run folder: every later step works on it."""
import json

import numpy as np
import pytest
from PIL import Image

import runfolder
from tests.conftest import run_cli

pytestmark = pytest.mark.slow


def _photos(root):
    rng = np.random.default_rng(0)
    for name, colour in (("red", 0), ("green", 1), ("blue", 2)):
        (root / name).mkdir(parents=True)
        for k in range(30):
            pixels = rng.integers(0, 90, (40, 50, 3), dtype=np.uint8)
            pixels[..., colour] += 150
            Image.fromarray(pixels).save(root / name / f"{k}.png")
    return root


def _ok(result):
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result


def test_a_keras_model_from_elsewhere_goes_through_every_step_as_a_trained_one(tmp_path):
    from training.keras_setup import keras
    photos = _photos(tmp_path / "photos")
    trained = tmp_path / "trained"
    _ok(run_cli("training", "--dataset", "folder", "-o", f"path={photos}", "-o", "size=32", "--model", "rgbnet",
                "--epochs", "3", "--run", trained))
    # "Trained elsewhere": the same network ending in a softmax, saved as .h5, with a label file of its own order.
    logits = keras.models.load_model(trained / "model.keras")
    model = keras.Model(logits.input, keras.layers.Softmax(name="probabilities")(logits.output))
    model.save(tmp_path / "elsewhere.h5")
    labels = tmp_path / "labels.txt"
    labels.write_text("0 blue\n1 green\n2 red\n")
    run = tmp_path / "imported"
    imported = _ok(run_cli("training", "import", tmp_path / "elsewhere.h5", "--run", run, "-o", f"path={photos}",
                           "--labels", labels))
    assert "input: (pixels - 0) / 255: assumed" in imported.stdout
    assert "next: python -m quantize --run" in imported.stdout
    ours, theirs = runfolder.load(trained), runfolder.load(run)
    assert theirs["accuracy"]["float"] == pytest.approx(ours["accuracy"]["float"]), "same model, same test split"
    assert theirs["labels"]["names"] == ["blue", "green", "red"] == theirs["dataset"]["class_names"]
    _ok(run_cli("quantize", "--run", trained, "--stages", 2, "--samples", 40, "--no-auto-qat"))
    _ok(run_cli("quantize", "--run", run, "--stages", 2, "--samples", 40, "--no-auto-qat"))
    ours, theirs = runfolder.load(trained), runfolder.load(run)
    assert theirs["output"]["kind"] == "probabilities" and ours["output"]["kind"] == "logits"
    assert abs(theirs["accuracy"]["int8"] - ours["accuracy"]["int8"]) <= 2 / 18 + 1e-9, "within the int8 noise"
    evaluation = _ok(run_cli("deploy", "--run", run, "--eval"))
    assert "chain accuracy on" in evaluation.stdout
    assert _ok(run_cli("deploy", "verify", "--run", run, "--samples", 8)).stdout.count("0 mismatching outputs") == 1
    picture = next((photos / "red").iterdir())
    answer = json.loads(_ok(run_cli("deploy", "--run", run, "--image", picture, "--json")).stdout.splitlines()[0])
    assert answer["top"][0]["label"] == "red" and answer["top"][0]["score"] > 0.5, answer
    _ok(run_cli("deploy", "report", "--run", run))
    assert (run / "report.html").exists()


def test_what_cannot_be_imported_says_what_to_do(tmp_path, coral_data):
    result = run_cli("training", "import", coral_data / "mobilenet_v1_0.25_128_quant.tflite", "--run", tmp_path / "a")
    assert result.returncode == 2 and "python -m quantize split" in result.stderr and "Traceback" not in result.stderr
    (tmp_path / "broken.keras").write_bytes(b"not a zip")
    result = run_cli("training", "import", tmp_path / "broken.keras", "--run", tmp_path / "b")
    assert result.returncode == 2 and "cannot be read as a tf_keras" in result.stderr
    result = run_cli("training", "import", tmp_path / "broken.keras", "--run", tmp_path / "c", "--mean", "1")
    assert result.returncode == 2 and "--mean with --std" in result.stderr
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
