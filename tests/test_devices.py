"""Edge TPU discovery in a fake sysfs, device strings, and where each stage runs (and why)."""
import re
import threading

import numpy as np
import pytest

import runfolder
from deploy.core import edgetpu
from deploy.core.chain import StageChain
from deploy.core.classify import whole_model_chain
from deploy.core.devices import Assignment, assign_devices, canonical, tpu_names
from deploy.core.edgetpu import EdgeTpu, list_edge_tpus
from deploy.core.open import Runtime
from deploy.core.stages import load_stages, parse_devices
from tests.conftest import copy_run, run_cli
from quantize.plan_options import PlanOptions


def stage_path(run, index):
    return runfolder.resolve(run, runfolder.load(run)["stages"][index]["model"])


def _usb(sysfs, name, vendor, product):
    device = sysfs / "bus" / "usb" / "devices" / name
    device.mkdir(parents=True)
    (device / "idVendor").write_text(vendor + "\n")
    (device / "idProduct").write_text(product + "\n")
    return device


def test_list_edge_tpus_in_a_fake_sysfs(tmp_path):
    sysfs, dev = tmp_path / "sys", tmp_path / "dev"
    fresh = _usb(sysfs, "1-1", "1a6e", "089a")          # USB Accelerator before first use
    used = _usb(sysfs, "1-2", "18D1", "9302")           # after (ids in upper case are still found)
    _usb(sysfs, "1-3", "046d", "c52b")                  # a mouse
    _usb(sysfs, "1-4", "1a6e", "9302")                  # vendor of one, product of the other
    (sysfs / "bus" / "usb" / "devices" / "1-1:1.0").mkdir()   # interface folder without ids
    dev.mkdir()
    (dev / "apex_0").touch()
    (dev / "ttyS0").touch()

    found = list_edge_tpus(sysfs_root=str(sysfs), dev_root=str(dev))
    assert found == [EdgeTpu("usb", str(fresh)), EdgeTpu("usb", str(used)),
                     EdgeTpu("pci", str(dev / "apex_0"))]
    assert list_edge_tpus(sysfs_root=str(tmp_path / "none"), dev_root=str(tmp_path / "none")) == []


def test_parse_devices():
    assert parse_devices("usb:0,usb:1,cpu", 3) == ["usb:0", "usb:1", "cpu"]
    assert parse_devices(" pci:0 ", 2) == ["pci:0", "pci:0"]      # one entry for all stages
    assert parse_devices(":1,cpu", 2) == [":1", "cpu"]
    with pytest.raises(ValueError, match=r"lists 2 devices for 3 stages; give one per stage"):
        parse_devices("usb:0,usb:1", 3)
    for bad in ("gpu:0", "usb", "usb:x", "tpu"):
        with pytest.raises(ValueError, match=rf"device '{re.escape(bad)}' is not one of cpu, usb:<N>"):
            parse_devices(bad, 1)


def _feed(chain, pixels):
    return {chain.inputs[0]["name"]: pixels[np.newaxis]}


def test_uncompiled_stages_with_a_tpu_run_on_cpu_and_say_why(tiny_run):
    manifest = runfolder.load(tiny_run)
    stages = load_stages(tiny_run, manifest, tpus=[EdgeTpu("usb", "x")])
    assert len(stages) == len(manifest["stages"])
    for stage in stages:
        assert stage.placement == "cpu"
        assert "not compiled" in stage.reason and "python -m compile" in stage.reason
        assert stage.path == str(stage_path(tiny_run, stage.index))

    manifest["compile"] = {"status": "compiler-missing"}
    stages = load_stages(tiny_run, manifest, tpus=[EdgeTpu("usb", "x")])
    assert all("edgetpu_compiler was not found" in s.reason for s in stages)
    stages = load_stages(tiny_run, manifest, devices="cpu", tpus=[EdgeTpu("usb", "x")])
    assert all("assigned to the CPU by --devices" in s.reason for s in stages)
    stages = load_stages(tiny_run, manifest, tpus=[])
    assert all("no Edge TPU found" in s.reason for s in stages)


# ai-edge-litert's Delegate.__del__ trips over its own failed load (AttributeError '_library'); harmless.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_compiled_stage_falls_back_to_cpu_when_the_delegate_cannot_load(tiny_run, tmp_path, standin_env):
    run = copy_run(tiny_run, tmp_path)
    compiled = run_cli("compile", "--run", run, env=standin_env)
    assert compiled.returncode == 0, compiled.stderr
    manifest = runfolder.load(run)
    assert manifest["compile"]["status"] == "compiled"
    assert all(s["compiled"] and runfolder.resolve(run, s["compiled"]).is_file() for s in manifest["stages"])

    stages = load_stages(run, manifest, tpus=[EdgeTpu("usb", "x")])   # no libedgetpu here
    for stage in stages:
        assert stage.placement == "cpu"
        assert "Edge TPU delegate" in stage.reason and edgetpu.library_name() in stage.reason
        assert stage.path == str(stage_path(run, stage.index))      # the int8 file, not the compiled one
    # ...and the fallback chain still computes the unsplit model's outputs.
    chain = StageChain(stages)
    reference = whole_model_chain(runfolder.resolve(run, manifest["quantization"]["int8_model"]))
    with np.load(run / "data" / "test_set.npz") as data:
        pixels = data["images"][0]
    ours, theirs = chain.run(_feed(chain, pixels)), reference.run(_feed(reference, pixels))
    assert all(np.array_equal(ours[k], theirs[k]) for k in theirs)


# ---------------------------------------------------------------- assignment and delegate sharing

TWO_USB_ONE_PCI = [EdgeTpu("usb", "/sys/bus/usb/devices/1-1"), EdgeTpu("usb", "/sys/bus/usb/devices/1-2"),
                   EdgeTpu("pci", "/dev/apex_0")]


def test_tpus_get_canonical_names_and_requests_are_resolved():
    assert tpu_names(TWO_USB_ONE_PCI) == ["usb:0", "usb:1", "pci:0"]
    assert canonical(":2", TWO_USB_ONE_PCI) == Assignment("pci:0", None)     # N-th TPU of any kind
    assert canonical(":0", TWO_USB_ONE_PCI) == canonical("usb:0", TWO_USB_ONE_PCI) == Assignment("usb:0", None)
    assert canonical("cpu", TWO_USB_ONE_PCI) == Assignment("cpu", None)
    assert canonical("pci:1", TWO_USB_ONE_PCI) == Assignment(
        "cpu", "Edge TPU pci:1 not found (found: usb:0, usb:1, pci:0)")
    assert canonical(":3", TWO_USB_ONE_PCI).device == "cpu"
    assert canonical("usb:1", []) == Assignment("usb:1", None)              # none listed: try as asked


def test_automatic_assignment_gives_tpus_to_compiled_stages_in_turn():
    devices = [a.device for a in assign_devices([True, False, True, True, True], TWO_USB_ONE_PCI)]
    assert devices == ["usb:0", "cpu", "usb:1", "pci:0", "usb:0"]         # shared only when TPUs run out
    assert [a.device for a in assign_devices([True, True], [])] == ["cpu", "cpu"]
    requested = assign_devices([True, True, True], TWO_USB_ONE_PCI, ":1,cpu,usb:7")
    assert [a.device for a in requested] == ["usb:1", "cpu", "cpu"]
    assert requested[2].note == "Edge TPU usb:7 not found (found: usb:0, usb:1, pci:0)"


class _CountingRuntime:
    """A runtime whose load_delegate counts loads per device (libedgetpu opens a device once)."""
    name, pycoral = "counting", None

    def __init__(self):
        self.loads = []
        self.lock = threading.Lock()

    def load_delegate(self, library, options):
        with self.lock:
            self.loads.append(options["device"])
        return object()


def test_delegate_is_loaded_once_per_device_and_shared_across_threads():
    runtime = _CountingRuntime()
    cache = edgetpu.DelegateCache(runtime, open_library=lambda name: None)
    got = []
    threads = [threading.Thread(target=lambda d=d: got.append((d, cache.get(d))))
               for d in ["usb:0", "usb:1", "usb:0", "usb:1"] * 8]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(runtime.loads) == ["usb:0", "usb:1"]
    assert len({id(delegate) for device, delegate in got if device == "usb:0"}) == 1
    assert edgetpu.delegate_cache(runtime) is edgetpu.delegate_cache(runtime)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_requested_devices_reach_the_delegate_by_canonical_name(tiny_run, tmp_path, standin_env):
    run = copy_run(tiny_run, tmp_path)
    assert run_cli("compile", "--run", run, env=standin_env).returncode == 0
    tpus = [EdgeTpu("usb", "a"), EdgeTpu("usb", "b")]
    stages = load_stages(run, runfolder.load(run), devices=":1,cpu,usb:5", tpus=tpus)
    assert "for device 'usb:1'" in stages[0].reason                    # ":1" named canonically
    assert stages[1].reason == "assigned to the CPU by --devices"
    assert stages[2].reason == "Edge TPU usb:5 not found (found: usb:0, usb:1)"
    assert all(s.placement == "cpu" for s in stages)


def test_threads_and_xnnpack_reach_the_stage_interpreters(coral_data, tmp_path):
    """Built-in kernels and XNNPACK round int8 differently; the chain must use the kernels asked for."""
    from deploy.core.verify import sample_feeds
    from quantize.stages import split_into
    model = coral_data / "mobilenet_v1_0.25_128_quant.tflite"
    split_into(str(tmp_path / "m2"), str(model), PlanOptions(stages=2), progress=lambda *_: None)
    manifest = runfolder.load(tmp_path / "m2")
    builtin = StageChain(load_stages(tmp_path / "m2", manifest, "cpu", num_threads=1, tpus=[], xnnpack=False))
    default = StageChain(load_stages(tmp_path / "m2", manifest, "cpu", num_threads=2, tpus=[]))
    whole_builtin = StageChain([_whole(model, xnnpack=False)])
    whole_default = StageChain([_whole(model, xnnpack=True)])
    feeds = sample_feeds(builtin, 8, seed=11)
    out = builtin.outputs[0]["name"]
    differs = 0
    for feed in feeds:
        assert np.array_equal(builtin.run(feed)[out], whole_builtin.run(feed)[out])
        assert np.array_equal(default.run(feed)[out], whole_default.run(feed)[out])
        differs += not np.array_equal(whole_builtin.run(feed)[out], whole_default.run(feed)[out])
    assert differs > 0, "the two kernel sets agree on every feed: this test cannot tell them apart"


def _whole(path, xnnpack):
    from deploy.core.classify import WholeModel, describe_details
    from deploy.core.runtime import make_interpreter
    interpreter = make_interpreter(path, xnnpack=xnnpack)
    return WholeModel(0, "whole", str(path), describe_details(interpreter.get_input_details()),
                      describe_details(interpreter.get_output_details()), "cpu", "", interpreter)


# ---------------------------------------------------------------- verify --devices (Edge TPU vs CPU)

@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_verify_devices_without_a_tpu_says_why_and_exits_3(tiny_run, tmp_path, standin_env):
    run = copy_run(tiny_run, tmp_path)
    result = run_cli("deploy", "verify", "--run", run, "--devices", "usb:0,cpu,cpu", "--samples", 4)
    assert result.returncode == 3, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert "cannot run: cannot compare Edge TPU with CPU results: no stage runs on an Edge TPU" in result.stderr
    assert "stage 0: not compiled" in result.stderr and "python -m deploy doctor" in result.stderr

    assert run_cli("compile", "--run", run, env=standin_env).returncode == 0
    result = run_cli("deploy", "verify", "--run", run, "--devices", "usb:0", "--samples", 4)
    assert result.returncode == 3, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert f"stage 0: cannot load the Edge TPU delegate {edgetpu.library_name()} for device 'usb:0'" in result.stderr
    assert "verify_devices" not in runfolder.load(run).get("deploy", {})


def test_verify_devices_reports_exact_match_difference_and_top1(coral_data, tmp_path, monkeypatch, capsys):
    """The comparison itself, with XNNPACK kernels standing in for the TPU (they round differently)."""
    from deploy.cli import actions as commands
    from quantize.stages import split_into
    run = tmp_path / "m2"
    split_into(str(run), str(coral_data / "mobilenet_v1_0.25_128_quant.tflite"), PlanOptions(stages=2), progress=lambda *_: None)
    real_open = commands.open_run

    def open_run(run_dir, runtime):
        on_tpu = runtime.devices != "cpu"
        manifest, chain = real_open(run_dir, Runtime("cpu", runtime.threads, xnnpack=on_tpu, tpus=[]))
        if on_tpu:
            chain.stages[0].placement = "edgetpu:usb:0"
        return manifest, chain

    monkeypatch.setattr(commands, "open_run", open_run)
    result = commands.verify_devices_run(str(run), Runtime(devices="usb:0,cpu"), samples=8)
    assert result["samples"] == 8 and result["outputs_compared"] == 8
    assert result["exact_match_rate"] == 1 - result["mismatching_outputs"] / 8 < 1
    assert result["max_abs_difference"] > 0 and 0 <= result["top1_agreement"] <= 1
    assert [p["placement"] for p in result["placements"]] == ["edgetpu:usb:0", "cpu"]
    assert runfolder.load(run)["deploy"]["verify_devices"]["exact_match_rate"] == result["exact_match_rate"]
    assert "Edge TPU vs CPU on 8 samples: exact match" in capsys.readouterr().out
