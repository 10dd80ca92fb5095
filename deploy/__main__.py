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
import argparse
import sys

from datasets.core import parse_option
from deploy.cli.options import add_runtime_options
from runfolder import cli
from runfolder.errors import OptionError


# Commands that live in their own modules: name -> module with ``parser()`` (an ArgumentParser)
# and ``run(args)`` (returns the exit status). Imported only when asked for, so a Pi without
# the serving extras can still run the rest.
MODULE_COMMANDS = {
    "serve-stage": "deploy.cli.serve_stage",
    "chain": "deploy.cli.chain",
    "launch": "deploy.cli.launch",
    "serve-api": "deploy.cli.serve_api",
    "worker": "deploy.cli.worker",
    "report": "deploy.report.page",
    "k8s": "deploy.cli.k8s",
    "exits": "deploy.cli.exits",
}


def _common(parser):
    parser.add_argument("--run", required=True, help="run folder (written by quantize, optionally compile)")
    add_runtime_options(parser)


def _verify_parser():
    parser = cli.ArgumentParser(
        prog="python -m deploy verify",
        description="Run the stage chain and the unsplit model on the same inputs; exit 1 if any output "
                    "differs. With --devices naming an Edge TPU, compare the compiled stages on the TPU with "
                    "the same stages' int8 files on the CPU instead (exit 3 when no stage can run on a TPU).",
        epilog="examples:\n  python -m deploy verify --run runs/demo --samples 256\n"
               "  python -m deploy verify --run runs/demo --devices usb:0,usb:1")
    _common(parser)
    parser.add_argument("--reference", default=None, help="unsplit model (default: the run's int8 model)")
    parser.add_argument("--samples", type=int, default=64, help="inputs compared (test split images, else random)")
    return parser


def _bench_parser():
    parser = cli.ArgumentParser(
        prog="python -m deploy bench",
        description="Latency p50/p95/p99 per stage and end to end, and throughput, sequential vs pipelined "
                    "(one thread per stage); saved in the manifest (deploy.bench) with a plot bench.png.",
        epilog="example:\n  python -m deploy bench --run runs/demo --samples 200")
    _common(parser)
    parser.add_argument("--samples", type=int, default=200, help="timed inputs")
    parser.add_argument("--warmup", type=int, default=20, help="untimed inputs first")
    parser.add_argument("--queue-size", type=int, default=2, help="bound of each queue between stages")
    parser.add_argument("--no-plot", dest="plot", action="store_false", help="do not draw bench.png")
    return parser


def _parse(argv):
    if argv and argv[0] == "verify":
        return "verify", _verify_parser().parse_args(argv[1:])
    if argv and argv[0] == "bench":
        return "bench", _bench_parser().parse_args(argv[1:])
    if argv and argv[0] == "doctor":
        parser = cli.ArgumentParser(
            prog="python -m deploy doctor",
            description="Python, tflite runtime, libedgetpu (where, which build), Edge TPUs, and verdicts on "
                        "known-bad pairings with their fixes. Exit 1 when one is found.",
            epilog="example:\n  python -m deploy doctor")
        return "doctor", parser.parse_args(argv[1:])
    if argv and argv[0] == "summary":
        parser = cli.ArgumentParser(prog="python -m deploy summary",
                                         description="Print the run's summary table from its manifest.",
                                         epilog="example:\n  python -m deploy summary --run runs/demo")
        parser.add_argument("--run", required=True, help="run folder")
        return "summary", parser.parse_args(argv[1:])
    parser = cli.ArgumentParser(prog="python -m deploy", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(parser)
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--image", nargs="+", metavar="FILE_OR_FOLDER",
                      help="image files (or folders of them) to classify")
    what.add_argument("--eval", action="store_true", help="accuracy and latency on the held-out test split")
    parser.add_argument("--top-k", type=int, default=3, help="classes shown per image (default: 3)")
    parser.add_argument("--resize", action=argparse.BooleanOptionalAction, default=True,
                        help="resize images to the model's input size, saying so (default: on; --no-resize "
                             "refuses an image of another size)")
    parser.add_argument("--convert", action=argparse.BooleanOptionalAction, default=True,
                        help="convert images to the model's colour mode, saying so (default: on; --no-convert "
                             "refuses instead)")
    parser.add_argument("--json", action="store_true", help="one JSON line per image, for scripts")
    parser.add_argument("--limit", type=int, default=None, help="evaluate only N samples (default: all)")
    parser.add_argument("--dataset", default=None,
                        help="with --eval: a labelled data set of your own instead of the run's test split, e.g. "
                             "folder -o path=photos (class folders named as the run's labels)")
    parser.add_argument("-o", "--data-option", action="append", type=parse_option, default=[], metavar="KEY=VALUE",
                        help="option of --dataset, repeatable (e.g. path=/data/photos)")
    parser.add_argument("--exit-threshold", type=float, default=None, metavar="P",
                        help="stop at the first early exit whose top softmax probability reaches P")
    return "run", parser.parse_args(argv)


def _names_a_tpu(devices):
    return bool(devices) and any(d.strip() not in ("", "cpu") for d in devices.split(","))


def _doctor():
    from deploy.cli import doctor
    env = doctor.gather()
    verdicts = doctor.diagnose(env)
    for line in doctor.report_lines(env, verdicts):
        print(line)
    return 1 if any(v.level == doctor.BAD for v in verdicts) else 0


def _module_command(argv):
    import importlib
    module = importlib.import_module(MODULE_COMMANDS[argv[0]])
    return module.run(module.parser().parse_args(argv[1:]))


@cli.entry_point
def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in MODULE_COMMANDS:
        return _module_command(argv)
    command, args = _parse(argv)
    if command == "run" and (args.dataset or args.data_option) and not args.eval:
        raise OptionError("--dataset and -o go with --eval (measure the run on that data set)")
    if command == "doctor":
        return _doctor()
    from deploy.cli import actions as commands
    from deploy.core.open import open_chain
    from deploy.report import summary
    if command == "summary":
        summary.print_summary(args.run)
    elif command == "verify" and _names_a_tpu(args.devices):
        commands.verify_devices_run(args.run, args.devices, args.samples, num_threads=args.threads,
                                    xnnpack=args.xnnpack)
    elif command == "verify":
        result = commands.verify_run(args.run, args.reference, args.samples, args.devices, args.threads,
                                     args.xnnpack)
        return 0 if result["bit_exact"] else 1
    elif command == "bench":
        commands.bench_run(args.run, args.samples, args.warmup, args.devices, args.threads, args.xnnpack,
                           args.queue_size, args.plot)
    elif args.eval and args.dataset:
        from deploy.cli.eval_data import evaluate_on_data
        manifest, chain = open_chain(args.run, args.devices, args.threads, xnnpack=args.xnnpack)
        evaluate_on_data(args.run, manifest, chain, args.dataset, dict(args.data_option), args.limit,
                         args.exit_threshold)
    elif args.eval:
        commands.evaluate_run(args.run, args.devices, args.threads, args.limit, args.xnnpack,
                              args.exit_threshold)
    else:
        results = commands.classify_images(args.run, args.image, args.top_k, args.resize, args.convert,
                                           args.devices, args.threads, args.xnnpack, args.exit_threshold,
                                           as_json=args.json)
        failed = sum(classes is None for _, classes in results)
        if failed:
            print(f"{failed} of {len(results)} image(s) could not be classified (see the error lines)",
                  file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
