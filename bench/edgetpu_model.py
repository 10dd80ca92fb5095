"""Calibrates the Edge TPU latency model (tflitegraph/edgetpu_latency.py) on Coral's published figures.

    .venv/bin/python bench/edgetpu_model.py [--work /tmp/edgetpu_zoo] [--write]

Rebuilds each published model that tf_keras.applications has (weights=None: the same layers, shapes
and parameter counts as the published models, whose int8 files are too large for Coral's test-data
snapshot), converts it to full int8 as `python -m quantize` does, and reads per model what the
latency model uses: multiply-accumulates, parameter bytes, input and output bytes. Then it fits the
model's constants by non-negative least squares on relative error, and reports leave-one-out: each
model's estimate from constants fitted on the others. ``--write`` stores the features in
bench/data/edgetpu_published.json, from which tests/test_edgetpu_latency.py refits the constants.
"""
import argparse
import json
import pathlib
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from tflitegraph import edgetpu_latency as L  # noqa: E402
from tflitegraph.edgetpu_fit import fit  # noqa: E402

DATA = ROOT / "bench" / "data" / "edgetpu_published.json"
BENCHMARKS = "https://coral.ai/docs/edgetpu/benchmarks/ (USB Accelerator, USB 3.0, desktop host)"
# published name -> (tf_keras.applications builder, input size, published ms)
PUBLISHED = {   # Table 1 of BENCHMARKS, "Desktop CPU + USB Accelerator (USB 3.0) with Edge TPU" column
    "MobileNet v1 (224x224)": ("MobileNet", 224, 2.4),
    "MobileNet v2 (224x224)": ("MobileNetV2", 224, 2.6),
    "DenseNet (224x224)": ("DenseNet121", 224, 20.0),
    "ResNet-50 V1 (299x299)": ("ResNet50", 299, 49.0),
    "ResNet-50 V2 (299x299)": ("ResNet50V2", 299, 50.0),
    "ResNet-152 V2 (299x299)": ("ResNet152V2", 299, 128.0),
    "Inception-ResNet V2 (299x299)": ("InceptionResNetV2", 299, 57.0),
    "VGG16 (224x224)": ("VGG16", 224, 296.0),
    "VGG19 (224x224)": ("VGG19", 224, 308.0),
    "Inception v1 (224x224)": ("inception_v1", 224, 3.4),    # bench/inception_builders.py
    "Inception v4 (299x299)": ("inception_v4", 299, 85.0),
}


def int8_model(builder, size, work):
    """The full-int8 file of a tf_keras application, converted once into ``work``."""
    path = pathlib.Path(work) / f"{builder}_{size}.tflite"
    if not path.exists():
        from quantize.ptq import convert_int8
        from training.keras_setup import keras
        if builder.startswith("inception_v"):   # not in tf_keras.applications: slim's layers, rebuilt here
            import inception_builders
            model = getattr(inception_builders, builder)(keras, size)
        else:
            model = getattr(keras.applications, builder)(weights=None, input_shape=(size, size, 3))
        samples = np.random.default_rng(0).uniform(-1, 1, (4, size, size, 3)).astype(np.float32)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(convert_int8(model, samples))
    return path


def features(path):
    from tflitegraph.graph import read_graph
    return L.model_features(read_graph(str(path)))


def rebuilt_from(builder, size):
    if builder.startswith("inception_v"):
        return f"bench/inception_builders.py {builder}(keras, {size}) (slim's layers, batch norm folded), full int8"
    return f"tf_keras.applications.{builder}(weights=None, input_shape=({size}, {size}, 3)), full int8"


def collect(work, stored=()):
    """One row per PUBLISHED model; a row already in ``stored`` with the same build is kept, not rebuilt."""
    kept = {(r["name"], r["rebuilt_from"]): r for r in stored}
    rows = []
    for name, (builder, size, ms) in PUBLISHED.items():
        how = rebuilt_from(builder, size)
        if (name, how) in kept:
            rows.append(dict(kept[(name, how)], published_ms=ms))
            continue
        print(f"{name}: converting / reading {builder} at {size}", file=sys.stderr, flush=True)
        rows.append({"name": name, "published_ms": ms, "source": BENCHMARKS, "rebuilt_from": how,
                     **features(int8_model(builder, size, work))})
    return rows


def report(rows):
    constants = fit(rows)
    print(f"fitted on all {len(rows)}: " + ", ".join(f"{k} {v:.4g}" for k, v in constants.items()))
    print(f"{'model':<24} {'published':>9} {'fitted':>8} {'leave-one-out':>13} {'error':>7}")
    errors = []
    for i, row in enumerate(rows):
        others = fit(rows[:i] + rows[i + 1:])
        loo = L.model_ms(row, others)
        errors.append(abs(loo - row["published_ms"]) / row["published_ms"])
        print(f"{row['name']:<24} {row['published_ms']:>8.1f}  {L.model_ms(row, constants):>7.1f}  "
              f"{loo:>12.1f}  {100 * errors[-1]:>6.1f}%")
    print(f"leave-one-out error: median {100 * np.median(errors):.1f}%, max {100 * max(errors):.1f}% "
          f"over {len(rows)} models")
    return constants


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default="/tmp/edgetpu_zoo", help="where the converted models are kept")
    parser.add_argument("--write", action="store_true", help=f"store the features in {DATA.relative_to(ROOT)}")
    parser.add_argument("--from-data", action="store_true", help="use the stored features, convert nothing")
    parser.add_argument("--rebuild", action="store_true", help="convert every model, even those stored")
    args = parser.parse_args()
    stored = json.loads(DATA.read_text()) if DATA.exists() else []
    rows = stored if args.from_data else collect(args.work, [] if args.rebuild else stored)
    if args.write:
        DATA.parent.mkdir(exist_ok=True)
        DATA.write_text(json.dumps(rows, indent=1) + "\n")
    report(rows)


if __name__ == "__main__":
    main()
