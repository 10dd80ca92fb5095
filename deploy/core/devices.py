"""Which device each stage runs on: parse ``--devices``, name TPUs canonically, assign automatically.

Device strings follow pycoral's ``make_interpreter``: ``usb:<N>`` (the N-th USB
Accelerator), ``pci:<N>`` (the N-th PCIe/M.2 module), ``:<N>`` (the N-th Edge
TPU of any kind), and here also ``cpu``. A TPU is always named canonically
(``usb:N`` or ``pci:N``) before its delegate is loaded, so ``:0`` and ``usb:0``
share one delegate instead of opening the same device twice.
"""
import collections
from runfolder.errors import OptionError

Assignment = collections.namedtuple("Assignment", "device note")
Assignment.__doc__ = """device: "cpu", "usb:N" or "pci:N"; note: why, when it is not what was asked (or None)."""


def parse_devices(text, count):
    """``usb:0,usb:1,cpu`` to one device string (or "cpu") per stage; one entry applies to all.

    Raises:
      ValueError: not one entry per stage, or an entry that is not a device.
    """
    entries = [e.strip() for e in text.split(",") if e.strip()]
    if len(entries) == 1:
        entries = entries * count
    if len(entries) != count:
        raise OptionError(f"--devices lists {len(entries)} devices for {count} stages; give one per stage "
                         "(e.g. usb:0,usb:1,cpu) or one for all")
    for entry in entries:
        kind, _, number = entry.partition(":")
        if entry != "cpu" and (kind not in ("usb", "pci", "") or not number.isdigit()):
            raise OptionError(f"device '{entry}' is not one of cpu, usb:<N>, pci:<N>, :<N>")
    return entries


def tpu_names(tpus):
    """Canonical names of EdgeTpu(type, path) entries in order: usb:0, usb:1, pci:0, ..."""
    counts, names = collections.Counter(), []
    for tpu in tpus:
        names.append(f"{tpu.type}:{counts[tpu.type]}")
        counts[tpu.type] += 1
    return names


def canonical(device, tpus):
    """The canonical name of a requested device, given the TPUs found.

    Returns:
      Assignment: ``cpu`` for cpu; ``usb:N``/``pci:N`` when that TPU exists,
      or when no TPU was listed at all (the delegate is then tried as asked);
      ``cpu`` with a note when the TPU asked for is not among those found.
    """
    if device == "cpu":
        return Assignment("cpu", None)
    names = tpu_names(tpus)
    kind, _, number = device.partition(":")
    if not names:
        return Assignment(device, None)
    if kind == "":
        index = int(number)
        if index < len(names):
            return Assignment(names[index], None)
    elif device in names:
        return Assignment(device, None)
    return Assignment("cpu", f"Edge TPU {device} not found (found: {', '.join(names)})")


def assign_devices(compiled, tpus, requested=None):
    """One Assignment per stage.

    Args:
      compiled: per stage, whether it has a compiled (_edgetpu) file.
      tpus: the Edge TPUs found (EdgeTpu list).
      requested: None for automatic, else the ``--devices`` text.
    Returns:
      Automatic: compiled stages take the TPUs in turn (a TPU is shared only
      when there are more compiled stages than TPUs); other stages get cpu.
      Requested: each entry named canonically (see ``canonical``).
    Raises:
      ValueError: from ``parse_devices``.
    """
    if requested:
        return [canonical(d, tpus) for d in parse_devices(requested, len(compiled))]
    names = tpu_names(tpus)
    assigned, turn = [], 0
    for has_compiled in compiled:
        if has_compiled and names:
            assigned.append(Assignment(names[turn % len(names)], None))
            turn += 1
        else:
            assigned.append(Assignment("cpu", None))
    return assigned
