"""Command line; parses arguments only.

    python -m compile --run DIR [--co-compile | --num-segments N] [compiler options]
    python -m compile check MODEL_OR_RUN [--json] [--min-runtime-version N]
"""
import argparse
import json
import sys

from compile import DEFAULT_TIMEOUT, CompilerFlags, compile_run
from runfolder import cli
from runfolder.errors import CannotRunHere


def _positive(kind):
    def parse(text):
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"expected a number above 0, got {text}")
        return value
    return parse


def parse_args(argv=None):
    parser = cli.ArgumentParser(
        prog="python -m compile",
        description="Compile each stage .tflite of a run folder with Coral's edgetpu_compiler "
                    "and record the results in its manifest. Without the compiler, records "
                    "that the stages run on the CPU and exits 0. "
                    "`python -m compile check MODEL_OR_RUN` predicts, without the compiler, "
                    "which ops will map to the Edge TPU.")
    parser.add_argument("--run", required=True, metavar="DIR",
                        help="run folder whose manifest lists the stages (from python -m quantize)")
    parser.add_argument("--compiler", metavar="PATH",
                        help="edgetpu_compiler to use (default: edgetpu_compiler on PATH)")
    parser.add_argument("--timeout", type=_positive(float), default=DEFAULT_TIMEOUT, metavar="SEC",
                        help="seconds one compiler call may take; passed as --timeout_sec, and "
                             f"the compiler is stopped shortly after (default {DEFAULT_TIMEOUT:g})")
    parser.add_argument("--min-runtime-version", type=_positive(int), metavar="N",
                        help="oldest Edge TPU runtime the compiled stages must run on")
    parser.add_argument("--search-delegate", action="store_true",
                        help="let the compiler search for an earlier stopping point when "
                             "compilation fails (--search_delegate)")
    parser.add_argument("--delegate-search-step", type=_positive(int), metavar="N",
                        help="ops to step back per try with --search-delegate")
    parser.add_argument("--enable-multiple-subgraphs", action="store_true",
                        help="let the compiler map supported ops after a CPU op into further "
                             "Edge TPU subgraphs (--enable_multiple_subgraphs, experimental)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--co-compile", action="store_true",
                      help="compile all stages in one compiler call, so stages sharing one "
                           "Edge TPU share its parameter cache (files stay per stage)")
    mode.add_argument("--num-segments", type=_positive(int), metavar="N",
                      help="instead of our stages, let the compiler cut the unsplit int8 model "
                           "into N segments (--num_segments); recorded under compile.segments")
    args = parser.parse_args(argv)
    if args.delegate_search_step is not None and not args.search_delegate:
        parser.error("--delegate-search-step only applies with --search-delegate; add it or "
                     "drop --delegate-search-step")
    if args.num_segments == 1:
        parser.error("--num-segments 1 is the unsplit model; pass 2 or more, or leave it out")
    return args


def parse_check_args(argv):
    parser = cli.ArgumentParser(
        prog="python -m compile check",
        description="Predict, without edgetpu_compiler and without TensorFlow, which ops of a "
                    "model compiler 16.0 maps to the Edge TPU, which fall to the CPU and why, "
                    "and whether the parameters fit in on-chip memory.",
        epilog="examples:\n  python -m compile check runs/demo\n  python -m compile check MODEL.tflite --json")
    parser.add_argument("target", metavar="MODEL_OR_RUN",
                        help="a .tflite file, or a run folder (checks its int8 model and stages)")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON document instead of tables")
    parser.add_argument("--min-runtime-version", type=_positive(int), metavar="N",
                        help="the -m value you will compile with (ops for newer runtimes fail)")
    return parser.parse_args(argv)


def check_main(argv):
    import pathlib
    args = parse_check_args(argv)
    try:
        from compile.preflight.check import check_model, check_run
        from compile.preflight.checktext import format_report
    except ImportError as exc:
        raise CannotRunHere(f"the check reads .tflite files with ai-edge-litert's schema: {exc}") from exc
    target = pathlib.Path(args.target)
    if target.is_dir():
        document = check_run(target, args.min_runtime_version)
        reports = document["models"]
    else:
        document = check_model(target, min_runtime_version=args.min_runtime_version)
        reports = [document]
    if args.json:
        print(json.dumps(document, indent=1))
    else:
        from compile.preflight.optable import agreement_line
        print(f"Edge TPU compiler 16.0, predicted (not run); {agreement_line()}\n")
        print("\n\n".join("\n".join(format_report(r)) for r in reports))
    return 0


@cli.entry_point
def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["check"]:
        return check_main(argv[1:])
    args = parse_args(argv)
    flags = CompilerFlags(timeout=args.timeout, min_runtime_version=args.min_runtime_version,
                          search_delegate=args.search_delegate, delegate_search_step=args.delegate_search_step,
                          num_segments=args.num_segments, enable_multiple_subgraphs=args.enable_multiple_subgraphs)
    compile_run(args.run, compiler=args.compiler, flags=flags, co_compile=args.co_compile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
