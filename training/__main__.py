"""Train a Keras classifier into a run folder.

  python -m training --dataset digits --model splitnet --epochs 8 --run runs/demo
  python -m training --run runs/demo --epochs 12 --resume
  python -m training --dataset shapes --data-option size=32 --model rgbnet --run runs/shapes
  python -m training --run runs/exits --exits after_block1,after_block2   (early-exit heads)
  python -m training import my_model.keras --run runs/mine --dataset folder -o path=photos   (trained elsewhere)
"""
import argparse
import faulthandler
import sys

from datasets.contract_options import add_contract_options
from datasets.core import parse_option
from runfolder import cli


def _names(text):
    return [name.strip() for name in text.split(",") if name.strip()]


def _import(argv):
    """``python -m training import MODEL --run R --dataset ...``: a Keras model trained elsewhere."""
    parser = cli.ArgumentParser(
        prog="python -m training import", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Bring a Keras classifier trained elsewhere into a run folder; quantize, compile and deploy "
                    "then work on it.\n\n  python -m training import my_model.keras --run runs/mine --dataset folder "
                    "-o path=photos --input-range -1,1 --labels labels.txt")
    parser.add_argument("model", help="a .keras or .h5 file, or a SavedModel folder (tf_keras)")
    parser.add_argument("--run", required=True, help="run folder to create")
    parser.add_argument("--dataset", default="folder",
                        help="labelled data for calibration and the test split (default: folder, with -o path=)")
    parser.add_argument("-o", "--data-option", action="append", type=parse_option, default=[], metavar="KEY=VALUE",
                        help="data set option, repeatable (e.g. path=/data/photos); the image size is the model's")
    add_contract_options(parser, "0,255 when the model starts with Rescaling, else 0,1, said as an assumption")
    parser.add_argument("--seed", type=int, default=0, help="seed of the train/val/test split (default: 0)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    args = parser.parse_args(argv)
    from datasets.contract_options import contract_from_options
    contract, labels = contract_from_options(args)
    from training.import_model import import_keras  # imports TensorFlow: after the options are checked
    import_keras(args.run, args.model, args.dataset, dict(args.data_option), contract, labels,
                 args.overwrite, args.seed)
    return 0


@cli.entry_point
def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["import"]:
        return _import(argv[1:])
    parser = cli.ArgumentParser(prog="python -m training", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="run folder to create or resume (e.g. runs/demo)")
    parser.add_argument("--dataset", default="digits", help="data set name (default: digits, embedded)")
    parser.add_argument("-o", "--data-option", action="append", type=parse_option, default=[], metavar="KEY=VALUE",
                        help="data set option, repeatable (e.g. noise=0.1, size=32, path=/data/imgs)")
    parser.add_argument("--model", default=None,
                        help="splitnet (small grey images, cut in three for three devices), rgbnet (small colour "
                             "images), or a backbone: mobilenet_v1, mobilenet_v2, mobilenet_v3_small, "
                             "mobilenet_v3_large, efficientnet_b0 (default: splitnet for small grey images, else "
                             "mobilenet_v2)")
    parser.add_argument("--alpha", type=float, default=None, help="a backbone's width (e.g. 0.35 for mobilenet_v2)")
    parser.add_argument("--weights", default="none",
                        help="a backbone's weights: imagenet (downloaded), a local .h5 file, or none (default)")
    parser.add_argument("--fine-tune-layers", type=int, default=0,
                        help="after training the head, also train the backbone's top N layers (BatchNorm stays "
                             "frozen) at a tenth of the learning rate")
    parser.add_argument("--fine-tune-epochs", type=int, default=None,
                        help="epochs of fine-tuning (default: as many as --epochs when --fine-tune-layers is set)")
    parser.add_argument("--input-size", type=int, default=None,
                        help="resize the images to this size (the data set's size option), e.g. 96 or 224")
    parser.add_argument("--epochs", type=int, default=None,
                        help="epochs (of the head, for a backbone with --fine-tune-layers); default 8, or with "
                             "--resume as many as the run was first asked for")
    parser.add_argument("--batch-size", type=int, default=64, help="images per training step")
    parser.add_argument("--learning-rate", type=float, default=1e-3,
                        help="Adam's learning rate (fine-tuning uses a tenth of it)")
    parser.add_argument("--patience", type=int, default=3, help="early stopping patience on val_loss")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split and of training")
    parser.add_argument("--exits", type=_names, default=[], metavar="B1,B2",
                        help="add early-exit heads at these boundaries (e.g. after_block1,after_block2)")
    parser.add_argument("--exit-weight", type=float, default=0.3,
                        help="loss weight of each exit head (main head: 1); default 0.3")
    parser.add_argument("--class-weights", choices=["balanced"], default=None,
                        help="weigh each class's loss by the inverse of its share (for classes of unequal size)")
    parser.add_argument("--augment", default=None,
                        help="transforms of the training batches: flip,rotate,zoom,contrast,translate, or a preset "
                             "(light, photos); never part of the exported model")
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    parser.add_argument("--overwrite", action="store_true", help="delete an existing run folder first")
    args = parser.parse_args(argv)
    # A crash inside TensorFlow's native code otherwise ends the process with no word after TensorFlow's own
    # log lines; this prints where Python was (the run folder then says training did not finish).
    faulthandler.enable()
    from training.config import DEFAULT_EPOCHS, TrainConfig, Transfer
    from training.batches import parse_augment
    fine_tune_epochs = args.fine_tune_epochs if args.fine_tune_epochs is not None else \
        ((args.epochs or DEFAULT_EPOCHS) if args.fine_tune_layers else 0)
    transfer = Transfer(alpha=args.alpha, weights=None if args.weights.lower() == "none" else args.weights,
                        fine_tune_layers=args.fine_tune_layers, fine_tune_epochs=fine_tune_epochs,
                        input_size=args.input_size)
    config = TrainConfig(args.dataset, dict(args.data_option), args.model, args.epochs, args.batch_size,
                         args.learning_rate, args.patience, args.seed, tuple(args.exits), args.exit_weight,
                         transfer, args.class_weights, parse_augment(args.augment)).check()
    from training.train import train  # imports TensorFlow: after --help and the option checks
    train(args.run, config, resume=args.resume, overwrite=args.overwrite)
    return 0


if __name__ == "__main__":
    sys.exit(main())
