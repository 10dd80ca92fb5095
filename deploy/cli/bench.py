"""``python -m deploy bench``: latency per stage and end to end, sequential against pipelined."""
from deploy.cli.options import add_runtime_options, runtime_of
from runfolder import cli


def parser():
    p = cli.ArgumentParser(
        prog="python -m deploy bench",
        description="Latency p50/p95/p99 per stage and end to end, and throughput, sequential vs pipelined "
                    "(one thread per stage); saved in the manifest (deploy.bench) with a plot bench.png.",
        epilog="example:\n  python -m deploy bench --run runs/demo --samples 200")
    p.add_argument("--run", required=True, help="run folder (written by quantize, optionally compile)")
    add_runtime_options(p)
    p.add_argument("--samples", type=int, default=200, help="timed inputs")
    p.add_argument("--warmup", type=int, default=20, help="untimed inputs first")
    p.add_argument("--queue-size", type=int, default=2, help="bound of each queue between stages")
    p.add_argument("--no-plot", dest="plot", action="store_false", help="do not draw bench.png")
    p.add_argument("--replicas", default=None, metavar="auto|STAGE:COPIES,...",
                   help="also run the pipeline with copies of stages working at once, results in order: "
                        "'auto' puts spare Edge TPUs on the slowest stages (by the estimate, or the measured "
                        "CPU time); '1:3' runs stage 1 three times (on spare TPUs, else the CPU)")
    return p


def run(args):
    from deploy.cli import actions
    actions.bench_run(args.run, runtime_of(args), args.samples, args.warmup, args.queue_size, args.plot,
                      args.replicas)
    return 0
