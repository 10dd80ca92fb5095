"""An Edge TPU that fails mid-run (deploy.core.fallback), with a stand-in for the TPU's interpreter that
starts raising after K invokes, as libedgetpu does on a USB transfer error or an unplugged device, or
stops returning."""
import threading
import time

import numpy as np
import pytest

import runfolder
from deploy.core.fallback import DeviceFailed
from deploy.core.open import open_chain
from deploy.core.stages import _cpu_loader
from deploy.pipeline.runner import PipelinedRunner, RequestFailed
from tests.conftest import copy_run, run_cli

K = 5


class FailingAfter:
    """A stand-in for an Edge TPU stage's interpreter: the real one, until invoke K+1 raises."""

    def __init__(self, interpreter, invokes):
        self._real, self._left = interpreter, invokes

    def __getattr__(self, name):
        return getattr(self._real, name)

    def invoke(self):
        if self._left <= 0:
            raise RuntimeError("Failed to execute request: USB transfer error 2 [LibUsbDataOutCallback]")
        self._left -= 1
        self._real.invoke()


def _chain_with_a_failing_tpu(run, fallback):
    manifest, chain = open_chain(run, "cpu", tpus=[])
    stage = chain.stages[1]
    stage.interpreter, stage.placement = FailingAfter(stage.interpreter, K), "edgetpu:usb:0"
    if fallback:
        entry = manifest["stages"][1]
        stage.fallback = _cpu_loader(runfolder.verify_file(run, entry["model"], "stage"), "stage 1 file", None,
                                     True, run, entry)
    return chain


def _feeds(chain, count):
    spec = chain.inputs[0]
    rng = np.random.default_rng(3)
    return [{spec["name"]: rng.integers(0, 256, spec["shape"], dtype=np.uint8)} for _ in range(count)]


def test_without_fallback_the_request_fails_naming_stage_device_and_fix(tiny_run):
    chain = _chain_with_a_failing_tpu(tiny_run, fallback=False)
    feeds = _feeds(chain, K + 2)
    for feed in feeds[:K]:
        chain.run(feed)
    with pytest.raises(DeviceFailed) as failed:
        chain.run(feeds[K])
    message = str(failed.value)
    assert "stage 1: its Edge TPU (usb:0) failed" in message and "USB transfer error" in message
    assert "--fallback cpu" in message and "deploy doctor" in message
    assert failed.value.stage_index == 1 and failed.value.device == "usb:0"


def test_in_the_pipeline_failed_requests_come_back_in_order_and_nothing_hangs(tiny_run):
    chain = _chain_with_a_failing_tpu(tiny_run, fallback=False)
    with PipelinedRunner(chain) as runner:
        results = list(runner.stream(_feeds(chain, 12), errors="yield"))
    assert [r.request_id for r in results] == list(range(12))
    assert [r.error is None for r in results] == [True] * K + [False] * (12 - K)
    assert all(isinstance(r.error, RequestFailed) and isinstance(r.error.cause, DeviceFailed) for r in results[K:])


def test_with_fallback_the_stage_moves_to_its_cpu_file_once_and_every_request_succeeds(tiny_run, capfd):
    _, reference = open_chain(tiny_run, "cpu", tpus=[])
    chain = _chain_with_a_failing_tpu(tiny_run, fallback=True)
    feeds = _feeds(chain, 20)
    with PipelinedRunner(chain) as runner:
        results = list(runner.stream(feeds))
    for result, feed in zip(results, feeds):
        want = reference.run(feed)
        assert all(np.array_equal(result.outputs[name], want[name]) for name in want)
    stage = chain.stages[1]
    assert stage.placement == "cpu" and "moved to the CPU after its Edge TPU (usb:0) failed" in stage.reason
    err = capfd.readouterr().err
    assert err.count("moved to the CPU") == 1 and "--fallback cpu" in err


def test_the_fallback_option_is_offered_where_stages_run(tiny_run, tmp_path):
    run = copy_run(tiny_run, tmp_path)   # --eval records into the run: never into the shared one
    result = run_cli("deploy", "--run", run, "--eval", "--limit", "5", "--fallback", "cpu", timeout=300)
    assert result.returncode == 0, result.stderr
    for command in ("bench", "verify", "serve-stage"):
        assert "--fallback" in run_cli("deploy", command, "--help", timeout=60).stdout


class HangingAfter(FailingAfter):
    """The same, but invoke K+1 never returns (until the test lets it go): a device that stops answering."""

    def __init__(self, interpreter, invokes):
        super().__init__(interpreter, invokes)
        self.release = threading.Event()

    def invoke(self):
        if self._left <= 0:
            self.release.wait()
            raise RuntimeError("the stand-in was released at the end of the test")
        self._left -= 1
        self._real.invoke()


def _chain_with_a_hanging_tpu(run, fallback, timeout=0.3):
    chain = _chain_with_a_failing_tpu(run, fallback)
    stage = chain.stages[1]
    stage.interpreter = HangingAfter(stage.interpreter._real, K)
    stage.invoke_timeout = timeout
    return chain, stage.interpreter


def _within(seconds, work):
    """Runs ``work()`` on a thread; fails the test instead of hanging it when it takes longer."""
    box = {}

    def target():
        try:
            box["value"] = work()
        except BaseException as exc:   # raised again on the test's thread
            box["error"] = exc
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still running after {seconds} s: something hangs"
    if "error" in box:
        raise box["error"]
    return box["value"]


def test_a_tpu_that_stops_answering_fails_the_request_then_every_later_one_at_once(tiny_run):
    chain, hanging = _chain_with_a_hanging_tpu(tiny_run, fallback=False)
    feeds = _feeds(chain, K + 2)
    try:
        for feed in feeds[:K]:
            chain.run(feed)
        with pytest.raises(DeviceFailed) as failed:
            _within(20, lambda: chain.run(feeds[K]))
        assert "did not return within 0.3 s (--invoke-timeout)" in str(failed.value)
        assert "--fallback cpu" in str(failed.value) and failed.value.device == "usb:0"
        start = time.monotonic()
        with pytest.raises(DeviceFailed, match="still stuck: restart the process"):
            chain.run(feeds[K + 1])
        assert time.monotonic() - start < 0.25   # no second wait on a device known to be stuck
    finally:
        hanging.release.set()


def test_with_fallback_a_stuck_tpu_moves_its_stage_to_the_cpu_and_the_pipeline_goes_on(tiny_run, capfd):
    _, reference = open_chain(tiny_run, "cpu", tpus=[])
    chain, hanging = _chain_with_a_hanging_tpu(tiny_run, fallback=True)
    feeds = _feeds(chain, 16)

    def run_all():
        with PipelinedRunner(chain) as runner:
            return list(runner.stream(feeds))
    try:
        results = _within(60, run_all)
    finally:
        hanging.release.set()
    assert [r.request_id for r in results] == list(range(16))
    for result, feed in zip(results, feeds):
        want = reference.run(feed)
        assert all(np.array_equal(result.outputs[name], want[name]) for name in want)
    assert chain.stages[1].placement == "cpu" and "did not return within" in chain.stages[1].reason
    assert capfd.readouterr().err.count("moved to the CPU") == 1


def test_the_invoke_timeout_reaches_edge_tpu_stages_only(tiny_run):
    from deploy.core.open import Runtime, open_run
    _, chain = open_run(tiny_run, Runtime(devices="cpu", tpus=[], invoke_timeout=2.5))
    assert all(stage.invoke_timeout is None for stage in chain.stages)   # a CPU invoke does not hang
    for command in ("bench", "verify", "serve-stage", "serve-api"):
        assert "--invoke-timeout" in run_cli("deploy", command, "--help", timeout=60).stdout
