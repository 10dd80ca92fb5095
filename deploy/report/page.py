"""``python -m deploy report``: one self-contained HTML page about a run.

    python -m deploy report --run runs/demo [--out FILE] [--no-eval] [--limit N]

Data set and split, training curves, float / PTQ / QAT / int8 / chain accuracy,
confusion matrices, the per-stage table (sizes, MACs, crossing tensors, where
each op runs, compile results), latency per stage and end to end, and the
early-exit trade-off. Images are inlined, so the file can be mailed or
archived alone. Parts a run does not have yet show which command makes them.
"""
import datetime
import pathlib
import sys

import runfolder
from deploy.report import sections as report_sections
from deploy.report import stages as report_stages
from deploy.report.data import gather
from deploy.report.html import page
from runfolder import cli

SECTIONS = [
    ("dataset", "Data set and split", report_sections.dataset),
    ("training", "Training", report_sections.training),
    ("accuracy", "Accuracy", report_sections.accuracy),
    ("confusion", "Confusion matrices", report_sections.confusion),
    ("own-data", "On your own data", report_sections.own_data),
    ("stages", "Stages", report_stages.stages),
    ("latency", "Latency", report_stages.latency),
    ("exits", "Early exit", report_stages.exits),
]


def parser():
    result = cli.ArgumentParser(
        prog="python -m deploy report",
        description="Write one self-contained HTML page about a run (images inlined, no external requests).",
        epilog="example:\n  python -m deploy report --run runs/demo   (then open runs/demo/report.html)")
    result.add_argument("--run", required=True, help="run folder")
    result.add_argument("--out", default=None, help="HTML file to write (default RUN/report.html)")
    result.add_argument("--no-eval", dest="evaluate", action="store_false",
                        help="do not run the int8 model and the stage chain on the test split for the "
                             "int8 / chain confusion matrices")
    result.add_argument("--limit", type=int, default=None,
                        help="evaluate only the first N test samples for the confusion matrices")
    return result


def render(data):
    """The page's HTML from gathered data (see ``deploy.report.data.gather``)."""
    manifest = data["manifest"]
    sections = [(sid, title, build(data)) for sid, title, build in SECTIONS]
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    meta = (f"run folder {data['run_dir']}; report written {now}; run created {manifest.get('created', '-')}, "
            f"updated {manifest.get('updated', '-')}; manifest schema {manifest.get('schema_version')}")
    return page(f"Run report: {manifest.get('run') or pathlib.Path(data['run_dir']).name}", meta, sections)


def write_report(run_dir, out=None, evaluate=True, limit=None):
    """Writes the report; returns its path."""
    path = pathlib.Path(out) if out else pathlib.Path(run_dir) / "report.html"
    text = render(gather(run_dir, evaluate, limit))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def run(args):
    if args.limit is not None and args.limit < 1:
        print(f"error: --limit must be at least 1, got {args.limit}", file=sys.stderr)
        return 2
    try:
        path = write_report(args.run, args.out, args.evaluate, args.limit)
    except runfolder.ManifestError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: cannot write the report: {exc}", file=sys.stderr)
        return 2
    print(f"report: {path}")
    return 0
