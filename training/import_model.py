"""Bring a Keras classifier trained elsewhere into a run folder, so that quantize, compile and deploy
work on it as on a model trained here.

    python -m training import my_model.keras --run runs/mine --dataset folder -o path=photos --input-range -1,1

The data set is split as training splits it: its train split calibrates the int8 model, its test
split measures it. The model's input shape sets the image size; its input range must be said
(``--input-range``, ``--mean/--std``) unless the model scales pixels itself (a ``Rescaling`` layer
first: it takes 0..255); otherwise [0, 1] is assumed, and said. A label file (``--labels``) names the
model's classes, and the data set's class folders are matched to them by name.
"""
import dataclasses
import pathlib
import sys

import numpy as np

import datasets
import runfolder
from datasets.preprocess import PIXELS_0_1, PIXELS_0_255, to_model_input
from training.keras_setup import keras, tf
from training.train import (
    TrainingError,
    _dataset_section,
    _describe_data,
    prepare_run_folder,
)

KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")


def load_keras_model(path):
    """The tf_keras model at ``path`` (.keras, .h5, or a SavedModel folder); TrainingError saying what to do."""
    path = pathlib.Path(path)
    if path.suffix == ".tflite":
        raise TrainingError(f"{path} is a .tflite file: a full-int8 one goes in with `python -m quantize split {path} "
                            "--out RUN [--labels FILE]` (then `python -m deploy --eval --run RUN --dataset ...` "
                            "measures it); a float .tflite cannot be quantized here, give the Keras model it came from")
    if not path.exists():
        raise TrainingError(f"model {path} does not exist; give a .keras or .h5 file or a SavedModel folder")
    if path.is_file() and path.suffix not in KERAS_SUFFIXES:
        raise TrainingError(f"{path}: not a Keras model file ({', '.join(KERAS_SUFFIXES)}) or a SavedModel folder")
    try:
        return keras.models.load_model(path, compile=False)
    except Exception as exc:   # Keras raises many kinds on foreign or damaged files
        raise TrainingError(f"{path} cannot be read as a tf_keras (Keras 2) model: {type(exc).__name__}: "
                            f"{str(exc)[:300]}. A model saved by Keras 3 must be saved again with tf_keras, or "
                            "converted to a full-int8 .tflite and brought in with `python -m quantize split`") from exc


def input_normalization(model, given=None):
    """((mean, std), where it comes from): as given, 0..255 when the model starts by rescaling, else [0, 1]."""
    if given:
        return given
    first = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)][:1]
    if first and isinstance(first[0], keras.layers.Rescaling):
        return PIXELS_0_255, "the model's first layer rescales pixels 0..255 itself"
    return PIXELS_0_1, "assumed (not said): pixels / 255 in [0, 1]; give --input-range -1,1 or 0,255 if not"


def _matched(data, names):
    """The data set with labels that index ``names`` (the model's classes), matched by class name."""
    if names is None:
        return data
    missing = [name for name in data.class_names if name not in names]
    if missing:
        raise TrainingError(f"class folder(s) {', '.join(map(repr, missing[:5]))} are not in the label file; name "
                            "each class folder as its label, or leave --labels out to take the folders in order")
    index = np.asarray([names.index(name) for name in data.class_names], dtype=np.int64)
    return dataclasses.replace(data, labels=index[data.labels], class_names=list(names))


def import_keras(run_dir, model_path, dataset, dataset_options=None, contract=None, labels=None,
                 overwrite=False, seed=0):
    """Writes a run folder for the Keras model at ``model_path``; returns its manifest.

    Args:
      contract: the input contract as given ({"normalization", "source", "resize_method", "color_order"},
        each optional; see ``datasets.contract_options``); the normalization not given is found by
        ``input_normalization``.
      labels: the manifest's labels section ({"source", "names"}) or None: the data set's class names
        name the classes.
    """
    contract = dict(contract or {})
    normalization = (((contract["normalization"]["mean"], contract["normalization"]["std"]), contract["source"])
                     if "normalization" in contract else None)
    shaping = {k: contract[k] for k in ("resize_method", "color_order") if k in contract}
    model = load_keras_model(model_path)
    if len(model.inputs) != 1 or len(model.input_shape) != 4 or model.input_shape[-1] not in (1, 3):
        raise TrainingError(f"the model takes {model.input_shape}; an image classifier takes (None, H, W, 1 or 3)")
    height, width, channels = (int(n) for n in model.input_shape[1:])
    classes = int(model.output_shape[0][-1] if isinstance(model.output_shape, list) else model.output_shape[-1])
    options = dict(dataset_options or {})
    if dataset == "folder":
        options.setdefault("height", height)
        options.setdefault("width", width)
        options.setdefault("channels", channels)
        options.update(shaping)
    elif shaping.get("color_order", "RGB") != "RGB":
        raise TrainingError(f"--color-order {shaping['color_order']} needs images read for it: give the data set "
                            "as --dataset folder -o path=...")
    data = datasets.load_dataset(dataset, **options)
    if tuple(data.images.shape[1:]) != (height, width, channels):
        raise TrainingError(f"the data set's images are {data.images.shape[1:]}, the model takes "
                            f"{(height, width, channels)};"
                            " give the data set options that make them match (e.g. -o size=, -o channels=)")
    data = _matched(data, labels["names"] if labels else None)
    if len(data.class_names) > classes:
        raise TrainingError(f"the data set has {len(data.class_names)} classes, the model {classes} outputs")
    (mean, std), source = input_normalization(model, normalization)
    _describe_data(data)
    prepare_run_folder(run_dir, False, overwrite)
    splits = datasets.make_splits(data, seed=seed)
    manifest = runfolder.load(run_dir, create=True)
    manifest["dataset"] = _dataset_section(run_dir, data, splits, seed)
    model_file = pathlib.Path(run_dir) / "model.keras"
    model.save(model_file)
    test = splits["test"]
    scores = model.predict(to_model_input(data.images[test], (mean, std)), batch_size=64, verbose=0)
    scores = scores[0] if isinstance(scores, list) else scores
    accuracy = float(np.mean(np.argmax(scores, axis=-1) == data.labels[test]))
    manifest["training"] = {
        "model": "imported", "status": "done", "source": str(model_path), "keras_model":
        runfolder.file_record(run_dir, model_file), "keras_flavour": f"tf_keras {keras.__version__}",
        "tensorflow": tf.__version__, "epochs_run": 0, "boundaries": [], "learning_rate": 1e-4,
        "input_normalization": {"mean": float(mean), "std": float(std)}, "input_normalization_source": source,
    }
    if labels:
        manifest["labels"] = labels
    if shaping:
        manifest["input"] = shaping
    manifest["accuracy"] = {"float": accuracy}
    runfolder.save(run_dir, manifest)
    print(f"imported {model_path} ({model.name}: {model.count_params():,} parameters, "
          f"input {height}x{width}x{channels},"
          f" {classes} classes)")
    print(f"input: (pixels - {mean:g}) / {std:g}: {source}")
    print(f"float accuracy on {len(test)} held-out test samples of {dataset}: {accuracy:.4f}")
    if "assumed" in source:
        print("WARNING: the input range was assumed; a wrong one shows as low accuracy above", file=sys.stderr)
    print(f"next: python -m quantize --run {run_dir}")
    return manifest
