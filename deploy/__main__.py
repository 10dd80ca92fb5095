"""Run the stages of a run folder: on Edge TPUs where compiled stages and TPUs exist, else on the CPU.

  python -m deploy --run runs/demo --image digit.png [--resize] [--convert]
  python -m deploy --run runs/demo --eval
  python -m deploy verify --run runs/demo [--reference MODEL.tflite] --samples 64
  python -m deploy summary --run runs/demo
"""
import argparse
import sys


def _common(parser):
    parser.add_argument("--run", required=True, help="run folder (written by quantize, optionally compile)")
    parser.add_argument("--devices", default=None,
                        help="per-stage devices, e.g. usb:0,usb:1,cpu (default: TPUs found, else cpu)")


def _parse(argv):
    if argv and argv[0] == "verify":
        parser = argparse.ArgumentParser(prog="python -m deploy verify",
                                         description="Run the stage chain and the unsplit model on the same "
                                                     "inputs; exit 1 if any output differs.")
        _common(parser)
        parser.add_argument("--reference", default=None,
                            help="unsplit model (default: the run's int8 model)")
        parser.add_argument("--samples", type=int, default=64)
        return "verify", parser.parse_args(argv[1:])
    if argv and argv[0] == "summary":
        parser = argparse.ArgumentParser(prog="python -m deploy summary",
                                         description="Print the run's summary table from its manifest.")
        parser.add_argument("--run", required=True)
        return "summary", parser.parse_args(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m deploy", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(parser)
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--image", nargs="+", help="image files to classify")
    what.add_argument("--eval", action="store_true", help="accuracy and latency on the held-out test split")
    parser.add_argument("--top-k", type=int, default=3)
    parser.add_argument("--resize", action="store_true", help="resize images to the model's input size")
    parser.add_argument("--convert", action="store_true", help="convert images to the model's colour mode")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads per stage interpreter")
    parser.add_argument("--limit", type=int, default=None, help="evaluate only the first N test samples")
    return "run", parser.parse_args(argv)


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    command, args = _parse(argv)
    import runfolder
    from datasets import ImageError
    from deploy import commands, summary
    from deploy.chain import ChainError
    from deploy.runtime import RuntimeMissing
    try:
        if command == "summary":
            summary.print_summary(args.run)
        elif command == "verify":
            result = commands.verify_run(args.run, args.reference, args.samples, args.devices)
            return 0 if result["bit_exact"] else 1
        elif args.eval:
            commands.evaluate_run(args.run, args.devices, args.threads, args.limit)
        else:
            commands.classify_images(args.run, args.image, args.top_k, args.resize, args.convert, args.devices)
    except (runfolder.ManifestError, ImageError, ChainError, RuntimeMissing, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
