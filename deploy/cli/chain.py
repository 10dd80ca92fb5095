"""python -m deploy chain: run inputs through stage servers, as ``python -m deploy`` does in-process.

  python -m deploy chain --hosts 10.0.0.1:50051,10.0.0.2:50051,10.0.0.3:50051 --run runs/demo --eval
  python -m deploy chain --hosts 127.0.0.1:50051 --run runs/demo --image digit.png --resize

The run folder gives the input size, the test split and the class names; the
stages themselves run on the servers. Latency is measured end to end through
the network chain.
"""
import argparse
import sys

from deploy.net.remote_chain import SERVERS_DECIDE, RemoteChain
from runfolder import cli
from runfolder.errors import CannotRunHere


def parser():
    p = cli.ArgumentParser(prog="python -m deploy chain", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hosts", required=True, help="HOST:PORT of the first stage, or of every stage, comma separated")
    p.add_argument("--run", required=True, help="the run folder the servers were started with")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--image", nargs="+", help="image files to classify")
    what.add_argument("--eval", action="store_true", help="accuracy and latency on the held-out test split")
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N test samples")
    p.add_argument("--top-k", type=int, default=3, help="classes shown per image")
    p.add_argument("--resize", action=argparse.BooleanOptionalAction, default=True,
                   help="resize images to the model's input size (default: on; --no-resize refuses instead)")
    p.add_argument("--convert", action=argparse.BooleanOptionalAction, default=True,
                   help="convert images to the model's colour mode (default: on; --no-convert refuses instead)")
    p.add_argument("--timeout", type=float, default=10.0, help="deadline of each request in seconds (default 10)")
    from deploy.net import tls
    tls.add_arguments(p)
    return p


def run(args):
    try:
        from deploy.net import client, tls
    except ImportError as exc:
        raise CannotRunHere(f"the chain client needs grpcio ({exc}); pip install 'coral-stages[serve]'") from exc
    import runfolder
    try:
        manifest = runfolder.load(args.run)
        with client.ChainClient(args.hosts, tls.from_args(args), args.timeout) as remote:
            chain = RemoteChain(remote, manifest)
            for address, state in remote.health().items():
                print(f"{address}: {state}")
            if args.eval:
                _evaluate(args, manifest, chain)
            else:
                _classify(args, manifest, chain)
    except client.ChainCallError as exc:
        print(f"error: the chain failed: {exc}", file=sys.stderr)
        return 2
    return 0


def _evaluate(args, manifest, chain):
    from deploy.core.classify import evaluate
    from deploy.core.open import load_test_set
    from deploy.core.progress import printer
    images, labels = load_test_set(args.run, manifest)
    if args.limit:
        images, labels = images[:args.limit], labels[:args.limit]
    result = evaluate(chain, images, labels, printer("network chain on test split"), exit_threshold=SERVERS_DECIDE)
    print(f"chain accuracy on {result['samples']} test samples: {result['accuracy']:.4f}; "
          f"latency median {result['latency_ms']['median']:.3f} ms, p95 {result['latency_ms']['p95']:.3f} ms "
          f"(through {args.hosts})")
    exited = [k for k in result["exit_stages"] if k is not None]
    if exited:
        shares = ", ".join(f"stage {k}: {exited.count(k) / len(images):.1%}" for k in sorted(set(exited)))
        print(f"left early at an exit head: {len(exited) / len(images):.1%} ({shares})")


def _classify(args, manifest, chain):
    from datasets import load_image
    from datasets.labels import labels_of
    from deploy.core.classify import classify
    from deploy.core.open import describe_classes, input_spec
    spec = input_spec(manifest, chain)
    names = labels_of(manifest)
    for path in args.image:
        classes = classify(chain, load_image(path, spec, resize=args.resize, convert=args.convert), args.top_k,
                           exit_threshold=SERVERS_DECIDE)
        print(f"{path}: {describe_classes(classes, names)}")
