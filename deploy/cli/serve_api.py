"""python -m deploy serve-api: the HTTP serving API (see deploy.serving.app).

  python -m deploy serve-api --run runs/demo [--listen 127.0.0.1:8000] [--token-file F]
      [--max-concurrent 2] [--max-body-bytes 4194304] [--queue sqlite:PATH | redis://host:port/db]
      [--chain h1:p,h2:p,h3:p]
"""
import argparse
import os
import pathlib

from deploy.cli.serving_options import add_common, parse_listen, queue_url, upstream_factory
from runfolder import cli
from runfolder.errors import CannotRunHere
from runfolder.errors import OptionError


def parser():
    p = cli.ArgumentParser(prog="python -m deploy serve-api", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common(p)
    p.add_argument("--listen", default="127.0.0.1:8000", help="host:port to bind (default loopback only)")
    p.add_argument("--token-file", default=None, help="file holding the bearer token /v1 calls must send")
    p.add_argument("--max-concurrent", type=int, default=2, help="classifications at once; more get 503")
    p.add_argument("--max-body-bytes", type=int, default=4 * 1024 * 1024, help="larger bodies get 413")
    p.add_argument("--max-queued", type=int, default=1000, help="jobs waiting for a worker; more get 503")
    p.add_argument("--retry-after-s", type=int, default=1, help="Retry-After sent with 503")
    return p


def read_token(path):
    """The token in a file (surrounding whitespace dropped); refuses an empty one."""
    if not os.path.isfile(path):
        raise OptionError(f"--token-file {path} does not exist")
    token = pathlib.Path(path).read_text(encoding="utf-8").strip()
    if not token:
        raise OptionError(f"--token-file {path} is empty; put the token in it")
    return token


def run(args):
    try:
        import uvicorn

        from deploy.serving.app import create_app
        from deploy.serving.queue import open_queue
    except ImportError as exc:
        raise CannotRunHere(f"serve-api needs fastapi, uvicorn and python-multipart ({exc})") from exc
    host, port = parse_listen(args.listen)
    token = read_token(args.token_file) if args.token_file else None
    if not os.path.isdir(args.run):
        raise OptionError(f"--run {args.run} is not a folder")
    upstream = upstream_factory(args)()
    queue = open_queue(queue_url(args), args.max_attempts, args.lease_s)
    app = create_app(upstream, queue, token=token, max_concurrent=args.max_concurrent,
                     max_body_bytes=args.max_body_bytes, retry_after_s=args.retry_after_s,
                     max_queued=args.max_queued)
    print(f"serving on http://{args.listen} (queue {queue.url}; token {'required' if token else 'off'})",
          flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
    return 0
