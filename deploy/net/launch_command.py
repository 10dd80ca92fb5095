"""python -m deploy launch: start every stage of a run folder locally (one process each) until Ctrl-C/SIGTERM.

  python -m deploy launch --run runs/demo [--base-port 50051] [--host 127.0.0.1]
  python -m deploy chain --hosts 127.0.0.1:50051 --run runs/demo --eval      (from another shell)

Options after ``--`` go to every ``serve-stage`` process, e.g. ``-- --max-in-flight 8``.
"""
import argparse
import signal
import sys
import threading


def parser():
    p = argparse.ArgumentParser(prog="python -m deploy launch", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="run folder")
    p.add_argument("--base-port", type=int, default=50051, help="stage K listens on BASE+K (default 50051)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--log-dir", default=None, help="folder for stage_K.log (default: a temporary folder)")
    p.add_argument("serve_args", nargs=argparse.REMAINDER, help="-- then options for every serve-stage")
    from deploy.net import tls
    tls.add_arguments(p)
    return p


def run(args):
    try:
        from deploy.net import launch, tls
    except ImportError as exc:
        print(f"cannot run: serving needs grpcio ({exc}); pip install 'coral-stages[serve]'", file=sys.stderr)
        return 3
    import runfolder
    extra = [a for a in args.serve_args if a != "--"]
    try:
        chain = launch.launch_local(args.run, args.base_port, args.host, tls.from_args(args), extra, args.log_dir)
    except (launch.LaunchError, runfolder.ManifestError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())
    print(f"{len(chain.addresses)} stages serving: {','.join(chain.addresses)} (logs in {chain.log_dir}); "
          f"Ctrl-C stops them", flush=True)
    print(f"try: python -m deploy chain --hosts {','.join(chain.addresses)} --run {args.run} --eval", flush=True)
    while not stopping.wait(0.5):
        dead = [k for k, p in enumerate(chain.processes) if p.poll() is not None]
        if dead:
            print(f"error: stage {dead[0]} exited (code {chain.processes[dead[0]].returncode}); see "
                  f"{chain.log_dir}/stage_{dead[0]}.log; stopping the others", file=sys.stderr)
            chain.stop()
            return 2
    codes = chain.stop()
    print(f"stopped {len(codes)} stages (exit codes {codes})", flush=True)
    return 0
