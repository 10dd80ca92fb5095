"""Which backbones the Edge TPU runs: each built at 224x224 (random weights: the graph is what matters),
converted to full int8 as `python -m quantize` does, and put through the pre-flight check.

    .venv/bin/python bench/zoo_preflight.py [--size 224] [--candidates]

Prints per model: parameters, int8 file size, ops, ops the compiler is predicted to map, parameter
memory against the on-chip cache. ``--candidates`` adds models the project leaves out, with the reason
the check gives (MobileNetV3 with hard-swish). The README's model table comes from
this. Then one JSON line.
"""
import argparse
import json
import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from compile.preflight.check import check_model
from datasets.preprocess import PIXELS_MINUS1_1, range_sample, to_model_input
from quantize.ptq import convert_int8
from training.backbones import BACKBONES
from training.keras_setup import keras
from training.models import NORMALIZATION, build_model

CANDIDATES = {
    "mobilenet_v3_small (hard-swish)": lambda i: keras.applications.MobileNetV3Small(
        input_tensor=i, include_top=False, weights=None, include_preprocessing=False),
}


def candidate(make, size, classes):
    inputs = keras.Input((size, size, 3), name="image")
    x = keras.layers.GlobalAveragePooling2D()(make(inputs).output)
    return keras.Model(inputs, keras.layers.Dense(classes, name="logits")(x))


def row(name, model, size):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (8, size, size, 3), dtype=np.uint8)
    pixels = np.concatenate([range_sample(pixels[0])[np.newaxis], pixels])
    int8 = convert_int8(model, to_model_input(pixels, NORMALIZATION.get(name, PIXELS_MINUS1_1)))
    report = check_model(int8, name)
    summary, memory = report["summary"], report["memory"]
    cpu_ops = sorted({p["type"] for p in report["ops"] if p["placement"] == "cpu"})
    return {"model": name, "parameters": int(model.count_params()), "int8_kib": round(len(int8) / 1024),
            "ops": summary["total_ops"], "tpu_ops": summary["tpu_ops"], "cpu_op_types": cpu_ops,
            "refused": report["refused"], "fits_on_chip": memory["fits_on_chip"]}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--candidates", action="store_true", help="also the models left out, and why")
    args = p.parse_args(argv)
    rows = [row(name, build_model(name, (args.size, args.size, 3), 10), args.size) for name in BACKBONES]
    if args.candidates:
        rows += [row(name, candidate(make, args.size, 10), args.size) for name, make in CANDIDATES.items()]
    print(f"{'model':34} {'params':>10} {'int8 KiB':>9} {'ops':>5} {'on TPU':>7}  fits on chip  left on the CPU")
    for r in rows:
        print(f"{r['model']:34} {r['parameters']:>10,} {r['int8_kib']:>9} {r['ops']:>5} {r['tpu_ops']:>7}  "
              f"{r['fits_on_chip']!s:12}  {', '.join(r['cpu_op_types']) or '-'}")
    print(json.dumps({"bench": "zoo_preflight", "size": args.size, "rows": rows}))


if __name__ == "__main__":
    main()
