"""Backbones for transfer learning: weights from a local file are really used, block ends are named,
unsuitable choices are refused with the fix, and every backbone goes to full int8 with a uint8 input
that is the raw pixels, maps to the Edge TPU in the pre-flight check, and splits bit-exactly."""
import re

import numpy as np
import pytest

from deploy.core.classify import image_feed, raw_pixels_exact
from deploy.core.open import open_chain
from deploy.cli.actions import verify_run
from training.backbones import BACKBONES, set_trainable
from training.keras_setup import keras
from training.models import ModelError, build_model, choose_model, exit_output_name
from quantize.plan_options import PlanOptions
from quantize.qat import QatPolicy

SHAPE = (96, 96, 3)


def test_a_local_weights_file_is_what_the_backbone_computes_with(tmp_path):
    keras.utils.set_random_seed(1)
    source = keras.applications.MobileNetV2(input_shape=SHAPE, include_top=False, weights=None, alpha=0.35)
    path = tmp_path / "mobilenet_v2_0.35_no_top.h5"
    source.save_weights(path)
    x = np.random.default_rng(0).uniform(-1, 1, (2, *SHAPE)).astype(np.float32)
    expected = source(x, training=False).numpy()

    def features(model):
        return keras.Model(model.input, model.get_layer("out_relu").output)(x, training=False).numpy()
    keras.utils.set_random_seed(2)
    loaded = build_model("mobilenet_v2", SHAPE, 4, alpha=0.35, weights=str(path))
    random = build_model("mobilenet_v2", SHAPE, 4, alpha=0.35, weights=None)
    def off(got):   # relative: a randomly initialised MobileNet's activations are tiny
        return float(np.abs(got - expected).max() / np.abs(expected).max())
    assert np.abs(expected).max() > 0
    assert off(features(loaded)) < 1e-4
    assert off(features(random)) > 0.1, "without the file the weights differ"


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_block_ends_are_named_at_a_quarter_eighth_sixteenth_and_thirty_second(name):
    model = build_model(name, SHAPE, 3)
    sizes = [model.get_layer(b).output.shape[1] for b in BACKBONES[name].boundaries]
    assert sizes == [24, 12, 6, 3]
    with_exits = build_model(name, SHAPE, 3, exits=list(BACKBONES[name].boundaries[1:3]))
    assert with_exits.output_names[1:] == [exit_output_name(b) for b in BACKBONES[name].boundaries[1:3]]


def test_unsuitable_choices_are_refused_with_the_fix(tmp_path):
    with pytest.raises(ModelError, match="takes RGB images, the data has 1 channel"):
        build_model("mobilenet_v2", (96, 96, 1), 3)
    with pytest.raises(ModelError, match="at least 32x32.*--input-size"):
        build_model("mobilenet_v1", (28, 28, 3), 3)
    with pytest.raises(ModelError, match="--alpha 0.3 is not built for mobilenet_v2; choose one of 0.35"):
        build_model("mobilenet_v2", SHAPE, 3, alpha=0.3)
    with pytest.raises(ModelError, match="no such file"):
        build_model("mobilenet_v2", SHAPE, 3, weights=str(tmp_path / "missing.h5"))
    with pytest.raises(ModelError, match="are for the backbones"):
        build_model("splitnet", (28, 28, 1), 10, alpha=0.5)
    assert choose_model((28, 28, 1))[0] == "splitnet"
    assert choose_model((64, 64, 3))[0] == choose_model((224, 224, 1))[0] == "mobilenet_v2"


def test_fine_tuning_opens_the_top_layers_and_keeps_batch_norm_frozen():
    model = build_model("mobilenet_v2", SHAPE, 3)
    assert set_trainable(model, 0) == 0 and model.get_layer("logits").trainable
    opened = set_trainable(model, 12)
    trainable = [layer for layer in model.layers if layer.trainable and layer.weights and layer.name != "logits"]
    assert opened == len(trainable) and 0 < opened <= 12
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in trainable)
    assert model.get_layer("Conv_1").trainable and not model.get_layer("Conv1").trainable


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_every_backbone_goes_to_int8_on_raw_pixels_maps_to_the_tpu_and_splits_exactly(name, tmp_path):
    from quantize.run import quantize_run
    from training.config import TrainConfig, Transfer
    from training.train import train
    run = tmp_path / name
    fine = None
    if name == "mobilenet_v2":   # from a weights file: head on the frozen backbone, then fine-tuning
        weights = tmp_path / "no_top.h5"
        keras.applications.MobileNetV2(input_shape=SHAPE, include_top=False, weights=None,
                                       alpha=0.35).save_weights(weights)
        fine = Transfer(weights=str(weights), fine_tune_layers=6, fine_tune_epochs=1)
    manifest = train(str(run), TrainConfig("shapes", {"size": 96, "samples": 60, "classes": 3}, name, epochs=1,
                                           transfer=fine), verbose=0)
    mean, std = BACKBONES[name].normalization
    assert manifest["training"]["input_normalization"] == {"mean": mean, "std": std}
    if fine:
        assert manifest["training"]["epochs_run"] == 2 and manifest["training"]["transfer"]["fine_tune_from_epoch"] == 2
    manifest = quantize_run(str(run), PlanOptions(stages=2), samples=20, qat=QatPolicy(auto=False))
    tensor = manifest["stages"][0]["inputs"][0]
    assert (tensor["dtype"], tensor["scale"], tensor["zero_point"]) == ("uint8", 1 / std, mean)
    chain = open_chain(run)[1]
    pixels = np.random.default_rng(0).integers(0, 256, SHAPE, dtype=np.uint8)
    assert chain.normalization == (mean, std) and raw_pixels_exact(tensor, chain.normalization)
    assert np.array_equal(image_feed(chain, pixels)[tensor["name"]][0], pixels), "the raw pixels, no arithmetic"
    placements = [manifest["stages"][k]["preflight"] for k in (0, 1)]
    assert all(p["cpu_ops"] == 0 and not p["refused"] for p in placements), placements
    result = verify_run(str(run), samples=8)
    assert result["mismatching_outputs"] == 0


def test_random_weights_train_the_whole_backbone_and_pretrained_ones_start_frozen(tmp_path, capsys):
    from training.config import TrainConfig, Transfer
    from training.train import train
    weights = tmp_path / "no_top.h5"
    keras.applications.MobileNet(input_shape=(32, 32, 3), include_top=False, weights=None,
                                 alpha=0.25).save_weights(weights)
    options = {"size": 32, "samples": 12, "classes": 2}
    train(str(tmp_path / "random"), TrainConfig("shapes", options, "mobilenet_v1", epochs=1), verbose=0)
    assert "training the whole mobilenet_v1 (random weights)" in capsys.readouterr().out
    train(str(tmp_path / "pre"), TrainConfig("shapes", options, "mobilenet_v1", epochs=1,
                                             transfer=Transfer(weights=str(weights), fine_tune_layers=4,
                                                               fine_tune_epochs=1)), verbose=0)
    out = capsys.readouterr().out
    assert "training the head on the frozen backbone: 0 backbone layers trainable" in out
    assert re.search(r"fine-tuning: [12] backbone layers trainable, learning rate 0.0001, epochs 2-2", out), out



def test_batch_norm_statistics_describe_the_network_as_trained_from_random_weights(tmp_path):
    """Keras' moving statistics lag behind a fast-changing network (MobileNetV2 keeps 99.9 % a step): two
    short epochs left them off by a factor of 7 in the first layer and 10^7 in the last block, so the model
    was at chance in inference mode. Re-estimated before each validation, they match the data."""
    import datasets
    from training.config import TrainConfig
    from training.train import train
    options = {"size": 64, "samples": 60, "classes": 4}
    train(str(tmp_path / "run"), TrainConfig("shapes", options, "mobilenet_v2", epochs=2, batch_size=16), verbose=0)
    model = keras.models.load_model(tmp_path / "run" / "model.keras")
    x = (datasets.load_dataset("shapes", **options).images[:200].astype(np.float32) - 128) / 128
    for conv, norm in (("Conv1", "bn_Conv1"), ("block_16_project", "block_16_project_BN")):
        features = keras.Model(model.input, model.get_layer(conv).output)(x, training=False).numpy()
        variance = features.var(axis=(0, 1, 2))
        off = np.median(np.abs(model.get_layer(norm).moving_variance.numpy() / variance - 1))
        assert off < 0.25, f"{norm}: moving variance off by {off:.0%} of the data's"


def test_statistics_are_the_mean_over_batches_and_frozen_layers_keep_theirs():
    from training.batch_norm import reestimate
    inputs = keras.Input((4, 4, 2))
    frozen = keras.layers.BatchNormalization(name="frozen")
    trained = keras.layers.BatchNormalization(name="trained")
    model = keras.Model(inputs, trained(frozen(inputs)))
    frozen.trainable = False
    rng = np.random.default_rng(0)
    data = [(rng.normal(3, 2, (8, 4, 4, 2)).astype(np.float32), None) for _ in range(3)]
    before = [w.copy() for w in frozen.get_weights()]
    assert reestimate(model, data, images=24) == 24
    expected = np.mean([(b[0] - before[2]) / np.sqrt(before[3] + frozen.epsilon) * before[0] + before[1]
                        for b in data], axis=(1, 2, 3)).mean(axis=0)
    assert np.allclose(trained.moving_mean.numpy(), expected, atol=1e-5)
    assert all(np.array_equal(a, b) for a, b in zip(before, frozen.get_weights()))
    assert trained.momentum == 0.99, "the layer's own momentum is given back"


def test_a_run_stopped_while_fine_tuning_resumes_with_its_own_augmentation_weights_and_phases(tmp_path, capsys):
    import runfolder
    from training.config import TrainConfig, Transfer
    from training.train import train
    weights = tmp_path / "no_top.h5"
    keras.applications.MobileNet(input_shape=(32, 32, 3), include_top=False, weights=None,
                                 alpha=0.25).save_weights(weights)
    run = tmp_path / "run"
    train(str(run), TrainConfig("shapes", {"size": 32, "samples": 12, "classes": 2}, "mobilenet_v1", epochs=1,
                                patience=5, augment=("flip",), class_weights="balanced", batch_size=8,
                                transfer=Transfer(weights=str(weights), fine_tune_layers=4, fine_tune_epochs=2)),
          verbose=0)
    # As if the process died after the first fine-tuning epoch: its checkpoint and history row are the last.
    (run / "checkpoints" / "epoch_003.keras").unlink()
    (run / "model.keras").unlink()
    history = (run / "history.csv").read_text().splitlines()
    (run / "history.csv").write_text("\n".join(history[:3]) + "\n")
    manifest = runfolder.load(run)
    manifest["training"]["status"] = "running"
    runfolder.save(run, manifest)
    capsys.readouterr()
    manifest = train(str(run), resume=True, verbose=0)   # nothing but the run folder given
    out = capsys.readouterr().out
    assert "resuming from" in out and "epoch_002" in out
    assert re.search(r"fine-tuning: [12] backbone layers trainable, learning rate 0.0001, epochs 2-3", out), out
    training = manifest["training"]
    assert (training["augment"], training["class_weights"], training["batch_size"]) == (["flip"], "balanced", 8)
    assert training["epochs_run"] == 3 and training["transfer"]["fine_tune_from_epoch"] == 2


@pytest.mark.slow
def test_qat_runs_on_mobilenet_v2_and_says_why_not_on_efficientnet(tmp_path):
    import runfolder
    from quantize.ptq import QuantizeError
    from quantize.qat import quantize_aware_copy
    from quantize.run import quantize_run
    from training.config import TrainConfig
    from training.train import train
    run = tmp_path / "v2"
    train(str(run), TrainConfig("shapes", {"size": 32, "samples": 30, "classes": 3}, "mobilenet_v2", epochs=1),
          verbose=0)
    section = quantize_run(str(run), PlanOptions(stages=2), samples=20, qat=QatPolicy(asked=True, epochs=1))["quantization"]
    qat = section["qat"]
    assert qat["epochs"] == 1 and len(qat["history"]["loss"]) == 1
    assert qat["extra_ops"] == {} and qat["unfolded"] == {}, "BatchNorm folded and ReLU6 fused as in PTQ"
    assert verify_run(str(run), samples=8)["bit_exact"] is True
    assert runfolder.verify_file(run, qat["model"], "QAT model").exists()
    with pytest.raises(QuantizeError, match="cannot make a quantization-aware copy of 'efficientnet_b0'.*Rescaling"):
        quantize_aware_copy(build_model("efficientnet_b0", (32, 32, 3), 3))
