"""``python -m deploy summary``: the run's summary table, read from its manifest."""
from runfolder import cli


def parser():
    p = cli.ArgumentParser(prog="python -m deploy summary",
                           description="Print the run's summary table from its manifest.",
                           epilog="example:\n  python -m deploy summary --run runs/demo")
    p.add_argument("--run", required=True, help="run folder")
    return p


def run(args):
    from deploy.report.summary import print_summary
    print_summary(args.run)
    return 0
