"""``python -m deploy exits --run DIR``: sweep early-exit thresholds over the stage chain (seed 001).

For each threshold the held-out test split runs through the stage chain,
stopping at the first exit head whose top softmax probability reaches it. The
table gives the share of samples leaving at each exit (and at the end),
accuracy, and mean and median latency per sample; the full chain without exits
is measured in the same run as the baseline. Saved as ``deploy.exits`` in the
manifest with a plot ``exits.png`` (when matplotlib is installed).
"""
import argparse

import numpy as np

from deploy.cli.options import add_runtime_options, runtime_of
from runfolder import cli
from runfolder.errors import OptionError

DEFAULT_THRESHOLDS = "0.5,0.6,0.7,0.8,0.9,0.95,0.99,0.999"
GOAL_EARLY_SHARE = 0.5     # the seed's question: can half the samples leave early ...
GOAL_ACCURACY_POINTS = 1.0  # ... within one accuracy point of the full model?


def parser():
    parser = cli.ArgumentParser(prog="python -m deploy exits", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="run folder trained with --exits and quantized")
    parser.add_argument("--thresholds", default=DEFAULT_THRESHOLDS,
                        help=f"comma list of top-probability thresholds in [0, 1] (default {DEFAULT_THRESHOLDS})")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N test samples")
    add_runtime_options(parser)
    parser.add_argument("--no-plot", dest="plot", action="store_false", help="do not draw exits.png")
    return parser


def parse_thresholds(text):
    """Sorted unique floats from a comma list; ValueError naming a bad entry."""
    values = []
    for part in text.split(","):
        part = part.strip()
        try:
            value = float(part)
        except ValueError:
            raise OptionError(f"--thresholds: '{part}' is not a number; give e.g. 0.5,0.9,0.99") from None
        if not 0.0 <= value <= 1.0:
            raise OptionError(f"--thresholds: {value} is not a probability; give values in [0, 1]")
        values.append(value)
    if not values:
        raise OptionError("--thresholds is empty; give e.g. 0.5,0.9,0.99")
    return sorted(set(values))


def sweep(chain, images, labels, thresholds, progress=None):
    """The ``deploy.exits`` result: the full chain, then one row per threshold."""
    from deploy.core.classify import evaluate
    from deploy.core.exits import exit_shares

    evaluate(chain, images[:20], labels[:20])  # warm-up: first invokes allocate and page in
    full = evaluate(chain, images, labels, progress and progress("full chain"))
    rows = []
    for threshold in thresholds:
        result = evaluate(chain, images, labels, progress and progress(f"threshold {threshold}"),
                          exit_threshold=threshold)
        latencies = np.asarray(result["latencies_ms"])
        rows.append({"threshold": threshold, "exit_share": exit_shares(chain, result["exit_stages"]),
                     "accuracy": result["accuracy"], "latency_ms_mean": float(latencies.mean()),
                     "latency_ms_p50": float(np.median(latencies))})
    full_latencies = np.asarray(full["latencies_ms"])
    return {"thresholds": list(thresholds), "samples": len(labels), "rows": rows,
            "full_model": {"accuracy": full["accuracy"], "latency_ms_mean": float(full_latencies.mean()),
                           "latency_ms_p50": float(np.median(full_latencies))},
            "goal": goal_rows(rows, full["accuracy"])}


def goal_rows(rows, full_accuracy):
    """Thresholds where at least half the samples exit early within one point of the full model."""
    return [row["threshold"] for row in rows
            if 1.0 - row["exit_share"]["final"] >= GOAL_EARLY_SHARE
            and 100.0 * (full_accuracy - row["accuracy"]) <= GOAL_ACCURACY_POINTS]


def table_lines(result):
    """The sweep as a table for people."""
    exits = [name for name in result["rows"][0]["exit_share"] if name != "final"] if result["rows"] else []
    head = f"{'threshold':>9}  " + "  ".join(f"{name:>12}" for name in exits + ["final"])
    lines = [head + f"  {'accuracy':>8}  {'mean ms':>8}  {'p50 ms':>7}"]
    for row in result["rows"]:
        shares = "  ".join(f"{100 * row['exit_share'][name]:11.1f}%" for name in exits + ["final"])
        lines.append(f"{row['threshold']:>9g}  {shares}  {row['accuracy']:8.4f}  {row['latency_ms_mean']:8.3f}"
                     f"  {row['latency_ms_p50']:7.3f}")
    full = result["full_model"]
    lines.append(f"{'no exits':>9}  " + " " * (14 * len(exits)) + f"{100.0:11.1f}%  {full['accuracy']:8.4f}  "
                 f"{full['latency_ms_mean']:8.3f}  {full['latency_ms_p50']:7.3f}")
    if result["goal"]:
        lines.append(f"at least {GOAL_EARLY_SHARE:.0%} exit early within {GOAL_ACCURACY_POINTS:g} point of the full "
                     f"model at thresholds: {', '.join(f'{t:g}' for t in result['goal'])}")
    else:
        lines.append(f"no threshold lets {GOAL_EARLY_SHARE:.0%} exit early within {GOAL_ACCURACY_POINTS:g} point "
                     "of the full model")
    return lines


def plot(result, path):
    """Exit shares (stacked) and accuracy against the threshold; False when matplotlib is missing."""
    try:
        import matplotlib
    except ImportError:
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    thresholds = [row["threshold"] for row in result["rows"]]
    names = list(result["rows"][0]["exit_share"])
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    left.stackplot(thresholds, [[100 * row["exit_share"][n] for row in result["rows"]] for n in names],
                   labels=names, alpha=0.8)
    left.set(xlabel="exit threshold (top probability)", ylabel="% of samples", title="where samples leave")
    left.legend(loc="lower left")
    right.plot(thresholds, [100 * row["accuracy"] for row in result["rows"]], "-o", label="early exit")
    right.axhline(100 * result["full_model"]["accuracy"], color="grey", ls="--", label="no exits")
    right.set(xlabel="exit threshold (top probability)", ylabel="accuracy %", title="accuracy")
    right.legend()
    for ax in (left, right):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def run(args):
    import pathlib

    import runfolder
    from deploy.core.open import describe_placement, load_test_set, open_run
    from deploy.core.progress import printer
    thresholds = parse_thresholds(args.thresholds)
    if args.limit is not None and args.limit < 1:
        raise OptionError(f"--limit must be at least 1, got {args.limit}")
    manifest, chain = open_run(args.run, runtime_of(args))
    if not chain.exits:
        raise OptionError(f"the stages of {args.run} have no early exits; train with "
                         "`python -m training --exits after_block1,after_block2 ...` and re-run "
                         "`python -m quantize`")
    images, labels = load_test_set(args.run, manifest)
    if args.limit:
        images, labels = images[:args.limit], labels[:args.limit]
    for line in describe_placement(chain):
        print(line)
    result = sweep(chain, images, labels, thresholds, printer)
    for line in table_lines(result):
        print(line)
    if args.plot:
        path = pathlib.Path(args.run) / "exits.png"
        if plot(result, path):
            result["plot"] = runfolder.file_record(args.run, path)
            print(f"plot: {path}")
        else:
            print("plot skipped: matplotlib is not installed (pip install matplotlib)")
    manifest = runfolder.load(args.run)  # re-read: keep what others wrote meanwhile
    manifest.setdefault("deploy", {})["exits"] = result
    runfolder.save(args.run, manifest)
    return 0
