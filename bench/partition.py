"""Partition objectives side by side: measured CPU latency per stage of MobileNetV2 224 cut 2-5 ways.

For each stage count, the plans of ``--balance macs``, ``params`` and
``latency`` are cut into real stage models, and all their stages are timed
together, round-robin, with the real interpreter (one thread each: one core
per pipeline stage). A pipeline's throughput is set by its slowest stage, so
the figures are the slowest stage (ms) and max/mean (1.0 = perfectly even).

  python bench/partition.py [--model PATH] [--runs 50] [--stages 2,3,4,5]

Prints a table, then one JSON line with every figure.

  python bench/partition.py --edgetpu [--models ResNet50:299,ResNet152V2:299,...] [--stages 2,3,4,5,6]

instead compares, for models too big for one Edge TPU's cache (tf_keras applications rebuilt and
converted as bench/edgetpu_model.py does, or .tflite paths), the *estimated* pipeline throughput on one
Edge TPU per stage (tflitegraph/edgetpu_latency.py; no TPU is used) of ``--balance edgetpu`` cuts
against ``params`` cuts (what ``edgetpu_compiler --num_segments`` aims at) and ``macs`` cuts.
"""
import argparse
import json
import pathlib
import statistics
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tflitegraph import edgetpu_latency
from tflitegraph.graph import read_graph
from quantize.profile import stage_models, time_models
from quantize.stages import plan_split
from quantize.plan_options import PlanOptions

OBJECTIVES = ("macs", "params", "latency")
DEFAULT_MODEL = REPO.parent / "shared" / "coral_test_data" / "mobilenet_v2_1.0_224_quant.tflite"


BIG_MODELS = ("ResNet50:299,ResNet50V2:299,ResNet152V2:299,InceptionResNetV2:299,DenseNet121:224,VGG16:224,"
              "inception_v4:299")


def edgetpu_estimates(models, counts, work, link="usb3"):
    """Estimated slowest stage and throughput per objective and stage count; prints a table."""
    from bench.edgetpu_model import int8_model
    from quantize.partition import balanced_plan, objective_cost
    objectives = (f"edgetpu:{link}", "params", "macs")
    print(f"{'model':<22} {'stages':>6}  " + "  ".join(f"{o.split(':')[0] + ' /s':>13}" for o in objectives)
          + "  edgetpu vs params, vs macs   (estimated, one Edge TPU per stage)")
    results = []
    for spec in models.split(","):
        builder, _, size = spec.partition(":")
        path = spec if spec.endswith(".tflite") else int8_model(builder, int(size or 224), work)
        graph = read_graph(str(path))
        estimate = objective_cost(graph, objectives[0])
        whole = edgetpu_latency.stage_ms(graph, 0, len(graph.ops), link)
        for n in counts:
            slowest = {}
            for objective in objectives:
                bounds = [0] + balanced_plan(graph, n, objective).cuts + [len(graph.ops)]
                slowest[objective] = max(estimate(a, b) for a, b in zip(bounds, bounds[1:]))
            rate = {o: 1000 / ms for o, ms in slowest.items()}
            ahead = [rate[objectives[0]] / rate[o] for o in objectives[1:]]
            print(f"{pathlib.Path(spec).stem:<22} {n:>6}  " + "  ".join(f"{rate[o]:>13.1f}" for o in objectives)
                  + f"  {ahead[0]:.2f}x, {ahead[1]:.2f}x")
            results.append({"model": spec, "stages": n, "one_tpu_ms": round(whole, 3),
                            "throughput_per_s": {o.split(":")[0]: round(r, 2) for o, r in rate.items()},
                            "edgetpu_over_params": round(ahead[0], 4), "edgetpu_over_macs": round(ahead[1], 4)})
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(DEFAULT_MODEL))
    parser.add_argument("--runs", type=int, default=50, help="timed rounds per stage (median kept)")
    parser.add_argument("--stages", default=None, help="stage counts (default 2,3,4,5; with --edgetpu 2-6)")
    parser.add_argument("--edgetpu", action="store_true", help="estimated Edge TPU throughput of big models")
    parser.add_argument("--models", default=BIG_MODELS, help="with --edgetpu: tf_keras application:size or .tflite")
    parser.add_argument("--work", default="/tmp/edgetpu_zoo", help="with --edgetpu: where converted models are kept")
    parser.add_argument("--link", default="usb3", choices=edgetpu_latency.LINKS)
    args = parser.parse_args()
    if args.edgetpu:
        counts = [int(s) for s in (args.stages or "2,3,4,5,6").split(",")]
        print(json.dumps({"edgetpu_estimates": edgetpu_estimates(args.models, counts, args.work, args.link)}))
        return
    args.stages = args.stages or "2,3,4,5"
    graph = read_graph(args.model)
    counts = [int(s) for s in args.stages.split(",")]
    whole = time_models([pathlib.Path(args.model).read_bytes()], runs=args.runs)[0]
    print(f"{pathlib.Path(args.model).name}: {len(graph.ops)} ops, unsplit {whole:.3f} ms on one thread")
    print(f"{'stages':>6}  {'balance':<8} {'cut positions':<16} {'stage ms (measured)':<36} "
          f"{'slowest':>8} {'max/mean':>8}")
    figures = {"model": pathlib.Path(args.model).name, "runs": args.runs, "unsplit_ms": round(whole, 4),
               "results": []}
    for n in counts:
        plans = {b: plan_split(graph, PlanOptions(stages=n, balance=b, runs=max(10, args.runs // 2)),
                              progress=lambda *_: None)
                 for b in OBJECTIVES}
        models = [m for b in OBJECTIVES for m in stage_models(graph, plans[b].cuts)]
        times = time_models(models, runs=args.runs)
        row = {"stages": n}
        for k, b in enumerate(OBJECTIVES):
            ms = times[k * n:(k + 1) * n]
            balance = max(ms) / statistics.mean(ms)
            row[b] = {"cuts": plans[b].cuts, "stage_ms": [round(v, 4) for v in ms],
                      "slowest_ms": round(max(ms), 4), "max_over_mean": round(balance, 4)}
            print(f"{n:>6}  {b:<8} {','.join(map(str, plans[b].cuts)):<16} "
                  f"{' '.join(f'{v:.3f}' for v in ms):<36} {max(ms):>8.3f} {balance:>8.3f}")
        row["params_over_latency_slowest"] = round(row["params"]["slowest_ms"] / row["latency"]["slowest_ms"], 4)
        row["macs_over_latency_slowest"] = round(row["macs"]["slowest_ms"] / row["latency"]["slowest_ms"], 4)
        print(f"{'':>6}  slowest stage, params/latency: {row['params_over_latency_slowest']:.2f}x, "
              f"macs/latency: {row['macs_over_latency_slowest']:.2f}x")
        figures["results"].append(row)
    worst = max(r["latency"]["max_over_mean"] for r in figures["results"])
    figures["latency_max_over_mean_worst"] = worst
    figures["latency_target_met"] = worst <= 1.15
    print(f"--balance latency: worst max/mean {worst:.3f} (target <= 1.15: "
          f"{'met' if worst <= 1.15 else 'NOT met'})")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
