"""Transfer learning on photo-like data, side by side in one run (bench/photo_like.py makes the folders):

  1. rgbnet; every zoo model from random weights (MobileNetV2 at alpha 0.35); MobileNetV2 from a weights file this bench
     pretrains on another generated set (12 other classes, other seed), head (half the epochs) then
     fine-tuning every layer but BatchNorm (the other half): test
     accuracy, seconds per epoch, int8 accuracy and drop (PTQ).
  2. Peak RSS over a folder of N photos at 224x224: one epoch of training batches streamed from the
     folder's disk cache (datasets.image_cache, training.batches), against every image decoded into
     memory and made float32 (the old way), and a whole streamed training epoch of MobileNetV2.

    .venv/bin/python bench/transfer_learning.py [--per-class 250] [--size 96] [--epochs 6] [--rss-images 5000]
        [--models mobilenet_v2,efficientnet_b0]

Prints a table, then one JSON line.
"""
import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from photo_like import make_photo_folder

from training.backbones import BACKBONES

RSS = """
import sys
import numpy as np


def peak():   # VmHWM starts anew at exec (ru_maxrss would carry the parent's peak over)
    return next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM:"))
mode, folder = sys.argv[1], sys.argv[2]
if mode == "memory":   # the old way: every image decoded into one array, then made float32
    from datasets.folder import _class_folders, _files
    from datasets.preprocess import InputSpec, load_image, to_model_input
    spec = InputSpec(224, 224, 3)
    paths = [p for name in _class_folders(folder) for p in _files(f"{folder}/{name}")]
    x = to_model_input(np.stack([load_image(p, spec, resize=True, convert=True) for p in paths]), (128.0, 128.0))
    for start in range(0, len(x), 64):
        x[start:start + 64].mean()
elif mode == "stream":   # the folder data set (decoded once to its disk cache), one epoch of training batches
    import datasets
    from training.batches import batches
    data = datasets.load_dataset("folder", path=folder, size=224)
    for x, y in batches(data.images, data.labels, np.arange(len(data)), 64, (128.0, 128.0), augment=("flip",), seed=0):
        pass
else:   # a real training epoch of MobileNetV2 (alpha 0.35) on the streamed folder
    from training.config import TrainConfig
    from training.train import train
    train(sys.argv[3], TrainConfig("folder", {"path": folder, "size": 224}, "mobilenet_v2", epochs=1, batch_size=32),
          verbose=0, overwrite=True)
print(peak())
"""


def peak_rss(mode, folder, work):
    env = dict(os.environ, CORAL_STAGES_CACHE=str(work / "cache"))
    out = subprocess.run([sys.executable, "-c", RSS, mode, str(folder), str(work / f"rss-{mode}")], cwd=REPO,
                         capture_output=True, text=True, timeout=3600, check=False, env=env)
    if out.returncode:
        raise SystemExit(f"{mode}: {out.stderr[-2000:]}")
    return int(out.stdout.split()[-1])


def subset(folder, out, every):
    """A folder of every ``every``-th image of ``folder`` (symbolic links), with the same classes."""
    for k, path in enumerate(sorted(p for p in pathlib.Path(folder).rglob("*") if p.is_file())):
        if k % every == 0:
            link = out / path.relative_to(folder)
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(path)
    return out


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
    from quantize.plan_options import PlanOptions
    from quantize.qat import QatPolicy
    from quantize.run import quantize_run
    from training.config import TrainConfig
    from training.train import train
    start = time.perf_counter()
    manifest = train(str(run), TrainConfig("folder", {"path": str(folder), "size": size}, model, epochs=epochs,
                                           patience=epochs, transfer=transfer), verbose=0, overwrite=True)
    seconds = time.perf_counter() - start
    epochs_run = manifest["training"]["epochs_run"]
    manifest = quantize_run(str(run), PlanOptions(stages=1), samples=200, qat=QatPolicy(auto=False))
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
    p.add_argument("--models", default=",".join(sorted(BACKBONES)), help="zoo models trained from random weights")
    args = p.parse_args(argv)
    from training.train import Transfer
    work = pathlib.Path(tempfile.mkdtemp(prefix="bench-training-"))
    target = make_photo_folder(work / "photos", 6, args.per_class, seed=0)
    # Pretraining on more, other classes (another seed): features general enough to carry over.
    other = make_photo_folder(work / "other", 12, args.per_class, seed=1)
    import datasets
    for folder in (target, other):   # decoded once into the cache now, so no row's time includes decoding
        datasets.load_dataset("folder", path=str(folder), size=args.size)
    rows = {"rgbnet": one(work / "rgbnet", target, args.size, "rgbnet", args.epochs)}
    for name in args.models.split(","):   # every zoo model from random weights: float, int8 and the drop
        rows[f"{name} none"] = one(work / name, target, args.size, name, args.epochs)
    pre = one(work / "pre", other, args.size, "mobilenet_v2", args.epochs)
    weights = backbone_weights(work / "pre", work / "pretrained_no_top.h5", args.size)
    rows["mobilenet_v2 pretrained"] = one(work / "v2pre", target, args.size, "mobilenet_v2", max(1, args.epochs // 2),
                                          Transfer(weights=str(weights), fine_tune_layers=1000,
                                                   fine_tune_epochs=max(1, args.epochs // 2)))
    rss = {}
    if args.rss_images:
        many = make_photo_folder(work / "many", 6, -(-args.rss_images // 6), seed=2, sizes=((320, 240), (256, 256)))
        rss = {mode: peak_rss(mode, many, work) for mode in ("stream", "memory", "train")}
        rss["train_fifth"] = peak_rss("train", subset(many, work / "fifth", 5), work)   # bounded: not per image
    print(f"photo-like data: 6 classes x {args.per_class} at {args.size}px; {args.epochs} epochs")
    print(f"{'model':26} {'float':>7} {'int8':>7} {'drop':>6} {'s/epoch':>8}")
    for name, row in rows.items():
        print(f"{name:26} {row['float']:>7.4f} {row['int8']:>7.4f} {row['drop_points']:>6.2f} {row['s_per_epoch']:>8}")
    print(f"(pretraining on the other set: float {pre['float']:.4f})")
    if rss:
        print(f"peak RSS over {args.rss_images} photos at 224x224: one epoch of streamed batches "
              f"{rss['stream'] / 2**30:.2f} GiB, all in memory as float32 {rss['memory'] / 2**30:.2f} GiB; "
              f"a streamed training epoch of mobilenet_v2 0.35 (batch 32): {rss['train'] / 2**30:.2f} GiB, and "
              f"{rss['train_fifth'] / 2**30:.2f} GiB on a fifth of the photos")
    print(json.dumps({"bench": "training", "rows": rows, "pretraining": pre, "peak_rss_bytes": rss}))


if __name__ == "__main__":
    main()
