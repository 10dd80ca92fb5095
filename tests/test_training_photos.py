"""Training on a folder as it comes from a phone: nested folders, a file that is no image, classes of
unequal size; what the user is told (one line per thing, the next command) and what the manifest keeps."""
import json

import numpy as np
import pytest
from PIL import Image

from tests.conftest import run_cli
from training.train import balanced_weights
from quantize.plan_options import PlanOptions
from quantize.qat import QatPolicy


def test_balanced_weights_make_every_class_count_the_same():
    labels = np.array([0] * 30 + [1] * 10)
    weights = balanced_weights(labels, 3)
    assert weights == {0: pytest.approx(40 / 90), 1: pytest.approx(40 / 30), 2: 0.0}
    assert 30 * weights[0] == pytest.approx(10 * weights[1])


@pytest.mark.slow
def test_a_folder_of_photos_trains_and_says_what_it_read_skipped_and_what_next(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "photos"
    for name, count, colour in (("red", 24, 0), ("green", 12, 1), ("blue", 7, 2)):
        for k in range(count):
            folder = root / name / ("more" if k % 2 else "")
            folder.mkdir(parents=True, exist_ok=True)
            pixels = rng.integers(0, 60, (40, 50, 3), dtype=np.uint8)
            pixels[..., colour] += 180
            Image.fromarray(pixels).save(folder / f"{k}.jpg" if k % 3 else folder / f"{k}.png")
    (root / "red" / "notes.txt").write_text("not a photo")
    run = tmp_path / "run"
    result = run_cli("training", "--dataset", "folder", "-o", f"path={root}", "-o", "size=32", "--model", "rgbnet",
                     "--epochs", "2", "--class-weights", "balanced", "--run", run)
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    assert "data: 43 images of 32x32x3 in 3 classes (blue 7, green 12, red 24)" in out
    assert result.stderr.count("WARNING: class 'blue' (7) has fewer than 10 images") == 1
    assert out.count("skipped 1 file(s) that are not readable images (first: ") == 1 and "notes.txt" in out
    assert "best epoch (lowest validation loss): " in out and f"next: python -m quantize --run {run}" in out
    assert "skipping" not in result.stderr, "no warning line per skipped file"
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["dataset"]["skipped_count"] == 1 and manifest["dataset"]["skipped"][0]["path"].endswith("notes.txt")
    assert manifest["dataset"]["class_counts"] == [7, 12, 24]
    training = manifest["training"]
    assert training["class_weights"] == "balanced" and training["best_epoch"] in (1, 2)
    assert training["stopped_early"] is False and training["input_normalization"] == {"mean": 0.0, "std": 255.0}
    quantized = run_cli("quantize", "--run", run, "--samples", "20", "--no-auto-qat")
    assert quantized.returncode == 0, quantized.stderr[-2000:]
    said = quantized.stdout + quantized.stderr
    assert said.count("skipped 1 file(s) that are not readable images") == 1, "once in this step too"
    assert "fewer than 10" not in said and "Warning" not in said, "the training step has said it"


def test_augmentation_names_are_checked():
    from training.batches import AugmentError, parse_augment
    assert parse_augment("photos") == ("flip", "rotate", "zoom", "contrast", "translate")
    assert parse_augment("flip,zoom") == ("flip", "zoom") and parse_augment(None) == ()
    with pytest.raises(AugmentError, match="unknown blur; choose from flip, rotate"):
        parse_augment("flip,blur")


def test_augmentation_changes_training_batches_only(shapes):
    from training.batches import batches
    indices = np.arange(8)
    plain = [x.numpy() for x, _ in batches(shapes.images, shapes.labels, indices, 8, (0.0, 255.0))]
    again = [x.numpy() for x, _ in batches(shapes.images, shapes.labels, indices, 8, (0.0, 255.0))]
    augmented = batches(shapes.images, shapes.labels, indices, 8, (0.0, 255.0), augment=("flip", "zoom"), seed=1)
    epochs = [next(iter(augmented))[0].numpy() for _ in range(2)]
    assert np.array_equal(plain[0], again[0]) and np.allclose(plain[0], shapes.images[:8] / 255.0)
    assert not np.allclose(epochs[0], epochs[1]), "a new random transform every epoch"
    assert 0.0 <= epochs[0].min() and epochs[0].max() <= 1.0


@pytest.mark.slow
def test_the_int8_model_of_an_augmented_training_has_no_augmentation_ops(tmp_path):
    from tflitegraph.graph import read_graph
    from quantize.run import quantize_run
    from training.config import TrainConfig
    from training.train import train
    ops = {}
    for name, augment in (("plain", ()), ("augmented", ("flip", "rotate", "zoom", "contrast", "translate"))):
        run = tmp_path / name
        train(str(run), TrainConfig("shapes", {"size": 24, "samples": 40}, "rgbnet", epochs=1, augment=augment),
              verbose=0)
        quantize_run(str(run), PlanOptions(stages=2), samples=20, qat=QatPolicy(auto=False))
        ops[name] = [op.name for op in read_graph((run / "model_int8.tflite").read_bytes()).ops]
    assert ops["augmented"] == ops["plain"]
