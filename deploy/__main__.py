"""Run the stages of a run folder: on Edge TPUs where compiled stages and TPUs exist, else on the CPU.

  python -m deploy --run runs/demo --image digit.png photos/ [--json] [--no-resize] [--no-convert]
  python -m deploy --run runs/demo --eval
  python -m deploy --run runs/coral --eval --dataset folder -o path=photos   (your own labelled images)
  python -m deploy verify --run runs/demo [--reference MODEL.tflite] --samples 64
  python -m deploy verify --run runs/demo --devices usb:0,usb:1,cpu   (Edge TPU vs CPU stages)
  python -m deploy bench --run runs/demo [--samples 200]
  python -m deploy summary --run runs/demo
  python -m deploy doctor
  python -m deploy exits --run runs/demo [--thresholds 0.5,0.8,0.9]   (early-exit sweep)
  python -m deploy report --run runs/demo                             (report.html)
  python -m deploy serve-stage --run runs/demo --stage K --listen H:P [--next H:P]
  python -m deploy chain --hosts h1:p,h2:p,h3:p --run runs/demo --eval
  python -m deploy launch --run runs/demo [--base-port 50051]
  python -m deploy serve-api --run runs/demo [--chain h1:p,...]   and   python -m deploy worker --run runs/demo
  python -m deploy k8s --run runs/demo --nodes pi1,pi2,pi3

Exit status: 0 done, 1 verify found differences (or doctor found a known-bad
setup), 2 an error (the message says what to fix), 3 the command cannot run
on this machine (e.g. verify --devices without an Edge TPU).
"""
import importlib
import sys

from runfolder import cli

# Every command: name -> module with ``parser()`` (an ArgumentParser) and ``run(args)`` (the exit
# status). Imported only when asked for, so a Pi without the serving extras can run the rest.
COMMANDS = {
    "verify": "deploy.cli.verify",
    "bench": "deploy.cli.bench",
    "summary": "deploy.cli.summary",
    "doctor": "deploy.cli.doctor",
    "exits": "deploy.cli.exits",
    "report": "deploy.report.page",
    "serve-stage": "deploy.cli.serve_stage",
    "chain": "deploy.cli.chain",
    "launch": "deploy.cli.launch",
    "serve-api": "deploy.cli.serve_api",
    "worker": "deploy.cli.worker",
    "k8s": "deploy.cli.k8s",
}
DEFAULT_COMMAND = "deploy.cli.infer"   # --image / --eval, when no command is named


@cli.entry_point
def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in COMMANDS:
        module = importlib.import_module(COMMANDS[argv[0]])
        return module.run(module.parser().parse_args(argv[1:]))
    module = importlib.import_module(DEFAULT_COMMAND)
    return module.run(module.parser(__doc__).parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
