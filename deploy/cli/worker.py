"""python -m deploy worker: run queued jobs (POST /v1/jobs) with the run's stages or a stage chain.

  python -m deploy worker --run runs/demo [--queue sqlite:PATH | redis://host:port/db] [--workers 2]
      [--chain h1:p,h2:p,h3:p]

Each worker thread holds its own interpreters. A job whose worker dies goes back to the queue
when its lease expires (--lease-s), and is marked failed after --max-attempts.
"""
import argparse
import logging
import os

from deploy.cli.serving_options import add_common, queue_url, upstream_factory
from runfolder import cli
from runfolder.errors import OptionError


def parser():
    p = cli.ArgumentParser(prog="python -m deploy worker", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common(p)
    p.add_argument("--workers", type=int, default=1, help="worker threads, each with its own model")
    return p


def run(args):
    from deploy.serving.queue import open_queue
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if not os.path.isdir(args.run):
        raise OptionError(f"--run {args.run} is not a folder")
    if args.workers < 1:
        raise OptionError(f"--workers must be at least 1, got {args.workers}")
    make_upstream = upstream_factory(args)
    queue = open_queue(queue_url(args), args.max_attempts, args.lease_s)
    print(f"worker: {args.workers} thread(s) on {queue.url}", flush=True)
    queue.run_worker(make_upstream, workers=args.workers)
    return 0
