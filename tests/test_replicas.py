"""Copies of a stage inside the pipeline (deploy.pipeline.replicas): they work at once on real CPU
interpreters, results keep input order and the bytes one copy gives; failures and close stay contained."""
import threading
import time

import numpy as np
import pytest

import runfolder
from deploy.core.chain import run_interpreter
from deploy.core.open import Runtime, open_chain
from deploy.core.stages import StageError, load_stages
from deploy.pipeline import replicas
from deploy.pipeline.runner import PipelinedRunner, RequestFailed
from tests.conftest import copy_run, run_cli


@pytest.fixture(scope="module")
def chain_and_copies(tiny_run):
    manifest, chain = open_chain(tiny_run, "cpu", tpus=[])
    copies = replicas.load_copies(tiny_run, manifest, {1: 3}, Runtime("cpu", tpus=[]))
    return chain, copies


def _feeds(chain, count):
    spec = chain.inputs[0]
    rng = np.random.default_rng(7)
    return [{spec["name"]: rng.integers(0, 256, spec["shape"], dtype=np.uint8)} for _ in range(count)]


class _SlowStage:
    """run_stage for the runner: stage position 1 sleeps (a slow device; sleeping frees the GIL as
    invoke does) and counts how many of its copies work at the same time."""

    def __init__(self, fail_on=None):
        self.lock, self.now, self.most, self.fail_on, self.interpreters = threading.Lock(), 0, 0, fail_on, set()

    def __call__(self, stage, values):
        if stage.index != 1:
            return run_interpreter(stage.interpreter, values)
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)
            self.interpreters.add(id(stage.interpreter))
        try:
            time.sleep(0.005)
            if self.fail_on is not None and self.fail_on(values):
                raise RuntimeError("this copy's device went away")
            return run_interpreter(stage.interpreter, values)
        finally:
            with self.lock:
                self.now -= 1


def test_copies_work_at_once_and_results_keep_order_and_bytes(chain_and_copies):
    chain, copies = chain_and_copies
    feeds = _feeds(chain, 80)
    expected = [chain.run(feed) for feed in feeds]
    slow = _SlowStage()
    with PipelinedRunner(chain, run_stage=slow, copies=copies) as runner:
        results = list(runner.stream(feeds, request_ids=range(100, 180)))
    assert [r.request_id for r in results] == list(range(100, 180))
    for result, want in zip(results, expected):
        assert result.outputs.keys() == want.keys()
        assert all(np.array_equal(result.outputs[name], want[name]) for name in want)
    assert len(slow.interpreters) == 3, "every copy (the stage and its 2 copies) should have taken requests"
    assert slow.most >= 2, "copies never overlapped"


def test_a_failing_copy_fails_only_its_request(chain_and_copies):
    chain, copies = chain_and_copies
    feeds = _feeds(chain, 30)
    marked = run_interpreter(chain.stages[0].interpreter, feeds[11])   # what stage 1 gets for request 11
    slow = _SlowStage(fail_on=lambda values: all(np.array_equal(values[name], marked[name]) for name in marked))
    with PipelinedRunner(chain, run_stage=slow, copies=copies) as runner:
        results = list(runner.stream(feeds, errors="yield"))
    assert [r.request_id for r in results] == list(range(30))
    failed = [r.request_id for r in results if r.error is not None]
    assert failed == [11] and isinstance(results[11].error, RequestFailed)
    assert "device went away" in str(results[11].error)


def test_close_with_requests_inside_a_replicated_stage_returns_and_stops_every_thread(chain_and_copies):
    chain, copies = chain_and_copies
    runner = PipelinedRunner(chain, run_stage=_SlowStage(), copies=copies, queue_size=4)
    for feed in _feeds(chain, 6):
        runner.push(feed)
    runner.close()
    assert not any(t.is_alive() for t in runner._threads + runner._helpers)


def test_a_copy_must_be_the_same_stage(tiny_run, chain_and_copies):
    chain, _ = chain_and_copies
    manifest = runfolder.load(tiny_run)
    other = load_stages(tiny_run, dict(manifest, stages=[manifest["stages"][2]]), "cpu", None, [], True)
    with pytest.raises(StageError, match="copies must be the same stage file"):
        PipelinedRunner(chain, copies={1: other})


def test_spare_devices_go_to_the_stage_slowest_per_copy():
    assert replicas.plan_copies([10.0, 30.0, 5.0], 5) == [1, 3, 1]
    assert replicas.plan_copies([10.0, 30.0, 5.0], 3) == [1, 1, 1]
    assert replicas.plan_copies([10.0, 12.0], 4) == [2, 2]
    assert replicas.parse_copies("1:3, 2:2", 3) == {1: 3, 2: 2}
    for bad in ("1", "x:2", "1:0", "5:2"):
        with pytest.raises(StageError, match="--replicas"):
            replicas.parse_copies(bad, 3)


def test_deploy_bench_runs_and_records_the_replicated_pipeline(tiny_run, tmp_path):
    run = copy_run(tiny_run, tmp_path)
    result = run_cli("deploy", "bench", "--run", run, "--samples", 20, "--warmup", 2, "--replicas", "1:2",
                     "--no-plot", timeout=300)
    assert result.returncode == 0, result.stderr
    recorded = runfolder.load(run)["deploy"]["bench"]
    assert recorded["copies"] == {"1": 2} and recorded["replicated"]["samples"] == 20
    assert recorded["replicated_speedup"] > 0
    assert "stage 1: 2 copies (cpu, cpu)" in result.stdout and "replicated (stage 1 x2)" in result.stdout
    auto = run_cli("deploy", "bench", "--run", run, "--samples", 5, "--warmup", 1, "--replicas", "auto",
                   "--no-plot", timeout=300)
    assert auto.returncode == 0 and "no spare Edge TPU" in auto.stdout


def test_the_replicas_bench_checks_order_and_bytes_and_prints_one_json_line(coral_data):
    import json
    result = run_cli("bench.replicas", "--model", coral_data / "mobilenet_v1_0.25_128_quant.tflite",
                     "--copies", "1,2", "--samples", 20, "--repeats", 1, "--slow-ms", 2, timeout=300)
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout.splitlines()[-1])["rows"]
    assert [r["copies"] for r in rows] == [1, 2] and rows[0]["speedup"] == 1.0
