"""Splitting full-int8 tflite models: bit-exact chains, stage contents, cut errors."""
import numpy as np
import pytest

from deploy.core.chain import StageChain
from deploy.core.classify import describe_details, whole_model_chain
from deploy.core.runtime import make_interpreter
from deploy.core.verify import compare, sample_feeds
from tflitegraph.graph import GraphError, find_tensor, read_graph
from quantize.partition import balanced_plan
from quantize.split import cut_positions_after, split_model
from quantize.stages import check_full_int8, split_into
from quantize.plan_options import PlanOptions


def balanced_cut_positions(graph, stages):
    return balanced_plan(graph, stages, "macs").cuts


class _Stage:
    def __init__(self, index, model_bytes):
        self.index = index
        self.interpreter = make_interpreter(model_bytes)
        self.inputs = describe_details(self.interpreter.get_input_details())
        self.outputs = describe_details(self.interpreter.get_output_details())


def _chain_of(parts):
    return StageChain([_Stage(k, p["model_bytes"]) for k, p in enumerate(parts)])


def _mismatches(model_path, parts, samples=6):
    reference = whole_model_chain(model_path)
    chain = _chain_of(parts)
    return compare(chain, reference, sample_feeds(chain, samples, seed=1))


@pytest.mark.parametrize("stages", [2, 3])
def test_mobilenet_v1_chain_is_bit_exact(coral_data, stages):
    path = coral_data / "mobilenet_v1_0.25_128_quant.tflite"
    graph = read_graph(str(path))
    parts = split_model(graph, balanced_cut_positions(graph, stages))
    assert len(parts) == stages
    result = _mismatches(path, parts)
    assert result["mismatching_outputs"] == 0
    assert result["outputs_compared"] == 6


def test_residual_model_cut_inside_a_block_is_bit_exact(coral_data):
    """MobileNetV2 has residual adds: a cut between a block's input and its ADD has two tensors crossing."""
    path = coral_data / "mobilenet_v2_1.0_224_quant.tflite"
    graph = read_graph(str(path))
    add = next(op for op in graph.ops if op.name == "ADD")
    cut = add.position - 1
    assert len(graph.crossing(cut)) == 2
    parts = split_model(graph, [cut])
    assert len(parts[1]["inputs"]) == 2
    assert _mismatches(path, parts, samples=2)["mismatching_outputs"] == 0


def test_stage_files_hold_only_their_share(coral_data):
    path = coral_data / "mobilenet_v1_0.25_128_quant.tflite"
    graph = read_graph(str(path))
    parts = split_model(graph, balanced_cut_positions(graph, 3))
    whole_params = sum(t.constant_bytes for t in graph.tensors)
    assert sum(p["parameter_bytes"] for p in parts) == whole_params
    assert sum(p["op_count"] for p in parts) == len(graph.ops)
    for part in parts:
        stage_graph = read_graph(part["model_bytes"])
        assert sum(t.constant_bytes for t in stage_graph.tensors) == part["parameter_bytes"]
        assert len(stage_graph.model.operatorCodes) == len(set(part["ops"]))
        # A stage file is not much more than its parameters: no other stage's weights inside.
        assert len(part["model_bytes"]) < part["parameter_bytes"] + 40_000


def test_stages_keep_tensor_quantization(coral_data):
    path = coral_data / "mobilenet_v1_0.25_128_quant.tflite"
    graph = read_graph(str(path))
    parts = split_model(graph, balanced_cut_positions(graph, 2))
    crossing = graph.tensors[graph.crossing(parts[1]["start"])[0]]
    given = parts[1]["inputs"][0]
    assert given["name"] == crossing.name
    assert given["scale"] == pytest.approx(crossing.scale[0])
    assert given["zero_point"] == crossing.zero_point[0]
    assert parts[0]["outputs"][0] == given


def test_cut_after_a_layer_name(coral_data):
    graph = read_graph(str(coral_data / "mobilenet_v1_0.25_128_quant.tflite"))
    (cut,) = cut_positions_after(graph, ["Conv2d_5_pointwise"])
    produced = graph.tensors[graph.crossing(cut)[0]].name
    assert "Conv2d_5_pointwise" in produced


def test_unknown_cut_name_lists_close_names(coral_data):
    graph = read_graph(str(coral_data / "mobilenet_v1_0.25_128_quant.tflite"))
    with pytest.raises(GraphError, match="no tensor or layer named 'Conv2d_5_pointwyse'.*Conv2d_5_pointwise"):
        find_tensor(graph, "Conv2d_5_pointwyse")


def test_cut_errors_are_clear(coral_data):
    graph = read_graph(str(coral_data / "mobilenet_v1_0.25_128_quant.tflite"))
    with pytest.raises(GraphError, match=f"has {len(graph.ops)} ops.*--stages {len(graph.ops)} or fewer"):
        balanced_cut_positions(graph, len(graph.ops) + 1)
    with pytest.raises(GraphError, match="not in graph order"):
        cut_positions_after(graph, ["Conv2d_9_pointwise", "Conv2d_2_pointwise"])
    last = graph.tensors[graph.outputs[0]].name
    with pytest.raises(GraphError, match="last stage empty"):
        cut_positions_after(graph, [last])


def test_float_model_is_refused_naming_the_tensor(coral_data, tmp_path):
    from tflitegraph import schema as fb
    model = fb.read_model(str(coral_data / "mobilenet_v1_0.25_128_quant.tflite"))
    sg = model.subgraphs[0]
    sg.tensors[sg.inputs[0]].type = fb.schema.TensorType.FLOAT32
    graph = read_graph(fb.model_to_bytes(model))
    name = graph.tensors[graph.inputs[0]].name
    with pytest.raises(GraphError, match=f"not full-int8.*float32 tensor '{name}'"):
        check_full_int8(graph)


def test_not_a_model_is_refused(tmp_path):
    bogus = tmp_path / "x.tflite"
    bogus.write_bytes(b"this is not a flatbuffer at all" * 10)
    with pytest.raises(GraphError, match="not a readable .tflite model"):
        read_graph(str(bogus))


def test_split_into_writes_a_usable_run_folder(coral_data, tmp_path):
    import runfolder
    from deploy.cli.actions import verify_run
    out = tmp_path / "split"
    manifest = split_into(out, coral_data / "split_concat.tflite", PlanOptions(stages=2), progress=lambda *_: None)
    assert [s["index"] for s in manifest["stages"]] == [0, 1]
    for stage in manifest["stages"]:
        runfolder.verify_file(out, stage["model"], "stage")
    assert verify_run(out, samples=4)["bit_exact"]


def test_keras_lstm_model_is_refused_or_split_exactly(coral_data):
    """The LSTM model either splits bit-exactly or is refused with a reason (control flow)."""
    path = coral_data / "keras_lstm_mnist_ptq.tflite"
    try:
        graph = read_graph(str(path))
    except GraphError as exc:
        assert "subgraphs" in str(exc)
        return
    parts = split_model(graph, balanced_cut_positions(graph, 2))
    assert _mismatches(path, parts, samples=3)["mismatching_outputs"] == 0


def test_random_feeds_cover_the_input_range(coral_data):
    chain = whole_model_chain(coral_data / "mobilenet_v1_0.25_128_quant.tflite")
    feed = sample_feeds(chain, 1, seed=0)[0]
    values = next(iter(feed.values()))
    assert values.dtype == np.uint8 and values.min() == 0 and values.max() == 255


def _two_input_model(tmp_path):
    """int8 model whose second input joins after the first convolution (made with real TF)."""
    from training.keras_setup import keras, tf
    a = keras.Input((8, 8, 1), batch_size=1, name="a")
    b = keras.Input((4, 4, 1), batch_size=1, name="b")
    x = keras.layers.Conv2D(4, 3, strides=2, padding="same", activation="relu", name="first")(a)
    x = keras.layers.Concatenate(name="join")([x, b])
    x = keras.layers.Conv2D(3, 3, padding="same", name="second")(x)
    model = keras.Model([a, b], [x, keras.layers.Flatten(name="flat")(x)])
    rng = np.random.default_rng(0)

    def samples():
        for _ in range(20):
            yield {"a": rng.random((1, 8, 8, 1), np.float32), "b": rng.random((1, 4, 4, 1), np.float32)}

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = samples
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = converter.inference_output_type = tf.int8  # no input QUANTIZE ops
    path = tmp_path / "two_inputs.tflite"
    path.write_bytes(converter.convert())
    return path


def test_late_second_input_and_two_outputs_chain_exactly(tmp_path):
    from deploy.cli.actions import verify_run
    path = _two_input_model(tmp_path)
    graph = read_graph(str(path))
    assert len(graph.inputs) == 2 and len(graph.outputs) == 2
    out = tmp_path / "split"
    manifest = split_into(out, path, PlanOptions(cut_after=["first"]), progress=lambda *_: None)
    later = {t["name"] for t in manifest["stages"][1]["inputs"]}
    model_inputs = {t["name"] for t in manifest["split"]["model_inputs"]}
    assert later & model_inputs, "the second stage reads a model input directly"
    result = verify_run(out, samples=5)
    assert result["bit_exact"] and result["outputs_compared"] == 10
