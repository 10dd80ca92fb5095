"""deploy.pipeline.pipelined_model_runner.PipelinedModelRunner behaves as pycoral 2.0's, on real interpreters.

The cases follow pycoral's own tests/pipelined_model_runner_test.py (bad segment order, wrong input
type, push/pop equal to the whole model, pushing after the end, producer and consumer threads, queue
sizes, an interpreter error at the next pop and push), with CPU segments instead of Edge TPU ones.
"""
import threading

import numpy as np
import pytest

import runfolder
from deploy.pipeline.pipelined_model_runner import PipelinedModelRunner
from deploy.core.runtime import load_runtime, make_interpreter
from quantize.stages import split_into
from quantize.plan_options import PlanOptions

V1 = "mobilenet_v1_0.25_128_quant.tflite"
HANG = 120


@pytest.fixture(scope="module")
def segments(coral_data, tmp_path_factory):
    """Paths of MobileNetV1 0.25 split in 3 segments, and the whole model."""
    run = tmp_path_factory.mktemp("segments") / "v1"
    split_into(str(run), str(coral_data / V1), PlanOptions(stages=3), progress=lambda *_: None)
    return [runfolder.resolve(run, s["model"]) for s in runfolder.load(run)["stages"]], coral_data / V1


def make_runner(paths, allocate=True):
    if allocate:
        interpreters = [make_interpreter(p) for p in paths]
    else:
        interpreters = [load_runtime().interpreter_class(model_path=str(p)) for p in paths]
    return PipelinedModelRunner(interpreters)


def request(runner, seed=0):
    detail = runner.interpreters()[0].get_input_details()[0]
    rng = np.random.default_rng(seed)
    return {detail["name"]: rng.integers(0, 256, size=detail["shape"], dtype=np.uint8)}


def whole_model_result(model, inputs):
    interpreter = make_interpreter(model)
    (detail,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    interpreter.set_tensor(detail["index"], next(iter(inputs.values())))
    interpreter.invoke()
    return {out["name"]: interpreter.get_tensor(out["index"])}


def test_segments_in_the_wrong_order_are_refused(segments):
    paths, _ = segments
    with pytest.raises(ValueError, match=r"Interpreter 1 can not get its input tensors"):
        make_runner([paths[0], paths[2], paths[1]])
    with pytest.raises(ValueError, match="At least one interpreter expected"):
        PipelinedModelRunner([])


def test_push_and_pop_equal_the_whole_model_then_the_end(segments):
    paths, model = segments
    runner = make_runner(paths)
    inputs = request(runner)
    runner.push(inputs)
    result = runner.pop()
    expected = whole_model_result(model, inputs)
    assert list(result) == list(expected)
    np.testing.assert_equal(result, expected)                  # byte for byte, shapes included
    runner.push({})
    with pytest.raises(RuntimeError, match="Pipeline was turned off before."):
        runner.push(inputs)
    with pytest.raises(RuntimeError, match="Pipeline was turned off before."):
        runner.push({})
    assert runner.pop() is None


def test_wrong_inputs_are_refused_with_pycoral_messages(segments):
    paths, _ = segments
    runner = make_runner(paths)
    (name, array), = request(runner).items()
    with pytest.raises(ValueError, match="Input should be a list of numpy array of type"):
        runner.push({name: array.astype(np.float64)})
    with pytest.raises(ValueError, match="Input should be a list of numpy array of type"):
        runner.push({name: array.tolist()})
    with pytest.raises(ValueError, match="Expected input of length 1, but got 2"):
        runner.push({name: array, "other": array})
    with pytest.raises(TypeError, match=r"takes a dict .* \(pycoral 1.0's form\)"):
        runner.push([array])
    with pytest.raises(ValueError, match=r"has 10 values .* the model takes 49152"):
        runner.push({name: np.zeros(10, dtype=np.uint8)})
    runner.push({})


def test_an_image_without_the_batch_axis_is_accepted_as_in_pycoral(segments):
    """pycoral copies the array's bytes; its pipelining example pushes an H x W x 3 image."""
    paths, model = segments
    runner = make_runner(paths)
    (name, array), = request(runner, seed=4).items()
    runner.push({name: array[0]})
    np.testing.assert_equal(runner.pop(), whole_model_result(model, {name: array}))
    runner.push({})


def test_producer_and_consumer_threads(segments):
    paths, model = segments
    runner = make_runner(paths)
    requests = [request(runner, seed) for seed in range(12)]
    expected = [whole_model_result(model, r) for r in requests]
    results = []

    def producer():
        for r in requests:
            runner.push(r)
        runner.push({})

    def consumer():
        while (result := runner.pop()):
            results.append(result)

    threads = [threading.Thread(target=producer), threading.Thread(target=consumer)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(HANG)
    assert len(results) == 12
    for got, want in zip(results, expected):
        np.testing.assert_equal(got, want)


def test_queue_sizes_bound_what_is_buffered(segments):
    paths, _ = segments
    runner = make_runner(paths)
    assert runner._runner.capacity is None                     # unlimited by default, as in pycoral
    runner.set_input_queue_size(1)
    runner.set_output_queue_size(1)
    segments_count = len(runner.interpreters())
    assert runner._runner.capacity == 2 * segments_count + 1   # pycoral's test: 2 * num_segments + 1
    requests = [request(runner, seed) for seed in range(3 * segments_count)]
    producer = threading.Thread(target=lambda: [runner.push(r) for r in requests] + [runner.push({})])
    producer.start()
    count = 0
    while runner.pop() is not None:
        count += 1
    producer.join(HANG)
    assert count == len(requests)
    assert runner._runner.max_in_flight <= 2 * segments_count + 1


def test_interpreter_error_is_raised_at_the_next_pop_and_push(segments):
    paths, _ = segments
    runner = make_runner(paths, allocate=False)                # tensors never allocated: invoke fails
    inputs = request(runner)
    runner.push(inputs)
    with pytest.raises(RuntimeError, match=r"^Segment 0 runner error: .*"):
        runner.pop()
    with pytest.raises(RuntimeError, match=r"^Segment 0 runner error: .*"):
        runner.push(inputs)
    assert runner.pop() is None                                # shut down: nothing more comes


def test_interpreters_returns_the_interpreters_given(segments):
    paths, _ = segments
    interpreters = [make_interpreter(p) for p in paths]
    runner = PipelinedModelRunner(interpreters)
    assert runner.interpreters() is not None and all(a is b for a, b in zip(runner.interpreters(), interpreters))
    runner.push({})
