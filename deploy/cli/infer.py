"""``python -m deploy --run DIR --image ... | --eval``: classify images or measure the run, stage by stage."""
import argparse
import sys

from datasets.core import parse_option
from deploy.cli.options import add_runtime_options, runtime_of
from runfolder import cli
from runfolder.errors import OptionError


def parser(description=None):
    p = cli.ArgumentParser(prog="python -m deploy", description=description or __doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="run folder (written by quantize, optionally compile)")
    add_runtime_options(p)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--image", nargs="+", metavar="FILE_OR_FOLDER",
                      help="image files (or folders of them) to classify")
    what.add_argument("--eval", action="store_true", help="accuracy and latency on the held-out test split")
    p.add_argument("--top-k", type=int, default=3, help="classes shown per image (default: 3)")
    p.add_argument("--resize", action=argparse.BooleanOptionalAction, default=True,
                   help="resize images to the model's input size, saying so (default: on; --no-resize "
                        "refuses an image of another size)")
    p.add_argument("--convert", action=argparse.BooleanOptionalAction, default=True,
                   help="convert images to the model's colour mode, saying so (default: on; --no-convert "
                        "refuses instead)")
    p.add_argument("--json", action="store_true", help="one JSON line per image, for scripts")
    p.add_argument("--limit", type=int, default=None, help="evaluate only N samples (default: all)")
    p.add_argument("--dataset", default=None,
                   help="with --eval: a labelled data set of your own instead of the run's test split, e.g. "
                        "folder -o path=photos (class folders named as the run's labels)")
    p.add_argument("-o", "--data-option", action="append", type=parse_option, default=[], metavar="KEY=VALUE",
                   help="option of --dataset, repeatable (e.g. path=/data/photos)")
    p.add_argument("--exit-threshold", type=float, default=None, metavar="P",
                   help="stop at the first early exit whose top softmax probability reaches P")
    return p


def run(args):
    if (args.dataset or args.data_option) and not args.eval:
        raise OptionError("--dataset and -o go with --eval (measure the run on that data set)")
    from deploy.cli import actions
    if args.eval and args.dataset:
        from deploy.cli.eval_data import evaluate_on_data
        from deploy.core.open import open_run
        manifest, chain = open_run(args.run, runtime_of(args))
        evaluate_on_data(args.run, manifest, chain, args.dataset, dict(args.data_option), args.limit,
                         args.exit_threshold)
        return 0
    if args.eval:
        actions.evaluate_run(args.run, runtime_of(args), args.limit, args.exit_threshold)
        return 0
    results = actions.classify_images(args.run, args.image, runtime_of(args), args.top_k, args.resize,
                                      args.convert, args.exit_threshold, as_json=args.json)
    failed = sum(classes is None for _, classes in results)
    if failed:
        print(f"{failed} of {len(results)} image(s) could not be classified (see the error lines)", file=sys.stderr)
        return 2
    return 0
