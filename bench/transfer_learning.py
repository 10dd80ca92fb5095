"""Transfer learning on photo-like data, side by side in one run (bench/photo_like.py makes the folders):

  1. rgbnet; MobileNetV2 (alpha 0.35, --weights none); MobileNetV2 from a weights file this bench
     pretrains on another generated set (other classes, other seed), head then fine-tuning: test
     accuracy, seconds per epoch, int8 accuracy and drop (PTQ).
  2. Peak RSS of one training epoch's input pipeline over N images at 224x224: uint8 images read a
     batch at a time (training.batches) against all of them made float32 first (the old way).

    .venv/bin/python bench/transfer_learning.py [--per-class 250] [--size 96] [--epochs 6] [--rss-images 5000]

Prints a table, then one JSON line.
"""
import argparse
import json
import pathlib
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from photo_like import make_photo_folder  # noqa: E402

RSS = """
import sys
import numpy as np
from datasets.preprocess import to_model_input
images = np.random.default_rng(0).integers(0, 256, (int(sys.argv[2]), 224, 224, 3), dtype=np.uint8)
labels = np.arange(len(images)) % 6
def peak():   # VmHWM starts anew at exec (ru_maxrss would carry the parent's peak over)
    return next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM:"))
base = peak()
if sys.argv[1] == "float32":
    x = to_model_input(images, (128.0, 128.0))
    for start in range(0, len(x), 64):
        x[start:start + 64].mean()
else:
    from training.batches import batches
    for x, y in batches(images, labels, np.arange(len(images)), 64, (128.0, 128.0), augment=("flip",), seed=0):
        pass
print(base, peak())
"""


def peak_rss(mode, count):
    out = subprocess.run([sys.executable, "-c", RSS, mode, str(count)], cwd=REPO, capture_output=True, text=True,
                         check=True, timeout=1800).stdout.split()
    return int(out[-1])


def backbone_weights(run, path, size):
    """The trained MobileNetV2's backbone as a weights file, as Keras' no-top files are."""
    from training.keras_setup import keras
    trained = keras.models.load_model(run / "model.keras")
    backbone = keras.applications.MobileNetV2(input_shape=(size, size, 3), include_top=False, weights=None,
                                              alpha=0.35)
    for layer in backbone.layers:
        if layer.weights:
            layer.set_weights(trained.get_layer(layer.name).get_weights())
    backbone.save_weights(path)
    return path


def one(run, folder, size, model, epochs, transfer=None):
    from quantize.run import quantize_run
    from training.train import train
    start = time.perf_counter()
    manifest = train(str(run), "folder", {"path": str(folder), "size": size}, model, epochs=epochs, patience=epochs,
                     verbose=0, overwrite=True, transfer=transfer)
    seconds = time.perf_counter() - start
    epochs_run = manifest["training"]["epochs_run"]
    manifest = quantize_run(str(run), stages=1, samples=200, auto_qat=False)
    accuracy = manifest["accuracy"]
    return {"float": round(accuracy["float"], 4), "int8": round(accuracy["int8"], 4),
            "drop_points": round(100 * (accuracy["float"] - accuracy["int8"]), 2),
            "s_per_epoch": round(seconds / max(1, epochs_run), 1), "epochs": epochs_run}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--per-class", type=int, default=250, help="images per class (6 classes)")
    p.add_argument("--size", type=int, default=96)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--rss-images", type=int, default=5000, help="0 skips the memory comparison")
    args = p.parse_args(argv)
    from training.train import Transfer
    work = pathlib.Path(tempfile.mkdtemp(prefix="bench-training-"))
    target = make_photo_folder(work / "photos", 6, args.per_class, seed=0)
    other = make_photo_folder(work / "other", 6, args.per_class, seed=1)
    rows = {"rgbnet": one(work / "rgbnet", target, args.size, "rgbnet", args.epochs)}
    rows["mobilenet_v2 none"] = one(work / "v2", target, args.size, "mobilenet_v2", args.epochs)
    pre = one(work / "pre", other, args.size, "mobilenet_v2", args.epochs)
    weights = backbone_weights(work / "pre", work / "pretrained_no_top.h5", args.size)
    rows["mobilenet_v2 pretrained"] = one(work / "v2pre", target, args.size, "mobilenet_v2", max(1, args.epochs // 2),
                                          Transfer(weights=str(weights), fine_tune_layers=40,
                                                   fine_tune_epochs=max(1, args.epochs // 2)))
    rss = {}
    if args.rss_images:
        rss = {mode: peak_rss(mode, args.rss_images) for mode in ("float32", "batches")}
    print(f"photo-like data: 6 classes x {args.per_class} at {args.size}px; {args.epochs} epochs")
    print(f"{'model':26} {'float':>7} {'int8':>7} {'drop':>6} {'s/epoch':>8}")
    for name, row in rows.items():
        print(f"{name:26} {row['float']:>7.4f} {row['int8']:>7.4f} {row['drop_points']:>6.2f} {row['s_per_epoch']:>8}")
    print(f"(pretraining on the other set: float {pre['float']:.4f})")
    if rss:
        print(f"peak RSS, one epoch over {args.rss_images} images at 224x224: batches {rss['batches'] / 2**30:.2f} GiB,"
              f" float32 first {rss['float32'] / 2**30:.2f} GiB")
    print(json.dumps({"bench": "training", "rows": rows, "pretraining": pre, "peak_rss_bytes": rss}))


if __name__ == "__main__":
    main()
