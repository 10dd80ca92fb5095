"""The seed-000 way (three Keras sub-models, model.predict one after another, float) against our int8
CPU stage chain on the same inputs; the cost of splitting MobileNetV2 224; Python overhead per stage hop.

    .venv/bin/python bench/seed_chain.py --run runs/demo --samples 300 --predict-samples 100
    .venv/bin/python bench/seed_chain.py --run /tmp/seed_run --train-if-missing   # trains 1 epoch first

Seed 000 cut its trained model into three Keras models at the block ends and ran
``Layer1.predict(x)`` -> ``Layer2.predict`` -> ``Layer3.predict`` for each image.
Here the same cuts (the run's ``training.boundaries``) are made on the run's
``model.keras``, and timed per sample both through ``predict`` (the seed's call)
and through the direct call ``model(x)``; our chain is the run's int8 stages
with quantize/dequantize at the ends. Targets: >= 100x against the direct call;
the 3-stage MobileNetV2 chain <= 1.3x the unsplit int8 model. Prints a table,
then one JSON line with every figure (medians; ratios included).
"""
import argparse
import json
import os
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import runfolder
from datasets.preprocess import to_model_input
from deploy.core.classify import whole_model_chain
from deploy.core.open import open_chain
from deploy.core.runtime import load_runtime
from deploy.core.tensors import dequantize, quantize
from deploy.core.verify import sample_feeds
from quantize.plan_options import PlanOptions

MNV2 = os.path.normpath(os.path.join(REPO, "..", "shared", "coral_test_data", "mobilenet_v2_1.0_224_quant.tflite"))


def median_ms(seconds):
    return float(np.median(seconds) * 1000.0)


def timed(function, inputs, warmup):
    """Per-call seconds of ``function(x)`` over ``inputs`` after ``warmup`` calls; and the outputs."""
    for x in inputs[:warmup]:
        function(x)
    seconds, outputs = [], []
    for x in inputs:
        start = time.perf_counter()
        outputs.append(function(x))
        seconds.append(time.perf_counter() - start)
    return seconds, outputs


def ensure_run(run, train_if_missing):
    if os.path.exists(os.path.join(run, "model.keras")) and os.path.exists(os.path.join(run, "manifest.json")):
        return
    if not train_if_missing:
        sys.exit(f"{run} has no model.keras: make one with `make demo` (runs/demo) or pass --train-if-missing")
    from quantize.run import quantize_run
    from training.config import TrainConfig
    from training.train import train
    train(run, TrainConfig("digits", {"variants": 2}, "splitnet", epochs=1), verbose=0)
    quantize_run(run, PlanOptions(stages=3), samples=50)


def seed_submodels(model, boundaries):
    """The seed's three sub-models, cut at the block ends by layer name."""
    from training.keras_setup import keras
    cuts = [model.get_layer(name).output for name in boundaries]
    ends = [model.input] + cuts + [model.output]
    return [keras.Model(ends[k], ends[k + 1]) for k in range(len(ends) - 1)]


def seed_vs_chain(run, samples, predict_samples, warmup, threads):
    from training.keras_setup import keras
    manifest = runfolder.load(run)
    model = keras.models.load_model(runfolder.verify_file(run, manifest["training"]["keras_model"], "model"))
    subs = seed_submodels(model, manifest["training"]["boundaries"])
    with np.load(runfolder.verify_file(run, manifest["dataset"]["test_set"], "test set")) as data:
        images = data["images"][:samples]
    floats = [to_model_input(im)[np.newaxis] for im in images]
    _, chain = open_chain(run, "cpu", threads, tpus=[])
    first_in, first_out = chain.inputs[0], chain.outputs[0]

    def ours(x):
        return dequantize(chain.run({first_in["name"]: quantize(x, first_in)})[first_out["name"]], first_out)

    def direct(x):
        for sub in subs:
            x = sub(x, training=False)
        return np.asarray(x)

    def predict(x):
        for sub in subs:
            x = sub.predict(x, verbose=0)
        return x

    ours_s, ours_out = timed(ours, floats, warmup)
    direct_s, direct_out = timed(direct, floats, min(warmup, 5))
    predict_s, _ = timed(predict, floats[:predict_samples], min(warmup, 3))
    agree = np.mean([np.argmax(a) == np.argmax(b) for a, b in zip(ours_out, direct_out)])
    hops = overhead_per_hop_us(chain, [{first_in["name"]: quantize(x, first_in)} for x in floats], warmup)
    return {"samples": len(floats), "predict_samples": len(predict_s), "stages": len(chain.stages),
            "ours_ms": median_ms(ours_s), "direct_call_ms": median_ms(direct_s), "predict_ms": median_ms(predict_s),
            "ratio_vs_direct_call": median_ms(direct_s) / median_ms(ours_s),
            "ratio_vs_predict": median_ms(predict_s) / median_ms(ours_s),
            "top1_agreement_int8_vs_float": float(agree), "overhead_per_hop_us": hops}


class _TimedInterpreter:
    """Passes everything to a real interpreter and adds up the seconds spent in invoke()."""

    def __init__(self, interpreter, spent):
        self._interpreter, self._spent = interpreter, spent

    def invoke(self):
        start = time.perf_counter()
        self._interpreter.invoke()
        self._spent.append(time.perf_counter() - start)

    def __getattr__(self, name):
        return getattr(self._interpreter, name)


def overhead_per_hop_us(chain, feeds, warmup):
    """Median microseconds per stage spent outside invoke() in StageChain.run (setting and reading tensors,
    matching names, Python calls)."""
    spent = []
    for stage in chain.stages:
        stage.interpreter = _TimedInterpreter(stage.interpreter, spent)
    try:
        overheads = []
        for i, feed in enumerate(feeds):
            del spent[:]
            start = time.perf_counter()
            chain.run(feed)
            total = time.perf_counter() - start
            if i >= warmup:
                overheads.append((total - sum(spent)) / len(chain.stages))
    finally:
        for stage in chain.stages:
            stage.interpreter = stage.interpreter._interpreter
    return float(np.median(overheads) * 1e6)


def split_cost(model, stages, samples, warmup, threads, work):
    """Median latency of the unsplit int8 model and of its ``stages``-stage chain, same inputs and runtime."""
    from quantize.stages import split_into
    out = os.path.join(work, f"{os.path.splitext(os.path.basename(model))[0]}_{stages}_macs")
    if not os.path.exists(os.path.join(out, "manifest.json")):
        split_into(out, model, PlanOptions(stages=stages), progress=lambda *_: None)
    _, chain = open_chain(out, "cpu", threads, tpus=[])
    whole = whole_model_chain(model, num_threads=threads)
    feeds = sample_feeds(chain, samples)
    whole_feeds = [{whole.inputs[0]["name"]: f[chain.inputs[0]["name"]]} for f in feeds]
    whole_s, _ = timed(whole.run, whole_feeds, warmup)
    chain_s, _ = timed(chain.run, feeds, warmup)
    return {"model": os.path.basename(model), "stages": stages, "samples": samples,
            "unsplit_ms": median_ms(whole_s), "chain_ms": median_ms(chain_s),
            "ratio_chain_vs_unsplit": median_ms(chain_s) / median_ms(whole_s),
            "overhead_per_hop_us": overhead_per_hop_us(chain, feeds, warmup)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default=os.path.join(REPO, "runs", "demo"))
    parser.add_argument("--train-if-missing", action="store_true")
    parser.add_argument("--samples", type=int, default=300, help="samples for our chain and the direct call")
    parser.add_argument("--predict-samples", type=int, default=100, help="samples for model.predict (slow)")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None, help="threads per stage interpreter (default: runtime)")
    parser.add_argument("--mnv2", default=MNV2)
    parser.add_argument("--mnv2-samples", type=int, default=50)
    parser.add_argument("--work", default=os.path.join(os.environ.get("TMPDIR", "/tmp"), "coral_stages_bench"))
    args = parser.parse_args(argv)
    ensure_run(args.run, args.train_if_missing)
    runtime = load_runtime()
    seed = seed_vs_chain(args.run, args.samples, args.predict_samples, args.warmup, args.threads)
    cost = split_cost(args.mnv2, 3, args.mnv2_samples, args.warmup, args.threads, args.work)
    figures = {"bench": "seed_chain", "runtime": f"{runtime.name} {runtime.version}", "cpu_count": os.cpu_count(),
               "threads": args.threads, "seed000": seed, "split_cost": cost}
    print(f"{runtime.name} {runtime.version}, {os.cpu_count()} cores; medians per sample")
    print(f"{'seed 000 (float, 3 Keras sub-models)':<44}{'ms':>10}{'ours is':>10}")
    print(f"{'  model.predict x3 (the seed)':<44}{seed['predict_ms']:>10.3f}{seed['ratio_vs_predict']:>9.0f}x")
    print(f"{'  direct call model(x) x3':<44}{seed['direct_call_ms']:>10.3f}{seed['ratio_vs_direct_call']:>9.0f}x")
    print(f"{'  our int8 chain (quantize..dequantize)':<44}{seed['ours_ms']:>10.3f}")
    print(f"  top-1 agreement int8 chain vs float: {seed['top1_agreement_int8_vs_float']:.4f}; "
          f"Python overhead per stage hop: {seed['overhead_per_hop_us']:.1f} us")
    print(f"{'MobileNetV2 224, cost of splitting':<44}{'ms':>10}")
    print(f"{'  unsplit int8 model':<44}{cost['unsplit_ms']:>10.3f}")
    print(f"{'  3-stage chain':<44}{cost['chain_ms']:>10.3f}{cost['ratio_chain_vs_unsplit']:>9.2f}x")
    print(f"  Python overhead per stage hop: {cost['overhead_per_hop_us']:.1f} us")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
