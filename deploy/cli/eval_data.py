"""``deploy --eval --dataset folder -o path=...``: measure any run on a labelled data set of your own.

The run may come from training here or from elsewhere (``quantize split`` of Coral's models). The
data set's classes are matched to the model's by label name when the run has labels (so a folder
``Egyptian cat/`` counts as that ImageNet class), else taken in order. Accuracy per class and the
confusion matrix over the classes present (plus "other" for answers outside them) go to the
manifest (``deploy.eval_data``) and the report.
"""
import numpy as np

import datasets
import runfolder
from datasets.labels import labels_of
from deploy.core.classify import evaluate
from deploy.core.progress import printer
from runfolder.errors import OptionError

OTHER = "other"


def load_labelled(manifest, spec, name, options):
    """(images, labels as the model's class indices, the data set's class names, how they were matched,
    the model's class index of each of the data set's classes)."""
    options = dict(options or {})
    if name == "folder":
        options.setdefault("height", spec.height)
        options.setdefault("width", spec.width)
        options.setdefault("channels", spec.channels)
        options.setdefault("resize_method", spec.resize_method)   # the images read as deploy reads them
        options.setdefault("color_order", spec.color_order)
    data = datasets.load_dataset(name, **options)
    if tuple(data.images.shape[1:]) != (spec.height, spec.width, spec.channels):
        raise OptionError(f"the {name} images are {tuple(data.images.shape[1:])}, the model takes "
                         f"{(spec.height, spec.width, spec.channels)}; give options that match (-o size=...)")
    names = labels_of(manifest)
    if names and all(c in names for c in data.class_names):
        index = np.asarray([names.index(c) for c in data.class_names], dtype=np.int64)
        how = "matched to the run's labels by name"
    elif names and any(c in names for c in data.class_names):
        missing = [c for c in data.class_names if c not in names]
        raise OptionError(f"class folder(s) {', '.join(map(repr, missing[:5]))} are not among the run's labels; name "
                         "each folder as its label (see the label file), or remove it")
    else:
        index = np.arange(len(data.class_names), dtype=np.int64)
        how = "taken in order (class k = model output k): the run has no labels matching the folder names"
    return data.images, index[data.labels], list(data.class_names), how, index


def confusion_over_present(labels, predictions, present):
    """(row/column names, matrix) over the classes present in the data set, answers elsewhere as "other"."""
    position = {int(c): k for k, c in enumerate(present)}
    size = len(present) + 1
    matrix = np.zeros((size, size), dtype=np.int64)
    for truth, guess in zip(labels, predictions):
        matrix[position[int(truth)], position.get(int(guess), size - 1)] += 1
    return matrix[:-1]


def evaluate_on_data(run_dir, manifest, chain, name, options, limit=None, exit_threshold=None):
    """Runs the chain on the labelled data set; records and returns ``deploy.eval_data``."""
    from deploy.core.open import input_spec
    from deploy.core.exits import check_exit_threshold
    check_exit_threshold(manifest, exit_threshold)
    images, labels, class_names, how, present = load_labelled(manifest, input_spec(manifest, chain), name, options)
    count = min(len(labels), limit or len(labels))
    order = np.random.default_rng(0).permutation(len(labels))[:count] if count < len(labels) else np.arange(count)
    images, labels = images[np.sort(order)], labels[np.sort(order)]
    print(f"{name}: {count} images in {len(class_names)} classes, {how}")
    result = evaluate(chain, images, labels, printer(f"chain on {name}"), exit_threshold)
    matrix = confusion_over_present(labels, result["predictions"], present)
    per_class = [{"name": c, "samples": int(row.sum()), "accuracy": float(row[k] / row.sum()) if row.sum() else None}
                 for k, (c, row) in enumerate(zip(class_names, matrix))]
    section = {"dataset": name, "options": {k: v for k, v in (options or {}).items()}, "samples": count,
               "matched": how, "accuracy": result["accuracy"], "latency_ms": result["latency_ms"],
               "per_class": per_class, "confusion": {"classes": class_names + [OTHER], "matrix": matrix.tolist()}}
    manifest.setdefault("deploy", {})["eval_data"] = section
    runfolder.save(run_dir, manifest)
    print(f"accuracy on {count} images of {name}: {result['accuracy']:.4f}")
    for entry in per_class:
        shown = "-" if entry["accuracy"] is None else f"{entry['accuracy']:.4f}"
        print(f"  {entry['name']}: {shown} of {entry['samples']}")
    return section
