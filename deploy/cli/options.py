"""Options several deploy commands share, defined once so their names, defaults and help agree."""

from deploy.core.stages import DEFAULT_INVOKE_TIMEOUT

DEVICES_HELP = ("per-stage devices, e.g. usb:0,usb:1,pci:0,cpu or one for all "
                "(default: compiled stages take the Edge TPUs found in turn, the rest the CPU)")


def runtime_of(args):
    """The Runtime the ``add_runtime_options`` flags of ``args`` ask for."""
    from deploy.core.open import Runtime
    return Runtime(args.devices, args.threads, getattr(args, "xnnpack", True),
                   fallback=getattr(args, "fallback", None), invoke_timeout=args.invoke_timeout)


def add_runtime_options(parser, devices_help=DEVICES_HELP, xnnpack=True):
    """``--devices``, ``--threads`` and (unless ``xnnpack`` is False) ``--no-xnnpack``: where and how the
    stage interpreters run."""
    parser.add_argument("--devices", default=None, help=devices_help)
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads per stage interpreter (default: the runtime's choice)")
    if xnnpack:
        parser.add_argument("--no-xnnpack", dest="xnnpack", action="store_false",
                            help="use TFLite's built-in CPU kernels instead of XNNPACK (on by default)")
    parser.add_argument("--fallback", choices=["cpu"], default=None,
                        help="when a stage's Edge TPU fails mid-run (USB error, unplugged), move that stage to "
                             "its int8 CPU file and go on, saying so once (default: the request fails, naming "
                             "the stage and device)")
    parser.add_argument("--invoke-timeout", type=float, default=DEFAULT_INVOKE_TIMEOUT, metavar="SECONDS",
                        help="an Edge TPU invoke that takes longer counts as a failed device, like an error "
                             f"(then --fallback applies); 0 waits for ever (default {DEFAULT_INVOKE_TIMEOUT:g})")
