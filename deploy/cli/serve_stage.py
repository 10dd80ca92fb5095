"""python -m deploy serve-stage: serve one stage of a run folder over gRPC until SIGTERM or Ctrl-C.

  python -m deploy serve-stage --run runs/demo --stage 0 --listen 127.0.0.1:50051 --next 127.0.0.1:50052
  python -m deploy serve-stage --run runs/demo --stage 2 --listen 0.0.0.0:50053 \\
      --tls-cert stage2.pem --tls-key stage2.key --tls-ca ca.pem

On SIGTERM the health service turns NOT_SERVING at once, requests keep being
served for --drain-seconds (so load balancers and readiness probes notice),
then requests in flight get --grace-seconds to finish.
"""
import argparse
import os
import signal
import threading

from deploy.cli.options import add_runtime_options
from runfolder import cli
from runfolder.errors import CannotRunHere


def parser():
    p = cli.ArgumentParser(prog="python -m deploy serve-stage", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="run folder (quantize, optionally compile)")
    p.add_argument("--stage", type=int, required=True, help="index of the stage to serve")
    p.add_argument("--listen", default="127.0.0.1:50051",
                   help="HOST:PORT to bind (default 127.0.0.1:50051; 0.0.0.0 to accept other machines)")
    p.add_argument("--next", default=None, help="HOST:PORT of the next stage's server (not for the last stage)")
    p.add_argument("--max-in-flight", type=int, default=32,
                   help="requests held at once; more are refused with RESOURCE_EXHAUSTED (default 32)")
    p.add_argument("--exit-threshold", type=float, default=None,
                   help="early exit: reply from this stage when its exit head's top probability reaches T")
    add_runtime_options(p, devices_help="this stage's device: usb:0, pci:0, cpu (default: automatic)")
    p.add_argument("--max-message-bytes", type=int, default=None,
                   help="largest request accepted (default: 4x the expected request + 64 KiB)")
    p.add_argument("--max-streams", type=int, default=16,
                   help="streams served at once; the longest-idle one makes room for a new one (default 16)")
    p.add_argument("--stream-idle-s", type=float, default=300.0,
                   help="close a stream after this many seconds without a request (default 300)")
    p.add_argument("--add-latency-ms", type=float, default=0.0,
                   help="sleep before each run, to rehearse a slow device (deadlines, overload)")
    p.add_argument("--port-file", default=None, metavar="FILE",
                   help="write the port bound here once serving (with --listen HOST:0: the one the OS gave)")
    p.add_argument("--drain-seconds", type=float, default=1.0,
                   help="after SIGTERM: seconds NOT_SERVING but still serving (default 1)")
    p.add_argument("--grace-seconds", type=float, default=5.0,
                   help="then: seconds for requests in flight to finish (default 5)")
    from deploy.net import tls
    tls.add_arguments(p)
    return p


def write_port(path, port):
    """The port as text in ``path``, whole or not at all (written aside, then renamed)."""
    part = f"{path}.part"
    with open(part, "w") as out:
        out.write(f"{port}\n")
    os.replace(part, path)


def run(args):
    try:
        import grpc  # noqa: F401

        from deploy.net import server, tls
    except ImportError as exc:
        raise CannotRunHere(f"serving needs grpcio and grpcio-health-checking ({exc}); "
                            "pip install 'coral-stages[serve]'") from exc
    options = server.ServeOptions(
        tls=tls.from_args(args), max_in_flight=args.max_in_flight, exit_threshold=args.exit_threshold,
        devices=args.devices, num_threads=args.threads, xnnpack=args.xnnpack, fallback=args.fallback == "cpu",
        invoke_timeout=args.invoke_timeout,
        delay_s=args.add_latency_ms / 1000.0,
        max_message_bytes=args.max_message_bytes, max_streams=args.max_streams, stream_idle_s=args.stream_idle_s)
    stage_server = server.serve(args.run, args.stage, args.listen, args.next, options)
    stage = stage_server.servicer.stage
    print(f"stage {args.stage} ({stage.placement}: {stage.reason}) serving on {args.listen.rsplit(':', 1)[0]}:"
          f"{stage_server.port}" + (f", next {args.next}" if args.next else ", last stage")
          + (", mutual TLS" if args.tls_cert else ""), flush=True)
    if args.port_file:
        write_port(args.port_file, stage_server.port)
    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())
    stopping.wait()
    stage_server.begin_shutdown()
    print(f"stage {args.stage}: NOT_SERVING, draining for {args.drain_seconds} s", flush=True)
    stopping.clear()
    stopping.wait(args.drain_seconds)
    stage_server.stop(args.grace_seconds)
    print(f"stage {args.stage}: stopped", flush=True)
    return 0
