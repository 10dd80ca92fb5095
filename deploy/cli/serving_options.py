"""Options shared by ``serve-api`` and ``worker``: run folder, upstream (in-process or a chain) and queue."""
import os

from datasets.decode_limits import MAX_IMAGE_PIXELS, DecodeLimits
from deploy.cli.options import add_runtime_options
from runfolder.errors import OptionError


def add_common(parser):
    parser.add_argument("--run", required=True, help="run folder (written by quantize, optionally compile)")
    parser.add_argument("--chain", default=None,
                        help="stage servers host:port,host:port,... in stage order (default: run the "
                             "stages in this process)")
    add_runtime_options(parser, devices_help="per-stage devices for in-process stages (as deploy)", xnnpack=False)
    parser.add_argument("--queue", default=None,
                        help="sqlite:PATH (default: sqlite:RUN/serving/jobs.db) or redis://host:port/db")
    parser.add_argument("--max-attempts", type=int, default=3,
                        help="runs of a job whose worker dies before it is marked failed")
    parser.add_argument("--lease-s", type=float, default=30.0,
                        help="seconds a worker holds a job without renewing before others may take it")
    parser.add_argument("--top-k", type=int, default=3, help="classes in each answer")
    parser.add_argument("--max-image-pixels", type=int, default=MAX_IMAGE_PIXELS,
                        help="largest image decoded, width x height, checked from its header "
                             f"(default {MAX_IMAGE_PIXELS}); concurrent decodes share room for two of them")
    parser.add_argument("--chain-timeout-s", type=float, default=10.0, help="deadline of each call to --chain")
    from deploy.net import tls  # plain Python; grpc is only needed when --chain is used
    tls.add_arguments(parser)


def queue_url(args):
    return args.queue or "sqlite:" + os.path.join(args.run, "serving", "jobs.db")


def upstream_factory(args):
    """A no-argument callable making a fresh (not yet loaded) upstream, checked enough to fail early."""
    from deploy.serving.upstream import ChainUpstream, LocalUpstream
    limits = DecodeLimits(args.max_image_pixels)   # one budget for every upstream (thread) of this process
    if args.chain:
        from deploy.net import tls
        from deploy.net.channels import split_hosts
        try:
            hosts = split_hosts(args.chain)
        except OptionError as exc:
            raise OptionError(f"--chain {args.chain!r}: {exc}") from exc
        files = tls.from_args(args)
        return lambda: ChainUpstream(args.run, hosts, tls=files, timeout_s=args.chain_timeout_s, top_k=args.top_k,
                                     limits=limits)
    return lambda: LocalUpstream(args.run, args.devices, args.threads, top_k=args.top_k, limits=limits,
                                 fallback=args.fallback == "cpu", invoke_timeout=args.invoke_timeout)


def parse_listen(text):
    """("host", port) from host:port (IPv6 as [::1]:8000)."""
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise OptionError(f"--listen {text!r}: expected host:port, e.g. 127.0.0.1:8000")
    return host.strip("[]"), int(port)
