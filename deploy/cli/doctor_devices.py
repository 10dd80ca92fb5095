"""The faults users meet with Edge TPUs that are plugged in, read from sysfs and /dev (for ``deploy doctor``).

  * a USB Accelerator enumerated at USB 2 speed (480 Mb/s instead of 5000): the most common "slower than
    the benchmark" cause (a USB 2 port, hub or cable);
  * its device node not readable and writable by this user (the udev rule of libedgetpu1-std gives the
    plugdev group access);
  * a PCIe Edge TPU visible on the bus with no /dev/apex_* (the gasket/apex driver is not built or not
    loaded for this kernel), or /dev/apex_* this user cannot open (the apex group);
  * one PCIe Edge TPU only: a Dual Edge TPU card in a slot with one PCIe lane shows only one core;
  * libedgetpu1-max (maximum clock: faster, hot enough to throttle) rather than -std.

``gather_devices(sysfs_root, dev_root)`` returns plain data; ``device_verdicts`` judges it; tests give
them a fake sysfs tree.
"""
import dataclasses
import glob
import os

from deploy.core.edgetpu import USB_IDS

PCI_IDS = {("0x1ac1", "0x089a")}   # Global Unichip Corp., Coral Edge TPU (M.2, mini PCIe, Dual)
USB3_MBPS = 5000


@dataclasses.dataclass
class UsbCoral:
    path: str                # /sys/bus/usb/devices/2-1
    ids: tuple               # (vendor, product)
    speed_mbps: int = None   # what the link enumerated at
    node: str = None         # /dev/bus/usb/002/003
    accessible: bool = None  # this user can read and write the node


@dataclasses.dataclass
class PciCoral:
    path: str                # /sys/bus/pci/devices/0000:01:00.0
    driver: str = None       # the kernel driver bound to it (apex), or None
    nodes: list = dataclasses.field(default_factory=list)   # /dev/apex_* present
    accessible: bool = None


def _read(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def gather_devices(sysfs_root="/sys", dev_root="/dev", access=os.access):
    """([UsbCoral], [PciCoral]) as sysfs and /dev show them."""
    usb = []
    for device in sorted(glob.glob(os.path.join(sysfs_root, "bus/usb/devices/*"))):
        ids = ((_read(os.path.join(device, "idVendor")) or "").lower(),
               (_read(os.path.join(device, "idProduct")) or "").lower())
        if ids not in USB_IDS:
            continue
        speed, bus, dev = (_read(os.path.join(device, name)) for name in ("speed", "busnum", "devnum"))
        node = os.path.join(dev_root, "bus/usb", f"{int(bus):03d}", f"{int(dev):03d}") \
            if bus and dev and bus.isdigit() and dev.isdigit() else None
        reachable = node is not None and os.path.exists(node)
        usb.append(UsbCoral(device, ids, int(float(speed)) if speed else None, node,
                            access(node, os.R_OK | os.W_OK) if reachable else None))
    nodes = sorted(glob.glob(os.path.join(dev_root, "apex_*")))
    pci = []
    for device in sorted(glob.glob(os.path.join(sysfs_root, "bus/pci/devices/*"))):
        ids = tuple((_read(os.path.join(device, name)) or "").lower() for name in ("vendor", "device"))
        if ids not in PCI_IDS:
            continue
        driver = os.path.basename(os.path.realpath(os.path.join(device, "driver"))) \
            if os.path.exists(os.path.join(device, "driver")) else None
        pci.append(PciCoral(device, driver, nodes, all(access(n, os.R_OK | os.W_OK) for n in nodes) if nodes else None))
    return usb, pci


def device_verdicts(usb, pci, flavours=()):
    """[(level, message, fix)] for what ``gather_devices`` found; ``flavours``: installed libedgetpu packages.
    Levels as ``deploy doctor``'s: "bad", "warning", "info", "ok"."""
    bad, warn, info, ok = "bad", "warning", "info", "ok"
    out = []
    for coral in usb:
        if coral.speed_mbps is not None and coral.speed_mbps < USB3_MBPS:
            out.append((warn, f"the USB Accelerator at {coral.path} runs at {coral.speed_mbps} Mb/s (USB 2), not "
                              f"{USB3_MBPS} Mb/s: every input, output and streamed parameter crosses it ~10x slower",
                        "plug it straight into a USB 3 port (blue, or marked SS) with the cable it came with; "
                        "avoid USB 2 hubs and extension cables"))
        elif coral.speed_mbps is not None:
            out.append((ok, f"the USB Accelerator at {coral.path} runs at {coral.speed_mbps} Mb/s (USB 3)", None))
        if coral.accessible is False:
            out.append((bad, f"{coral.node} (the USB Accelerator) cannot be opened by this user: the Edge TPU "
                             "delegate will fail to load",
                        "install libedgetpu1-std (its udev rule gives the plugdev group access), add yourself: "
                        "sudo usermod -aG plugdev $USER, then log out and in and replug the Accelerator"))
    for coral in pci:
        if not coral.nodes:
            out.append((bad, f"a PCIe Edge TPU is on the bus ({coral.path}) but there is no /dev/apex_*: its "
                             f"driver is {'bound as ' + coral.driver if coral.driver else 'not loaded'}",
                        "install gasket-dkms from Coral's apt repository (on new kernels a community-patched "
                        "gasket driver), then sudo modprobe apex or reboot; check dmesg for apex errors"))
        elif coral.accessible is False:
            out.append((bad, f"{', '.join(coral.nodes)} cannot be opened by this user",
                        "add a udev rule giving the apex group access (Coral's docs), then "
                        "sudo usermod -aG apex $USER and log in again"))
    if len(pci) == 1 and pci[0].nodes:
        out.append((info, "one PCIe Edge TPU found: a Dual Edge TPU card shows only one of its two cores in a slot "
                          "with a single PCIe lane (most M.2 E-key slots)",
                    "for both cores use a slot with two lanes, or an adapter that provides them"))
    if "libedgetpu1-max" in flavours or "libedgetpu1-legacy-max" in flavours:
        out.append((info, "libedgetpu1-max runs the Edge TPU at its maximum clock: faster, but the Accelerator gets "
                          "hot and may throttle (then slower than -std)",
                    "for steady timings use libedgetpu1-std"))
    return out


def explain_gap(measured_ms, estimated_ms, verdicts, factor=1.5):
    """Lines for ``deploy bench``: stages on an Edge TPU slower than ``factor`` x the estimate, and the
    device verdicts (level, message, fix) that would explain it."""
    slow = [(k, m, e) for k, (m, e) in enumerate(zip(measured_ms, estimated_ms))
            if m is not None and e and m > factor * e]
    if not slow:
        return []
    lines = [f"stage {k}: measured {m:.2f} ms on its Edge TPU against an estimated {e:.2f} ms ({m / e:.1f}x)"
             for k, m, e in slow]
    causes = [v for v in verdicts if v[0] in ("bad", "warning") or "libedgetpu1-max" in v[1]]
    lines += [f"likely: {message}" for _, message, _ in causes] or [
        "no device fault found (python -m deploy doctor); the estimate itself can be off for this model "
        "(bench/edgetpu_model.py reports its error)"]
    return lines
