"""Pre-flight rules on models converted here the way users convert (TFLiteConverter.from_keras_model,
which leaves a -1 batch in every shape signature): dynamic sizes, image resizes, and what the check prints."""
import numpy as np
import pytest

from compile.preflight import check_model, optable, warnings
from compile.preflight.checktext import format_report
from tests.conftest import run_cli


def _user_conversion(model, path):
    from training.keras_setup import tf
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    shape = model.input_shape[1:]
    rng = np.random.default_rng(0)
    converter.representative_dataset = lambda: ([rng.random((1, *shape), np.float32)] for _ in range(8))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = converter.inference_output_type = tf.uint8
    path.write_bytes(converter.convert())
    return str(path)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from training.keras_setup import keras, tf
    layers, folder = keras.layers, tmp_path_factory.mktemp("user_models")

    def build(name, body, shape=(8, 8, 3)):
        image = keras.Input(shape)
        return _user_conversion(keras.Model(image, body(image)), folder / f"{name}.tflite")

    return {
        "flatten": build("flatten", lambda x: layers.Dense(5)(layers.Flatten()(layers.Conv2D(4, 3)(x)))),
        "reshape_to_batch": build("reshape_to_batch", lambda x: layers.Dense(5)(layers.Lambda(
            lambda t: tf.reshape(t, [tf.shape(t)[0], 144]))(layers.Conv2D(4, 3)(x)))),
        "up_x2": build("up_x2", lambda x: layers.UpSampling2D(2, interpolation="bilinear")(layers.Conv2D(4, 3)(x))),
        "up_x4": build("up_x4", lambda x: layers.UpSampling2D(4, interpolation="bilinear")(layers.Conv2D(4, 3)(x)),
                       shape=(18, 18, 3)),
        "up_to_600": build("up_to_600", lambda x: layers.UpSampling2D(2, interpolation="bilinear")(
            layers.Conv2D(2, 1)(x)), shape=(300, 300, 1)),
    }


def _signature_has_minus_one(path):
    from tflitegraph.graph import read_graph
    graph = read_graph(path)
    return any(t.shapeSignature is not None and -1 in list(t.shapeSignature) for t in graph.model.subgraphs[0].tensors)


def test_a_dynamic_batch_in_the_signature_alone_is_not_a_refusal(models):
    assert _signature_has_minus_one(models["flatten"]), "the converter no longer writes -1 batches; rethink the test"
    report = check_model(models["flatten"])
    assert not report["refused"] and report["problems"] == []
    assert report["summary"]["cpu_ops"] == 0


def test_a_size_computed_in_the_graph_is_a_refusal_naming_the_op(models):
    report = check_model(models["reshape_to_batch"])
    assert report["refused"] and report["summary"]["tpu_ops"] == 0
    problem = report["problems"][0]
    assert "op 5 RESHAPE takes its output size from" in problem and "computed while running" in problem
    assert "static-sized tensors" in problem


def test_resizes_within_what_was_seen_mapped_are_mapped_without_doubt(models):
    report = check_model(models["up_x2"])
    resize = next(op for op in report["ops"] if op["type"] == "RESIZE_BILINEAR")
    assert resize["placement"] == "tpu" and resize["risk"] == ""


def test_an_upscale_beyond_what_was_seen_mapped_is_mapped_but_at_risk(models):
    report = check_model(models["up_x4"])
    resize = next(op for op in report["ops"] if op["type"] == "RESIZE_BILINEAR")
    assert resize["placement"] == "tpu" and "x4 to 64x64" in resize["risk"]
    assert report["summary"]["at_risk_ops"] == 1
    assert any("may end up on the CPU" in line for line in warnings(report))
    assert any(" tpu? " in line for line in format_report(report))


def test_a_resize_to_a_large_image_is_left_to_the_cpu(models):
    report = check_model(models["up_to_600"])
    resize = next(op for op in report["ops"] if op["type"] == "RESIZE_BILINEAR")
    assert resize["placement"] == "cpu" and resize["status"] == optable.UNSPECIFIED
    assert "600x600" in resize["reason"]


def test_compile_check_prints_how_well_it_agreed_with_the_real_compiler_once(models):
    out = run_cli("compile", "check", models["flatten"], timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("checked against") == 1 and optable.agreement_line() in out.stdout
