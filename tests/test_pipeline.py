"""deploy.pipeline.runner.PipelinedRunner: order, request ids, per-request failures, bounds, shutdown.

Stages are real: Coral's MobileNets split by quantize and run by the tflite interpreter. Failures
and stalls are injected by wrapping the real stage call (``run_stage``), never by fake models.
No assertion depends on timing: waits are for events, with generous limits only against hangs.
"""
import queue
import threading
import time

import numpy as np
import pytest

import runfolder
from deploy.core.chain import ChainError, run_interpreter
from deploy.core.classify import whole_model_chain
from deploy.core.open import open_chain
from deploy.pipeline.runner import PipelineClosed, PipelinedRunner, RequestFailed
from deploy.core.verify import sample_feeds
from quantize.stages import split_into
from quantize.plan_options import PlanOptions
from tests.waiting import wait_until

V1 = "mobilenet_v1_0.25_128_quant.tflite"
V2 = "mobilenet_v2_1.0_224_quant.tflite"
HANG = 120   # seconds: only to turn a hang into a failure, never reached when the code works


def quiet(*_):
    pass


@pytest.fixture(scope="module")
def v1_runs(coral_data, tmp_path_factory):
    """MobileNetV1 0.25 split in 2 and 3 stages."""
    base = tmp_path_factory.mktemp("v1")
    runs = {n: base / f"s{n}" for n in (2, 3)}
    for n, run in runs.items():
        split_into(str(run), str(coral_data / V1), PlanOptions(stages=n), progress=quiet)
    return runs


def reference_outputs(coral_data, model, feeds):
    whole = whole_model_chain(coral_data / model)
    name_in, name_out = whole.inputs[0]["name"], whole.outputs[0]["name"]
    return [whole.run({name_in: next(iter(f.values()))})[name_out] for f in feeds]


def wait_for(condition, what):
    wait_until(condition, HANG, what, every_s=0.001)


class Gate:
    """Wraps the real stage call; holds stage ``index`` on its first request until opened."""

    def __init__(self, index):
        self.index, self.entered, self.open = index, threading.Event(), threading.Event()

    def __call__(self, stage, values):
        if stage.index == self.index and not self.entered.is_set():
            self.entered.set()
            if not self.open.wait(HANG):
                raise TimeoutError("gate never opened")
        return run_interpreter(stage.interpreter, values)


# ---------------------------------------------------------------- order, ids, exactness

def test_results_keep_input_order_and_ids_under_concurrency(coral_data, v1_runs):
    _, chain = open_chain(v1_runs[3], tpus=[])
    feeds = sample_feeds(chain, 40, seed=3)
    expected = reference_outputs(coral_data, V1, feeds)
    ids = [f"req-{n:02d}" for n in reversed(range(40))]        # ids unrelated to the order of arrival
    out_name = chain.outputs[0]["name"]
    runner = PipelinedRunner(chain, queue_size=1)

    def produce():
        for feed, request_id in zip(feeds, ids):
            runner.push(feed, request_id)
        runner.push(None)

    producer = threading.Thread(target=produce)
    producer.start()
    results = list(runner)
    producer.join(HANG)
    assert [r.request_id for r in results] == ids
    for result, want in zip(results, expected):           # byte for byte the unsplit model's output
        assert np.array_equal(result.outputs[out_name], want)
        assert len(result.stage_seconds) == 3 and result.error is None
    assert runner.pop() is None                            # stays ended


def test_tensor_made_two_stages_earlier_travels_along(coral_data, tmp_path):
    """MobileNetV2 cut inside a residual block: stage 2's ADD reads stage 0's output."""
    run = tmp_path / "skip"
    split_into(str(run), str(coral_data / V2),
               PlanOptions(cut_after=["expanded_conv_1/project", "expanded_conv_2/expand"]), progress=quiet)
    stages = runfolder.load(run)["stages"]
    made_by = {t["name"]: s["index"] for s in stages for t in s["outputs"]}
    assert any(made_by.get(t["name"]) == 0 for t in stages[2]["inputs"]), "no tensor skips a stage"
    _, chain = open_chain(run, tpus=[])
    feeds = sample_feeds(chain, 6, seed=1)
    expected = reference_outputs(coral_data, V2, feeds)
    with PipelinedRunner(chain) as runner:
        results = list(runner.stream(feeds))
    assert [r.request_id for r in results] == list(range(6))
    for result, want in zip(results, expected):
        assert np.array_equal(result.outputs[chain.outputs[0]["name"]], want)


def test_thousand_requests_no_loss_no_duplicates(coral_data, v1_runs):
    _, chain = open_chain(v1_runs[2], tpus=[])
    distinct = sample_feeds(chain, 25, seed=7)
    expected = reference_outputs(coral_data, V1, distinct)
    rng = np.random.default_rng(0)
    ids = [int(i) for i in rng.permutation(10_000)[:1000]]
    feed_of = {request_id: n % len(distinct) for n, request_id in enumerate(ids)}
    out_name = chain.outputs[0]["name"]
    with PipelinedRunner(chain, queue_size=2) as runner:
        results = list(runner.stream((distinct[feed_of[i]] for i in ids), request_ids=ids))
    got = [r.request_id for r in results]
    assert len(got) == 1000 and len(set(got)) == 1000 and got == ids
    assert all(np.array_equal(r.outputs[out_name], expected[feed_of[r.request_id]]) for r in results)
    assert runner.in_flight == 0


# ---------------------------------------------------------------- failures

def test_a_stage_that_raises_fails_that_request_only(coral_data, v1_runs):
    _, chain = open_chain(v1_runs[3], tpus=[])
    feeds = sample_feeds(chain, 12, seed=5)
    expected = reference_outputs(coral_data, V1, feeds)
    calls = {"n": 0}

    def flaky(stage, values):          # stage 1's 8th call is request 7: one worker per stage, FIFO
        if stage.index == 1:
            calls["n"] += 1
            if calls["n"] == 8:
                raise ValueError("injected failure")
        return run_interpreter(stage.interpreter, values)

    runner = PipelinedRunner(chain, queue_size=0, run_stage=flaky)    # unbounded: push all, then pop
    for n, feed in enumerate(feeds):
        runner.push(feed, f"r{n}")
    runner.push(None)
    for n in range(12):
        if n == 7:
            with pytest.raises(RequestFailed, match=r"request 'r7' failed in stage 1: ValueError: injected") as info:
                runner.pop()
            assert info.value.request_id == "r7" and info.value.stage_index == 1
            assert isinstance(info.value.__cause__, ValueError)
            continue
        result = runner.pop()
        assert result.request_id == f"r{n}"
        assert np.array_equal(result.outputs[chain.outputs[0]["name"]], expected[n])
    assert runner.pop() is None
    runner.join()


def test_stream_can_yield_failed_requests_and_go_on(v1_runs):
    _, chain = open_chain(v1_runs[2], tpus=[])
    feeds = sample_feeds(chain, 6, seed=2)

    def flaky(stage, values):
        if stage.index == 0 and np.array_equal(values[chain.inputs[0]["name"]], feeds[2][chain.inputs[0]["name"]]):
            raise RuntimeError("bad request")
        return run_interpreter(stage.interpreter, values)

    results = list(PipelinedRunner(chain, run_stage=flaky).stream(feeds, errors="yield"))
    assert [r.request_id for r in results] == list(range(6))
    assert [r.error is not None for r in results] == [False, False, True, False, False, False]
    assert results[2].outputs is None and results[2].stage_seconds and len(results[2].stage_seconds) == 1
    with pytest.raises(RequestFailed, match="bad request"):
        list(PipelinedRunner(chain, run_stage=flaky).stream(feeds))


def test_bad_feed_is_refused_at_push_and_the_runner_goes_on(v1_runs):
    _, chain = open_chain(v1_runs[2], tpus=[])
    feed = sample_feeds(chain, 1)[0]
    name = chain.inputs[0]["name"]
    with PipelinedRunner(chain) as runner:
        with pytest.raises(ChainError, match=f"pipeline: input '{name}' has dtype float32"):
            runner.push({name: feed[name].astype(np.float32)})
        assert runner.push(feed) == 0
        assert runner.pop().request_id == 0


# ---------------------------------------------------------------- bounds and shutdown

def test_queue_bounds_give_backpressure(v1_runs):
    _, chain = open_chain(v1_runs[3], tpus=[])
    feeds = sample_feeds(chain, 30, seed=4)
    gate = Gate(index=chain.stages[0].index)
    runner = PipelinedRunner(chain, queue_size=2, run_stage=gate)
    assert runner.capacity == 4 * 2 + 3          # four queues of 2, and one request in each of 3 workers

    runner.push(feeds[0])
    assert gate.entered.wait(HANG)               # stage 0 holds request 0
    runner.push(feeds[1], timeout=0)
    runner.push(feeds[2], timeout=0)             # the input queue (2) is now full
    with pytest.raises(queue.Full):
        runner.push(feeds[3], timeout=0)

    producer = threading.Thread(target=lambda: [runner.push(f) for f in feeds[3:]])
    producer.start()
    gate.open.set()
    wait_for(lambda: runner.in_flight == runner.capacity, "the pipeline to fill up")
    assert producer.is_alive()                   # blocked: nobody pops
    with pytest.raises(queue.Full):
        runner.push(feeds[0], timeout=0)
    got = [runner.pop().request_id for _ in range(30)]
    producer.join(HANG)
    assert got == list(range(30))
    assert runner.max_in_flight <= runner.capacity
    assert all(q.high_water <= q.maxsize for q in runner._queues)
    runner.close()


def test_end_of_stream_drains_then_refuses_more(v1_runs):
    _, chain = open_chain(v1_runs[2], tpus=[])
    feeds = sample_feeds(chain, 5)
    runner = PipelinedRunner(chain, queue_size=0)
    for feed in feeds:
        runner.push(feed)
    runner.push({})                               # an empty dict ends the stream, as in pycoral
    runner.join()                                 # workers finish everything pushed before the end
    assert not any(t.is_alive() for t in runner._threads)
    assert [runner.pop().request_id for _ in range(5)] == list(range(5))
    assert runner.pop() is None and runner.pop() is None
    with pytest.raises(PipelineClosed, match="ended by push"):
        runner.push(feeds[0])


def test_close_with_requests_in_flight_stops_every_thread(v1_runs):
    _, chain = open_chain(v1_runs[3], tpus=[])
    feeds = sample_feeds(chain, 20, seed=6)
    gate = Gate(index=chain.stages[1].index)
    runner = PipelinedRunner(chain, queue_size=1, run_stage=gate)
    producer_error = []

    def produce():
        try:
            for feed in feeds:
                runner.push(feed)
        except PipelineClosed as exc:
            producer_error.append(exc)

    producer = threading.Thread(target=produce)
    producer.start()
    assert gate.entered.wait(HANG)
    # Held at stage 1: request 0 in its worker; before it the input queue, worker 0 and queue 0-1 hold one each.
    wait_for(lambda: runner.in_flight == 4, "the stages before the gate to fill")
    closer = threading.Thread(target=lambda: producer_error.append(runner.close()))
    closer.start()
    wait_for(lambda: runner._closed, "close to start")
    gate.open.set()                               # the stage busy with a request finishes it, then stops
    closer.join(HANG)
    producer.join(HANG)
    assert not closer.is_alive() and not producer.is_alive()
    assert not any(t.is_alive() for t in runner._threads)
    dropped = [e for e in producer_error if isinstance(e, int)]
    assert dropped == [4]                         # every request accepted was dropped, none popped
    assert any(isinstance(e, PipelineClosed) for e in producer_error)   # the blocked push was released
    assert runner.pop() is None
    with pytest.raises(PipelineClosed, match="closed"):
        runner.push(feeds[0])
    assert runner.close() == 0                    # idempotent


def test_stream_stopped_early_closes_the_runner(v1_runs):
    _, chain = open_chain(v1_runs[2], tpus=[])
    runner = PipelinedRunner(chain)
    stream = runner.stream(sample_feeds(chain, 50))
    assert next(stream).request_id == 0
    stream.close()
    assert not any(t.is_alive() for t in runner._threads)


def test_stream_hands_a_bad_feed_to_the_consumer_after_the_good_ones(v1_runs):
    _, chain = open_chain(v1_runs[2], tpus=[])
    feeds = sample_feeds(chain, 4)
    name = chain.inputs[0]["name"]
    feeds[3] = {name: feeds[3][name][..., :1]}              # wrong shape: refused by push in the producer
    got = []
    with pytest.raises(ChainError, match=f"pipeline: input '{name}' has shape"):
        for result in PipelinedRunner(chain).stream(feeds):
            got.append(result.request_id)
    assert got == [0, 1, 2]


def test_push_copies_the_inputs_so_buffers_can_be_reused(coral_data, v1_runs):
    _, chain = open_chain(v1_runs[2], tpus=[])
    feeds = sample_feeds(chain, 5, seed=8)
    expected = reference_outputs(coral_data, V1, feeds)
    name = chain.inputs[0]["name"]
    buffer = np.empty_like(feeds[0][name])
    runner = PipelinedRunner(chain, queue_size=0)
    for feed in feeds:                                   # one buffer, refilled for every request
        buffer[...] = feed[name]
        runner.push({name: buffer})
    buffer[...] = 0
    runner.push(None)
    for want in expected:
        assert np.array_equal(runner.pop().outputs[chain.outputs[0]["name"]], want)
