"""``python -m deploy verify``: the stage chain against the unsplit model, or Edge TPU stages against CPU ones."""
from deploy.cli.options import add_runtime_options, runtime_of
from runfolder import cli


def parser():
    p = cli.ArgumentParser(
        prog="python -m deploy verify",
        description="Run the stage chain and the unsplit model on the same inputs; exit 1 if any output "
                    "differs. With --devices naming an Edge TPU, compare the compiled stages on the TPU with "
                    "the same stages' int8 files on the CPU instead (exit 3 when no stage can run on a TPU).",
        epilog="examples:\n  python -m deploy verify --run runs/demo --samples 256\n"
               "  python -m deploy verify --run runs/demo --devices usb:0,usb:1")
    p.add_argument("--run", required=True, help="run folder (written by quantize, optionally compile)")
    add_runtime_options(p)
    p.add_argument("--reference", default=None, help="unsplit model (default: the run's int8 model)")
    p.add_argument("--samples", type=int, default=64, help="inputs compared (test split images, else random)")
    return p


def _names_a_tpu(devices):
    return bool(devices) and any(d.strip() not in ("", "cpu") for d in devices.split(","))


def run(args):
    from deploy.cli import actions
    if _names_a_tpu(args.devices):
        actions.verify_devices_run(args.run, runtime_of(args), args.samples)
        return 0
    result = actions.verify_run(args.run, args.reference, args.samples, runtime_of(args))
    return 0 if result["bit_exact"] else 1
