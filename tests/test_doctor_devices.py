"""`deploy doctor` on plugged-in Edge TPUs, from fake sysfs and /dev trees: USB 2 links, device nodes
this user cannot open, a PCIe TPU without its driver, one core of a Dual Edge TPU, the max-clock runtime;
and `deploy bench`'s reading of a gap between measured and estimated time."""
import os

import pytest

from deploy.cli import doctor
from deploy.cli.doctor_devices import device_verdicts, explain_gap, gather_devices


def _usb(root, name, ids=("18d1", "9302"), speed="5000", bus=2, dev=3):
    device = root / "sys" / "bus" / "usb" / "devices" / name
    device.mkdir(parents=True)
    for field, value in zip(("idVendor", "idProduct", "speed", "busnum", "devnum"), (*ids, speed, bus, dev)):
        (device / field).write_text(f"{value}\n")
    node = root / "dev" / "bus" / "usb" / f"{bus:03d}" / f"{dev:03d}"
    node.parent.mkdir(parents=True, exist_ok=True)
    node.write_text("")
    return node


def _pci(root, name="0000:01:00.0", driver=None, apex=False):
    device = root / "sys" / "bus" / "pci" / "devices" / name
    device.mkdir(parents=True)
    (device / "vendor").write_text("0x1ac1\n")
    (device / "device").write_text("0x089a\n")
    if driver:
        target = root / "sys" / "bus" / "pci" / "drivers" / driver
        target.mkdir(parents=True)
        (device / "driver").symlink_to(target)
    if apex:
        (root / "dev").mkdir(exist_ok=True)
        (root / "dev" / "apex_0").write_text("")


def _gather(root, access=os.access):
    return gather_devices(str(root / "sys"), str(root / "dev"), access)


def test_a_usb_accelerator_on_a_usb_2_link_is_named_with_the_fix(tmp_path):
    _usb(tmp_path, "2-1", speed="480")
    _usb(tmp_path, "4-1", speed="5000", bus=4, dev=2)
    _usb(tmp_path, "1-1", ids=("046d", "c52b"), speed="12", bus=1, dev=5)   # a mouse: not a Coral
    usb, pci = _gather(tmp_path)
    assert sorted(c.speed_mbps for c in usb) == [480, 5000]
    verdicts = device_verdicts(usb, pci)
    slow = [v for v in verdicts if v[0] == "warning"]
    assert len(slow) == 1 and "2-1" in slow[0][1] and "480 Mb/s (USB 2)" in slow[0][1] and "USB 3 port" in slow[0][2]
    assert any(v[0] == "ok" and "4-1" in v[1] for v in verdicts)


def test_a_device_node_this_user_cannot_open_is_bad_with_the_plugdev_fix(tmp_path):
    node = _usb(tmp_path, "2-1")
    usb, pci = _gather(tmp_path, access=lambda path, mode: path != str(node))
    assert usb[0].node == str(node) and usb[0].accessible is False
    bad = [v for v in device_verdicts(usb, pci) if v[0] == "bad"]
    assert len(bad) == 1 and str(node) in bad[0][1] and "plugdev" in bad[0][2]


def test_a_pcie_edge_tpu_without_dev_apex_names_the_driver(tmp_path):
    _pci(tmp_path)
    usb, pci = _gather(tmp_path)
    bad = [v for v in device_verdicts(usb, pci) if v[0] == "bad"]
    assert len(bad) == 1 and "no /dev/apex_*" in bad[0][1] and "not loaded" in bad[0][1]
    assert "gasket-dkms" in bad[0][2]


def test_one_pcie_core_hints_at_a_dual_edge_tpu_in_a_one_lane_slot(tmp_path):
    _pci(tmp_path, driver="apex", apex=True)
    usb, pci = _gather(tmp_path)
    assert pci[0].driver == "apex" and pci[0].nodes
    verdicts = device_verdicts(usb, pci)
    assert not [v for v in verdicts if v[0] == "bad"]
    assert any("Dual Edge TPU" in v[1] for v in verdicts)


def test_the_max_clock_runtime_is_named():
    assert any("libedgetpu1-max" in v[1] for v in device_verdicts([], [], ["libedgetpu1-max"]))
    assert not device_verdicts([], [], ["libedgetpu1-std"])


def test_doctor_reports_device_faults_and_exits_1_on_a_bad_one(tmp_path, monkeypatch):
    _usb(tmp_path, "2-1", speed="480")
    _pci(tmp_path)
    env = doctor.gather(sysfs_root=str(tmp_path / "sys"), dev_root=str(tmp_path / "dev"),
                        environ={}, ld_conf=str(tmp_path / "none"), dpkg_dir=str(tmp_path / "none"))
    verdicts = doctor.diagnose(env)
    text = "\n".join(doctor.report_lines(env, verdicts))
    assert "480 Mb/s (USB 2)" in text and "no /dev/apex_*" in text
    assert verdicts[0].level == doctor.BAD


@pytest.mark.parametrize("verdicts, likely", [
    ([("warning", "the USB Accelerator at /sys/x runs at 480 Mb/s (USB 2), not 5000 Mb/s", "fix")], "480 Mb/s"),
    ([], "no device fault found"),
])
def test_bench_explains_a_stage_slower_than_its_estimate(verdicts, likely):
    lines = explain_gap([9.0, None, 2.1], [2.0, 3.0, 2.0], verdicts)
    assert lines[0] == "stage 0: measured 9.00 ms on its Edge TPU against an estimated 2.00 ms (4.5x)"
    assert len([l for l in lines if l.startswith("stage")]) == 1 and likely in lines[-1]
    assert explain_gap([2.1], [2.0], verdicts) == []
