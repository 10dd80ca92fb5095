"""Training into a run folder: checkpoints, resume, refusal to clobber, manifest contents."""
import json

import numpy as np
import pytest

import datasets
import runfolder
from training.config import TrainConfig
from training.train import TrainingError, latest_checkpoint, train

SMALL = {"variants": 1}


@pytest.fixture(scope="module")
def one_epoch_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("train") / "run"
    train(str(run), TrainConfig("digits", SMALL, "splitnet", epochs=1), verbose=0)
    return run


def test_run_folder_has_model_checkpoint_history_and_data(one_epoch_run):
    run = one_epoch_run
    manifest = runfolder.load(run)
    assert (run / "model.keras").exists()
    assert latest_checkpoint(str(run)) == (1, str(run / "checkpoints" / "epoch_001.keras"))
    assert (run / "history.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    history = json.loads((run / "history.json").read_text())
    assert len(history["loss"]) == 1 and len(history["val_accuracy"]) == 1
    runfolder.verify_file(run, manifest["training"]["keras_model"], "model")
    assert manifest["training"]["boundaries"] == ["after_block1", "after_block2"]
    assert 0.0 <= manifest["accuracy"]["float"] <= 1.0


def test_saved_test_set_is_the_held_out_split(one_epoch_run):
    manifest = runfolder.load(one_epoch_run)
    section = manifest["dataset"]
    data = datasets.load_dataset(section["name"], **section["options"])
    splits = datasets.load_splits(runfolder.resolve(one_epoch_run, section["splits"]))
    with np.load(runfolder.resolve(one_epoch_run, section["test_set"])) as test:
        np.testing.assert_array_equal(test["indices"], splits["test"])
        np.testing.assert_array_equal(test["images"], data.images[splits["test"]])
        np.testing.assert_array_equal(test["labels"], data.labels[splits["test"]])
    assert not set(data.groups[splits["test"]]) & set(data.groups[splits["train"]])
    assert section["counts"]["test"] == len(splits["test"])


def test_resume_continues_from_the_last_checkpoint(one_epoch_run, tmp_path):
    import shutil
    run = tmp_path / "resumed"
    shutil.copytree(one_epoch_run, run)
    manifest = train(str(run), TrainConfig(epochs=2), resume=True, verbose=0)
    assert latest_checkpoint(str(run))[0] == 2
    history = json.loads((run / "history.json").read_text())
    assert len(history["loss"]) == 2  # epoch 1 kept from before, epoch 2 added
    assert manifest["training"]["epochs_run"] == 2
    assert manifest["dataset"]["options"]["variants"] == 1  # resumed with the run's own data set


def test_existing_run_is_not_overwritten_silently(one_epoch_run):
    with pytest.raises(TrainingError, match="--resume.*--overwrite"):
        train(str(one_epoch_run), TrainConfig("digits", SMALL, epochs=1), verbose=0)


def test_resume_of_nothing_is_refused(tmp_path):
    with pytest.raises(TrainingError, match="nothing to resume"):
        train(str(tmp_path / "new"), TrainConfig("digits", SMALL, epochs=1), resume=True, verbose=0)


def test_overwrite_refuses_a_folder_that_is_not_a_run(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(TrainingError, match="not a run folder"):
        train(str(tmp_path), TrainConfig("digits", SMALL, epochs=1), overwrite=True, verbose=0)
    assert (tmp_path / "precious.txt").exists()


def test_rgbnet_trains_on_shapes(tmp_path):
    run = tmp_path / "shapes"
    manifest = train(str(run), TrainConfig("shapes", {"size": 24, "samples": 40}, "rgbnet", epochs=1), verbose=0)
    assert manifest["dataset"]["input_spec"] == {"height": 24, "width": 24, "channels": 3}
    assert manifest["training"]["model"] == "rgbnet"


def test_rgbnet_learns_small_shapes_in_inference_mode(tmp_path):
    """With few steps per epoch, BatchNorm's moving statistics (what inference and int8 use) must
    still follow the batches: rgbnet with Keras' default momentum 0.99 scored 0.30 on its own train
    split in inference mode while fit reported 0.90, and 0.25 (chance) on test. ~5 s."""
    from training.keras_setup import keras
    run = tmp_path / "shapes"
    options = {"size": 24, "samples": 200}  # 560 train samples: 9 steps an epoch, 72 in all
    manifest = train(str(run), TrainConfig("shapes", options, "rgbnet", epochs=8, patience=8), verbose=0)
    history = json.loads((run / "history.json").read_text())
    data = datasets.load_dataset("shapes", **options)
    train_idx = datasets.load_splits(str(run / "data" / "splits.npz"))["train"]
    model = keras.models.load_model(run / "model.keras")
    _, inference_accuracy = model.evaluate(datasets.to_model_input(data.images[train_idx]),
                                           data.labels[train_idx], verbose=0)
    assert inference_accuracy > history["accuracy"][-1] - 0.1, (inference_accuracy, history["accuracy"])
    assert manifest["accuracy"]["float"] > 0.5  # chance is 0.25; measured 0.61


def test_rgbnet_keeps_its_boundaries_for_odd_and_tiny_inputs():
    from training import models
    for shape in ((7, 7, 3), (33, 21, 3)):
        model = models.build_model("rgbnet", shape, 4)
        assert [model.get_layer(b).name for b in models.BOUNDARIES["rgbnet"]] == ["after_block1", "after_block2"]
        assert model.output_shape == (None, 4)


def test_interrupted_training_resumes_with_the_runs_own_data(one_epoch_run, tmp_path):
    """A run stopped mid-fit has a manifest marked running and checkpoints but no final model."""
    import shutil

    from quantize.run import quantize_run
    run = tmp_path / "interrupted"
    shutil.copytree(one_epoch_run, run)
    manifest = runfolder.load(run)
    manifest["training"] = {"model": "splitnet", "status": "running"}
    runfolder.save(run, manifest)
    (run / "model.keras").unlink()
    with pytest.raises(runfolder.StepOrderError, match="did not finish.*--resume"):
        quantize_run(str(run))
    # Data set arguments given on resume are ignored in favour of the run's own.
    manifest = train(str(run), TrainConfig("shapes", {"size": 8}, epochs=2), resume=True, verbose=0)
    assert manifest["dataset"]["name"] == "digits" and manifest["training"]["status"] == "done"
    assert (run / "model.keras").exists()


def test_bad_model_or_data_leaves_no_folder_behind(tmp_path):
    from training.models import ModelError
    with pytest.raises(ModelError, match="unknown model 'resnet9000'.*splitnet"):
        train(str(tmp_path / "a"), TrainConfig("digits", SMALL, "resnet9000", epochs=1), verbose=0)
    with pytest.raises(datasets.DatasetError):
        train(str(tmp_path / "b"), TrainConfig("no_such_data", {}, epochs=1), verbose=0)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
