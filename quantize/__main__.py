"""Quantize a trained model to full int8 and split it into stages.

  python -m quantize --run runs/demo --stages 3
  python -m quantize --run runs/demo --cut-after after_block1,after_block2
  python -m quantize split MODEL.tflite --stages 3 --out DIR
  python -m quantize split MODEL.tflite --cut-after TENSOR_OR_LAYER,... --out DIR
"""
import argparse
import sys


def _names(text):
    return [n.strip() for n in text.split(",") if n.strip()]


def _add_cut_options(parser):
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--stages", type=int, default=None,
                       help="number of stages, cut automatically to balance MACs (default 3 for --run, "
                            "1 for split)")
    group.add_argument("--cut-after", type=_names, default=None, metavar="NAME,...",
                       help="cut after these tensors or Keras layer names (e.g. after_block1,after_block2)")


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "split":
        parser = argparse.ArgumentParser(prog="python -m quantize split",
                                         description="Split any full-int8 .tflite into stage files and a "
                                                     "manifest usable by compile/ and deploy/.")
        parser.add_argument("model", help="full-int8 .tflite file")
        parser.add_argument("--out", required=True, help="folder for the stages and manifest.json")
        _add_cut_options(parser)
        args = parser.parse_args(argv[1:])
        from quantize.graph import GraphError
        from quantize.stages import split_into
        import runfolder
        try:
            split_into(args.out, args.model, args.stages or 1, args.cut_after)
        except (GraphError, runfolder.ManifestError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(f"wrote stages and manifest to {args.out}")
        return 0
    parser = argparse.ArgumentParser(prog="python -m quantize", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="run folder written by `python -m training`")
    _add_cut_options(parser)
    parser.add_argument("--io-type", choices=["uint8", "int8"], default="uint8",
                        help="type of the model's input and output (default uint8)")
    parser.add_argument("--samples", type=int, default=300, help="representative samples for calibration")
    parser.add_argument("--threshold", type=float, default=1.0,
                        help="warn loudly when int8 loses more accuracy than this, in percentage points")
    args = parser.parse_args(argv)
    import datasets
    import runfolder
    from quantize.graph import GraphError
    from quantize.ptq import QuantizeError
    from quantize.run import quantize_run
    try:
        quantize_run(args.run, args.stages or (None if args.cut_after else 3), args.cut_after,
                     args.io_type, args.samples, args.threshold)
    except (GraphError, QuantizeError, runfolder.ManifestError, datasets.DatasetError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
