"""python -m deploy launch: start every stage of a run folder locally (one process each) until Ctrl-C/SIGTERM.

  python -m deploy launch --run runs/demo [--base-port 50051] [--host 127.0.0.1]
  python -m deploy chain --hosts 127.0.0.1:50051 --run runs/demo --eval      (from another shell)

Options after ``--`` go to every ``serve-stage`` process, e.g. ``-- --max-in-flight 8``.
A stage that exits is restarted with a back-off (0.5 s, 1, 2, ... 30 s), at most --max-restarts
times in 5 minutes, then the chain is stopped (exit 2); --no-restart stops it at the first exit.
"""
import argparse
import signal
import sys
import threading

from runfolder import cli
from runfolder.errors import CannotRunHere


def parser():
    p = cli.ArgumentParser(prog="python -m deploy launch", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="run folder")
    p.add_argument("--base-port", type=int, default=50051, help="stage K listens on BASE+K (default 50051)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--log-dir", default=None, help="folder for stage_K.log (default: a temporary folder)")
    p.add_argument("--max-restarts", type=int, default=5,
                   help="restarts of one stage within 5 minutes before giving up (default 5)")
    p.add_argument("--no-restart", action="store_true", help="stop every stage when one exits")
    p.add_argument("serve_args", nargs=argparse.REMAINDER, help="-- then options for every serve-stage")
    from deploy.net import tls
    tls.add_arguments(p)
    return p


def run(args):
    try:
        from deploy.net import launch, tls
        from deploy.net.supervisor import RestartPolicy, Supervisor
    except ImportError as exc:
        raise CannotRunHere(f"serving needs grpcio ({exc}); pip install 'coral-stages[serve]'") from exc
    extra = [a for a in args.serve_args if a != "--"]
    chain = launch.launch_local(args.run, args.base_port, args.host,
                                 launch.StageProcessOptions(tls=tls.from_args(args), extra_args=extra,
                                                            log_dir=args.log_dir))
    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())
    print(f"{len(chain.addresses)} stages serving: {','.join(chain.addresses)} (logs in {chain.log_dir}); "
          f"Ctrl-C stops them", flush=True)
    for index, process in enumerate(chain.processes):
        print(f"  stage {index}: {chain.addresses[index]}, pid {process.pid}", flush=True)
    print(f"try: python -m deploy chain --hosts {','.join(chain.addresses)} --run {args.run} --eval", flush=True)
    policy = RestartPolicy(max_restarts=0 if args.no_restart else max(0, args.max_restarts))
    supervisor = Supervisor(chain, policy, say=lambda line: print(line, flush=True))
    while not stopping.wait(0.2):
        problem = supervisor.poll()
        if problem:
            print(f"error: {problem}; stopping the others", file=sys.stderr, flush=True)
            chain.stop()
            return 2
    codes = chain.stop()
    print(f"stopped {len(codes)} stages (exit codes {codes})", flush=True)
    return 0
