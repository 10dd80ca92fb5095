"""Train a Keras classifier into a run folder.

  python -m training --dataset digits --model splitnet --epochs 8 --run runs/demo
  python -m training --run runs/demo --epochs 12 --resume
  python -m training --dataset shapes --data-option size=32 --model rgbnet --run runs/shapes
"""
import argparse
import json
import sys


def _option(text):
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"--data-option needs KEY=VALUE, got '{text}'")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="run folder to create or resume (e.g. runs/demo)")
    parser.add_argument("--dataset", default="digits", help="data set name (default: digits, embedded)")
    parser.add_argument("-o", "--data-option", action="append", type=_option, default=[], metavar="KEY=VALUE",
                        help="data set option, repeatable (e.g. noise=0.1, size=32, path=/data/imgs)")
    parser.add_argument("--model", default="splitnet", help="splitnet (grey, seed 000) or rgbnet")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--patience", type=int, default=3, help="early stopping patience on val_loss")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split and of training")
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    parser.add_argument("--overwrite", action="store_true", help="delete an existing run folder first")
    args = parser.parse_args(argv)
    from training.train import train  # imports TensorFlow: after --help
    import datasets
    import runfolder
    from training.models import ModelError
    from training.train import TrainingError
    try:
        train(args.run, args.dataset, dict(args.data_option), args.model, args.epochs, args.batch_size,
              args.learning_rate, args.patience, args.seed, args.resume, args.overwrite)
    except (TrainingError, ModelError, datasets.DatasetError, runfolder.ManifestError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
