"""Command line: list the data sets, or export sample images as PNG files.

    python -m datasets list
    python -m datasets export digits --out samples --count 20 --split test --seed 0
    python -m datasets export folder -o path=photos --out samples --count 5

Exported files are named ``<index>_<class>.png`` (index into the data set), ready
for ``python -m deploy --image``.
"""
import json
import os
import re
import sys

import numpy as np
from PIL import Image

from datasets.registry import DatasetError, available_datasets, describe, load_dataset
from datasets.splits import SPLITS, make_splits
from runfolder import cli


def parse_options(pairs):
    """["variants=4", "path=photos"] -> {"variants": 4, "path": "photos"} (JSON values, else text)."""
    options = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise DatasetError(f"option {pair!r} is invalid: expected KEY=VALUE, e.g. -o seed=1")
        try:
            options[key] = json.loads(text)
        except json.JSONDecodeError:
            options[key] = text
    return options


def export(dataset, out, count, split="test", seed=0):
    """Saves ``count`` images of one split (picked with ``seed``) as PNGs; returns their paths."""
    if split == "all":
        pool = np.arange(len(dataset))
    else:
        pool = make_splits(dataset, seed=seed)[split]
    count = min(count, len(pool))
    chosen = np.sort(np.random.default_rng(seed).choice(pool, size=count, replace=False))
    os.makedirs(out, exist_ok=True)
    paths = []
    for index in chosen:
        pixels = dataset.images[index]
        name = _safe(dataset.class_names[dataset.labels[index]])
        path = os.path.join(out, f"{index}_{name}.png")
        image = Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels)
        image.save(path)
        paths.append(path)
    return paths


def _safe(name):
    """A class name usable in a file name."""
    return re.sub(r"[^A-Za-z0-9.-]+", "-", name).strip("-") or "class"


def _build_parser():
    parser = cli.ArgumentParser(
        prog="python -m datasets", description="List data sets or export sample images.",
        epilog="examples:\n  python -m datasets list\n  python -m datasets export digits --out samples --count 20")
    commands = parser.add_subparsers(dest="command", required=True, help="what to do (each has --help)")
    commands.add_parser("list", help="show the available data sets")
    exp = commands.add_parser(
        "export", help="save sample images as <index>_<class>.png",
        description="Save N images of one split as PNG files named <index>_<class>.png.",
        epilog="example:\n  python -m datasets export digits --out samples --count 20 --split test")
    exp.add_argument("name", help=f"data set: {', '.join(available_datasets())}")
    exp.add_argument("--out", required=True, help="folder to write the PNG files into")
    exp.add_argument("--count", type=int, default=10, help="number of images (default 10)")
    exp.add_argument("--split", choices=SPLITS + ("all",), default="test",
                     help="which split to take images from (default test)")
    exp.add_argument("--seed", type=int, default=0,
                     help="split seed, as used in training (default 0); also picks the images")
    exp.add_argument("-o", "--option", action="append", default=[], metavar="KEY=VALUE",
                     help="data set option, repeatable, e.g. -o variants=4 or -o path=photos")
    return parser


@cli.entry_point
def main(argv=None):
    args = _build_parser().parse_args(argv)
    if args.command == "list":
        width = max(len(name) for name in available_datasets())
        for name in available_datasets():
            print(f"{name:<{width}}  {describe(name)}")
        return 0
    if args.count < 1:
        raise DatasetError(f"--count {args.count} is invalid: expected 1 or more")
    dataset = load_dataset(args.name, **parse_options(args.option))
    paths = export(dataset, args.out, args.count, split=args.split, seed=args.seed)
    print(f"wrote {len(paths)} {dataset.name} images from the {args.split} split to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
