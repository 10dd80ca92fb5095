"""Quantize a trained model to full int8 and split it into stages.

  python -m quantize --run runs/demo --stages 3
  python -m quantize --run runs/demo --cut-after after_block1,after_block2
  python -m quantize --run runs/demo --stages 3 --balance latency
  python -m quantize --run runs/demo            (one stage: the whole model on one Edge TPU)
  python -m quantize --run runs/demo --qat --qat-epochs 3
  python -m quantize split MODEL.tflite --stages 3 --balance params --out DIR
  python -m quantize split MODEL.tflite --cut-after TENSOR_OR_LAYER,... --out DIR
  python -m quantize plan MODEL.tflite --stages 4 [--balance latency]
  python -m quantize split MODEL.tflite --stages 4 --balance edgetpu --profile-cuts --out DIR
"""
import argparse
import sys

from datasets.contract_options import add_contract_options
from quantize import DEFAULT_STAGES
from runfolder import cli
from tflitegraph.edgetpu_latency import LINKS


def _names(text):
    return [n.strip() for n in text.split(",") if n.strip()]


def _add_cut_options(parser):
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--stages", type=int, default=None,
                       help=f"number of stages, cut automatically by --balance (default {DEFAULT_STAGES}; "
                            "with --isolate-unsupported, as few as that takes)")
    group.add_argument("--cut-after", type=_names, default=None, metavar="NAME,...",
                       help="cut after these tensors or Keras layer names (e.g. after_block1,after_block2)")
    parser.add_argument("--balance", choices=["macs", "params", "latency", "edgetpu"], default="macs",
                        help="what to even out over the stages: MACs (computation), params (constant bytes, "
                             "like edgetpu_compiler --num_segments), latency (each op timed on the CPU with "
                             "the real interpreter, like Coral's partition_with_profiling) or edgetpu (the "
                             "estimated Edge TPU time per stage over --link: compute, parameters streamed beyond "
                             "the on-chip cache, bytes crossing each cut); default macs")
    parser.add_argument("--link", choices=LINKS, default="usb3",
                        help="how each Edge TPU is attached, for --balance edgetpu and the estimates: usb3, usb2, "
                             "pcie on a desktop host, or a host pycoral measured: usb3-rpi4 (Raspberry Pi 4), "
                             "usb2-rpi3 (Pi 3 B), pcie-devboard (Dev Board); default usb3")
    parser.add_argument("--profile-cuts", action="store_true",
                        help="with --balance edgetpu: compile the stages of the best cuts with edgetpu_compiler, "
                             "redo their estimates with what it reports (parameters it streams, ops it leaves on "
                             "the CPU) and choose again, until the best cuts' stages are all compiled")
    parser.add_argument("--compiler", default=None, metavar="PATH",
                        help="edgetpu_compiler for --profile-cuts (default: the one on PATH)")
    parser.add_argument("--profile-rounds", type=int, default=4, metavar="N",
                        help="rounds of compiling for --profile-cuts at most (default 4)")
    parser.add_argument("--isolate-unsupported", action="store_true",
                        help="cut so each run of ops the Edge TPU cannot run is its own CPU stage and every "
                             "other stage maps fully (the compiler stops mapping at the first unsupported op); "
                             "without --stages, as few stages as that takes")
    parser.add_argument("--single-tensor-cuts", action="store_true",
                        help="only cut where exactly one tensor crosses (default: any cut)")
    parser.add_argument("--profile-runs", type=int, default=30, metavar="N",
                        help="timed rounds per op when profiling latency (default 30)")
    parser.add_argument("--profile-threads", type=int, default=1, metavar="N",
                        help="interpreter threads when profiling (default 1: one core per stage)")
    parser.add_argument("--profile-kernels", choices=["xnnpack", "builtin"], default="xnnpack",
                        help="CPU kernels to time: xnnpack (ai-edge-litert's default) or builtin (what "
                             "tflite-runtime 2.14 on a Raspberry Pi runs); time what the stages will run on")


def _add_write_options(parser):
    parser.add_argument("--keep-op-versions", action="store_true",
                        help="write op versions as converted, even where edgetpu_compiler 16.0 refuses them "
                             "(default: lower them where the kernels provably compute the same)")


def _plan_options(args, profile=False):
    """The PlanOptions the cut options on the command line ask for."""
    from quantize.plan_options import PlanOptions
    return PlanOptions(stages=args.stages, cut_after=args.cut_after, balance=args.balance,
                       single_tensor=args.single_tensor_cuts, isolate_unsupported=args.isolate_unsupported,
                       profile=profile, runs=args.profile_runs, threads=args.profile_threads,
                       xnnpack=args.profile_kernels == "xnnpack", link=args.link, profile_cuts=args.profile_cuts,
                       compiler=args.compiler, profile_rounds=args.profile_rounds)


def _int8_model(path):
    """A .tflite path as given, or a run folder's int8 model (checked against its manifest)."""
    import pathlib

    import runfolder
    if not pathlib.Path(path).is_dir():
        return path
    manifest = runfolder.load(path)
    record = runfolder.require(manifest, "quantization", path, "python -m quantize --run")["int8_model"]
    return str(runfolder.verify_file(path, record, "int8 model"))


def _contract(args):
    """The input contract and labels given on the command line, as manifest sections."""
    from datasets.contract_options import contract_from_options
    section, labels = contract_from_options(args)
    return {"input": section, "labels": labels}


def _model_command(command, argv):
    """``split`` and ``plan``: work on any full-int8 .tflite file."""
    if command == "split":
        parser = cli.ArgumentParser(prog="python -m quantize split",
                                         description="Split any full-int8 .tflite into stage files and a "
                                                     "manifest usable by compile/ and deploy/.",
                                    epilog="examples:\n  python -m quantize split mobilenet_v2_1.0_224_quant.tflite "
                                           "--stages 2 --out runs/coral --labels imagenet_labels.txt\n"
                                           "  python -m quantize split MODEL.tflite --cut-after TENSOR --out DIR")
    else:
        parser = cli.ArgumentParser(prog="python -m quantize plan",
                                         description="Print how a full-int8 .tflite would be split (per "
                                                     "stage: ops, MACs, parameter and activation bytes, "
                                                     "CPU latency) without writing anything.",
                                    epilog="examples:\n  python -m quantize plan MODEL.tflite --stages 4 --balance "
                                           "latency\n  python -m quantize plan runs/demo --stages 3 --no-profile")
        parser.add_argument("--no-profile", action="store_true",
                            help="skip timing the ops (no latency column) unless --balance latency")
    parser.add_argument("model", help="full-int8 .tflite file" + (" or a run folder" if command == "plan" else ""))
    if command == "split":
        parser.add_argument("--out", required=True, help="folder for the stages and manifest.json")
        parser.add_argument("--overwrite", action="store_true", help="replace what --out already holds")
        add_contract_options(parser, "read from the model's input quantization, so the uint8 input is the raw pixels")
        _add_write_options(parser)
    _add_cut_options(parser)
    args = parser.parse_args(argv)
    from quantize.contract import describe_contract
    from quantize.plan_table import format_plan
    from quantize.stages import plan_split, split_into
    from tflitegraph.graph import read_graph
    if command == "split":
        manifest = split_into(args.out, args.model, _plan_options(args), overwrite=args.overwrite,
                              contract=_contract(args), keep_op_versions=args.keep_op_versions)
        print(f"wrote stages and manifest to {args.out}")
        print(describe_contract(manifest))
    else:
        plan = plan_split(read_graph(_int8_model(args.model)), _plan_options(args, profile=not args.no_profile),
                          progress=lambda line: print(line, file=sys.stderr))
        print("\n".join(format_plan(plan)))
    return 0


@cli.entry_point
def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("split", "plan"):
        return _model_command(argv[0], argv[1:])
    parser = cli.ArgumentParser(prog="python -m quantize", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="run folder written by `python -m training`")
    _add_cut_options(parser)
    _add_write_options(parser)
    parser.add_argument("--io-type", choices=["uint8", "int8"], default="uint8",
                        help="type of the model's input and output (default uint8)")
    parser.add_argument("--samples", type=int, default=300, help="representative samples for calibration")
    parser.add_argument("--threshold", type=float, default=0.5,
                        help="warn loudly when int8 loses more accuracy than this, in percentage points, "
                             "and then run quantization-aware training (unless --no-auto-qat)")
    parser.add_argument("--qat", action="store_true",
                        help="always fine-tune a quantization-aware copy (tensorflow-model-optimization) and "
                             "keep whichever int8 model, PTQ or QAT, is more accurate on the validation split")
    parser.add_argument("--no-auto-qat", dest="auto_qat", action="store_false",
                        help="never start quantization-aware training on its own when PTQ loses too much")
    parser.add_argument("--qat-epochs", type=int, default=3, metavar="N",
                        help="epochs of quantization-aware training (default 3)")
    args = parser.parse_args(argv)
    from quantize.qat import QatPolicy
    from quantize.run import quantize_run
    policy = QatPolicy(asked=args.qat, auto=args.auto_qat, threshold=args.threshold, epochs=args.qat_epochs)
    quantize_run(args.run, _plan_options(args), args.io_type, args.samples, policy,
                 keep_op_versions=args.keep_op_versions)
    return 0


if __name__ == "__main__":
    sys.exit(main())
