"""Edge TPU discovery in a fake sysfs, device strings, and where each stage runs (and why)."""
import re

import numpy as np
import pytest

import runfolder
from deploy import edgetpu
from deploy.chain import StageChain
from deploy.classify import whole_model_chain
from deploy.edgetpu import EdgeTpu, list_edge_tpus
from deploy.stages import load_stages, parse_devices
from tests.conftest import copy_run, run_cli


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
