"""Command line: ``python -m compile --run DIR [options]``. Parses arguments only."""
import argparse
import sys

import runfolder
from compile import DEFAULT_TIMEOUT, CompilerError, compile_run


def _positive(kind):
    def parse(text):
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"expected a number above 0, got {text}")
        return value
    return parse


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m compile",
        description="Compile each stage .tflite of a run folder with Coral's edgetpu_compiler "
                    "and record the results in its manifest. Without the compiler, records "
                    "that the stages run on the CPU and exits 0.")
    parser.add_argument("--run", required=True, metavar="DIR",
                        help="run folder whose manifest lists the stages (from python -m quantize)")
    parser.add_argument("--compiler", metavar="PATH",
                        help="edgetpu_compiler to use (default: edgetpu_compiler on PATH)")
    parser.add_argument("--timeout", type=_positive(float), default=DEFAULT_TIMEOUT, metavar="SEC",
                        help="seconds one stage may take; passed as --timeout_sec, and the "
                             f"compiler is stopped shortly after (default {DEFAULT_TIMEOUT:g})")
    parser.add_argument("--min-runtime-version", type=_positive(int), metavar="N",
                        help="oldest Edge TPU runtime the compiled stages must run on")
    parser.add_argument("--search-delegate", action="store_true",
                        help="let the compiler search for an earlier stopping point when "
                             "compilation fails")
    parser.add_argument("--delegate-search-step", type=_positive(int), metavar="N",
                        help="ops to step back per try with --search-delegate")
    args = parser.parse_args(argv)
    if args.delegate_search_step is not None and not args.search_delegate:
        parser.error("--delegate-search-step only applies with --search-delegate; add it or "
                     "drop --delegate-search-step")
    return args


def main(argv=None):
    args = parse_args(argv)
    try:
        compile_run(args.run, compiler=args.compiler, timeout=args.timeout,
                    min_runtime_version=args.min_runtime_version,
                    search_delegate=args.search_delegate,
                    delegate_search_step=args.delegate_search_step)
    except (runfolder.ManifestError, CompilerError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
