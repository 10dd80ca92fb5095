"""An Edge TPU that fails mid-run (deploy.core.fallback), with a stand-in for the TPU's interpreter that
starts raising after K invokes, as libedgetpu does on a USB transfer error or an unplugged device."""
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
