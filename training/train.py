"""Train a classifier into a run folder, with a checkpoint per epoch and resume.

Writes ``model.keras`` (best validation loss), ``checkpoints/epoch_NNN.keras``,
``history.csv``/``history.json``/``history.png``, the split indices and the
held-out test set (``data/``), and the ``dataset`` and ``training`` parts of the
manifest.
"""
import csv
import dataclasses
import glob
import json
import os
import pathlib
import re
import shutil
import sys

import numpy as np

import datasets
import runfolder
from training import backbones, batch_norm, batches, models, plots
from training.keras_setup import keras, tf
from training.config import DEFAULT_EPOCHS, TrainConfig, TrainingError, Transfer  # noqa: F401 (re-exported)


FEW_IMAGES = 10   # a class with fewer images gets a warning


def prepare_run_folder(run_dir, resume, overwrite):
    """Makes sure ``run_dir`` may be written: new, resumed, or explicitly overwritten."""
    run = pathlib.Path(run_dir)
    if run.exists() and any(run.iterdir()):
        if resume:
            return
        if not overwrite:
            unfinished = unfinished_training(run)
            if unfinished:
                raise TrainingError(f"{unfinished}: continue it with `python -m training --run {run} --resume`, "
                                    "or start over with --overwrite")
            raise TrainingError(f"run folder {run} already has files; pass --resume to continue its training "
                                "or --overwrite to start it again")
        if not any((run / name).exists() for name in (runfolder.manifest.MANIFEST_NAME, "checkpoints", "data")):
            raise TrainingError(f"{run} is not empty and is not a run folder; refusing to delete it")
        shutil.rmtree(run)
    elif resume:
        raise TrainingError(f"--resume given but {run} has nothing to resume; leave --resume out")
    run.mkdir(parents=True, exist_ok=True)


def unfinished_training(run_dir):
    """What a run folder's manifest says of a training that started and never finished, or None."""
    try:
        manifest = runfolder.load(run_dir)
    except runfolder.ManifestError:
        return None
    if (manifest.get("training") or {}).get("status") != "running":
        return None
    epoch, _ = latest_checkpoint(run_dir)
    saved = f"its last checkpoint is epoch {epoch}" if epoch else "no epoch finished"
    return (f"the previous training in {run_dir} did not finish (the process stopped or crashed while "
            f"training; {saved})")


def latest_checkpoint(run_dir):
    """(epoch, path) of the newest checkpoint, or (0, None)."""
    found = []
    for path in glob.glob(os.path.join(run_dir, "checkpoints", "epoch_*.keras")):
        match = re.search(r"epoch_(\d+)\.keras$", path)
        if match:
            found.append((int(match.group(1)), path))
    return max(found) if found else (0, None)


def _manifest_to_resume(run_dir):
    """The manifest of a run being resumed, or None when training never started there."""
    if not os.path.exists(os.path.join(run_dir, runfolder.manifest.MANIFEST_NAME)):
        return None
    manifest = runfolder.load(run_dir)
    runfolder.require(manifest, "dataset", run_dir, "training --resume")
    runfolder.require(manifest, "training", run_dir, "training --resume")
    return manifest


def _read_history(path):
    history = {}
    if os.path.exists(path):
        with open(path) as f:
            for row in csv.DictReader(f):
                for key, value in row.items():
                    if key != "epoch":
                        history.setdefault(key, []).append(float(value))
    return history


def _dataset_section(run_dir, data, splits, split_seed):
    data_dir = pathlib.Path(run_dir) / "data"
    data_dir.mkdir(exist_ok=True)
    datasets.save_splits(data_dir / "splits.npz", splits)
    test = splits["test"]
    np.savez_compressed(data_dir / "test_set.npz", images=data.images[test], labels=data.labels[test],
                        indices=test)
    return {
        "skipped": data.skipped[:1000], "skipped_count": len(data.skipped),
        "class_counts": np.bincount(data.labels, minlength=len(data.class_names)).tolist(),
        "name": data.name, "options": data.options, "split_seed": split_seed,
        "input_spec": data.input_spec.to_dict(), "class_names": list(data.class_names),
        "splits": runfolder.file_record(run_dir, data_dir / "splits.npz"),
        "test_set": runfolder.file_record(run_dir, data_dir / "test_set.npz"),
        "counts": {k: len(v) for k, v in splits.items()},
    }


def _describe_data(data):
    """One line of what was read (per class), one of what was skipped: not a warning per file."""
    counts = np.bincount(data.labels, minlength=len(data.class_names))
    shown = ", ".join(f"{name} {count}" for name, count in list(zip(data.class_names, counts))[:12])
    more = f", ... ({len(counts)} classes)" if len(counts) > 12 else ""
    print(f"data: {len(data.labels)} images of {data.images.shape[2]}x{data.images.shape[1]}x{data.images.shape[3]}"
          f" in {len(counts)} classes ({shown}{more})")
    few = [f"{name!r} ({count})" for name, count in zip(data.class_names, counts) if count < FEW_IMAGES]
    if few:
        print(f"WARNING: class{'es' if len(few) > 1 else ''} {', '.join(few)} ha{'ve' if len(few) > 1 else 's'} "
              f"fewer than {FEW_IMAGES} images: their accuracy will be unreliable; add images, or train with "
              "--class-weights balanced", file=sys.stderr)
    if data.skipped:
        print(data.skipped_summary())


def balanced_weights(labels, classes):
    """{class: weight} so every class adds the same to the loss: n / (classes * count of the class)."""
    counts = np.bincount(labels, minlength=classes).astype(np.float64)
    return {k: float(len(labels) / (classes * c)) if c else 0.0 for k, c in enumerate(counts)}


def _outcome(history, asked_epochs):
    """The best epoch by validation loss and whether early stopping ended the training."""
    losses = history.get("val_loss") or []
    best = int(np.argmin(losses)) + 1 if losses else None
    return {"best_epoch": best, "stopped_early": len(history.get("loss", [])) < asked_epochs}


def _report(section, accuracy, samples, classes, run_dir):
    """What a user acts on: the accuracy, a warning near chance, how training ended, the next command."""
    print(f"float accuracy on {samples} held-out test samples: {accuracy:.4f}")
    ended = (f"early stopping ended it after {section['epochs_run']} of {section['epochs_asked']} epochs"
             if section["stopped_early"] else f"all {section['epochs_run']} epochs ran")
    last = "the fine-tuning phase's" if (section.get("transfer") or {}).get("fine_tune_from_epoch") else "its"
    print(f"best epoch (lowest validation loss): {section['best_epoch']}; {ended}; the model keeps {last} best "
          "epoch's weights")
    chance = 1.0 / max(1, classes)
    if accuracy < chance + 0.5 * (1.0 - chance) * 0.2:
        print(f"WARNING: {accuracy:.1%} is near chance ({chance:.1%} for {classes} classes): the model has not "
              "learnt yet; train longer (--epochs), use more images, or start from --weights imagenet",
              file=sys.stderr)
    print(f"next: python -m quantize --run {run_dir}")


def _exit_entries(exits):
    """Manifest entries of the exit heads: name, boundary, Keras output name."""
    return [{"name": models.exit_output_name(b), "boundary": b, "output": models.exit_output_name(b)}
            for b in exits]


def _compile(model, learning_rate, exits, exit_weight):
    """Adam on sparse cross-entropy of logits; with exits, one loss per head (main head weight 1)."""
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    if not exits:
        model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss, metrics=["accuracy"])
        return
    names = [models.MAIN_OUTPUT] + [models.exit_output_name(b) for b in exits]
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss={n: loss for n in names},
                  loss_weights={n: 1.0 if n == models.MAIN_OUTPUT else exit_weight for n in names},
                  metrics={n: ["accuracy"] for n in names})


def _with_main_aliases(history):
    """With exits Keras prefixes the main head's metrics with its name; plain names are kept too."""
    for prefix in ("", "val_"):
        main = history.get(f"{prefix}{models.MAIN_OUTPUT}_accuracy")
        if main is not None and f"{prefix}accuracy" not in history:
            history[f"{prefix}accuracy"] = main
    return history


def train(run_dir, config=TrainConfig(), *, resume=False, overwrite=False, verbose=None):
    """Trains ``config`` (a ``TrainConfig``) into ``run_dir``; returns the manifest.

    For a backbone with weights and ``fine_tune_layers``, the head is trained on the frozen
    backbone for ``epochs``, then the top layers for ``fine_tune_epochs`` more at a tenth of the
    learning rate. ``resume`` continues from the last checkpoint with the config the run was
    first given (only ``epochs`` may be asked anew).

    Raises:
      TrainingError, datasets.DatasetError, models.ModelError: with what to change.
    """
    if verbose is None:  # a progress bar in a terminal, one line per epoch in logs
        verbose = 1 if sys.stdout.isatty() else 2
    config.check()
    manifest = _manifest_to_resume(run_dir) if resume else None
    if manifest is not None:
        config = config.resumed(manifest).check()
    if config.model is not None:
        models.check_model_name(config.model)  # before the run folder is touched
        if config.exits:
            models.check_exits(config.model, list(config.exits))
    data = datasets.load_dataset(config.dataset, **config.data_options())
    _describe_data(data)
    if config.model is None:
        name, why = models.choose_model(data.images.shape[1:])
        print(f"model: {name} (the default for {why}; --model to choose another)")
        models.check_exits(name, list(config.exits))
        config = dataclasses.replace(config, model=name)
    if not models.is_backbone(config.model) and not config.transfer.is_plain():
        raise TrainingError(f"--alpha, --weights and --fine-tune-* are for the backbones, not {config.model}")
    prepare_run_folder(run_dir, resume, overwrite)
    keras.utils.set_random_seed(config.seed)
    if manifest is not None:
        splits = datasets.load_splits(runfolder.verify_file(run_dir, manifest["dataset"]["splits"], "split file"))
    else:
        splits = datasets.make_splits(data, seed=config.seed)
        manifest = runfolder.load(run_dir, create=True)
        manifest["dataset"] = _dataset_section(run_dir, data, splits, config.seed)
        # Saved before fitting, so an interrupted run can be resumed with the same data and model.
        manifest["training"] = {"status": "running", **_asked_section(config)}
        runfolder.save(run_dir, manifest)
    model, phases = _fit(run_dir, config, data, splits, resume, verbose)
    return _finish(run_dir, manifest, config, model, data, splits, phases)


def _asked_section(config):
    """The manifest's record of what the run was asked for: what resume restores."""
    section = {"model": config.model, "epochs_asked": config.epochs_or_default(), "batch_size": config.batch_size,
               "learning_rate": config.learning_rate, "augment": list(config.augment),
               "class_weights": config.class_weights,
               "transfer": dataclasses.asdict(config.transfer) if models.is_backbone(config.model) else None}
    if config.exits:
        section.update(exits=_exit_entries(config.exits), exit_loss_weight=config.exit_weight)
    return section


def _batches_of(config, data, splits):
    """split(name, **options) -> batches of that split; uint8 stays uint8, inputs are made a batch at a time."""
    normalization = models.NORMALIZATION[config.model]

    def split(name, **options):
        return batches.batches(data.images, data.labels, splits[name], config.batch_size, normalization,
                               outputs=1 + len(config.exits), **options)
    return split


def _phases(config):
    """[(last epoch, backbone layers open, learning rate)]: the head, then fine-tuning when asked."""
    epochs, transfer = config.epochs_or_default(), config.transfer
    phases = [(epochs, 0, config.learning_rate)]
    if models.is_backbone(config.model) and transfer.weights and transfer.fine_tune_layers and \
            transfer.fine_tune_epochs:
        phases.append((epochs + transfer.fine_tune_epochs, transfer.fine_tune_layers, config.learning_rate / 10.0))
    return phases


def _fit(run_dir, config, data, splits, resume, verbose):
    """Builds or resumes the model and fits every phase not yet run; returns (model, phases)."""
    split = _batches_of(config, data, splits)
    train_batches = split("train", augment=config.augment, seed=config.seed)
    backbone = models.is_backbone(config.model)
    start_epoch, checkpoint = latest_checkpoint(run_dir) if resume else (0, None)
    if checkpoint:
        print(f"resuming from {checkpoint} (epoch {start_epoch})")
        model = keras.models.load_model(checkpoint)
    else:
        model = models.build_model(config.model, data.images.shape[1:], len(data.class_names), list(config.exits),
                                   **config.transfer.model_options() if backbone else {})
    ckpt_dir = pathlib.Path(run_dir) / "checkpoints"
    ckpt_dir.mkdir(exist_ok=True)
    history_csv = os.path.join(run_dir, "history.csv")
    statistics_batches = split("train", seed=config.seed + 1)   # not augmented: the images inference will see

    def callbacks(append):
        return [batch_norm.PreciseBatchNorm(statistics_batches),
                keras.callbacks.ModelCheckpoint(str(ckpt_dir / "epoch_{epoch:03d}.keras")),
                keras.callbacks.CSVLogger(history_csv, append=append),
                keras.callbacks.EarlyStopping(monitor="val_loss", patience=config.patience,
                                              restore_best_weights=True)]
    phases = _phases(config)
    for phase, (last, open_layers, rate) in enumerate(phases):
        first = 0 if phase == 0 else phases[phase - 1][0]
        if start_epoch >= last:
            continue
        if backbone and not config.transfer.weights:
            for layer in model.layers:   # random weights: nothing learnt to keep, the whole network trains
                layer.trainable = True
            print(f"training the whole {config.model} (random weights), epochs {first + 1}-{last}")
        elif backbone:
            opened = backbones.set_trainable(model, open_layers)
            print(f"{'fine-tuning:' if phase else 'training the head on the frozen backbone:'} "
                  f"{opened} backbone layers trainable, learning rate {rate:g}, epochs {first + 1}-{last}")
        if not (checkpoint and phase == 0 and not backbone):
            _compile(model, rate, config.exits, config.exit_weight)   # a resumed small model keeps its optimizer
        model.fit(train_batches, validation_data=split("val"), epochs=last, initial_epoch=max(start_epoch, first),
                  callbacks=callbacks(append=bool(checkpoint) or phase > 0), verbose=verbose,
                  class_weight=balanced_weights(data.labels[splits["train"]], len(data.class_names))
                  if config.class_weights else None)
    if start_epoch >= phases[-1][0]:
        print(f"already trained {start_epoch} epochs (asked for {phases[-1][0]}); nothing to do")
    return model, phases


def _finish(run_dir, manifest, config, model, data, splits, phases):
    """Saves the model, history, plot and test accuracy into the run folder and its manifest."""
    model_path = pathlib.Path(run_dir) / "model.keras"
    model.save(model_path)
    history = _with_main_aliases(_read_history(os.path.join(run_dir, "history.csv")))
    (pathlib.Path(run_dir) / "history.json").write_text(json.dumps(history, indent=1))
    epochs = config.epochs_or_default()
    fine_tune_from = epochs + 1 if len(phases) > 1 else None
    plots.plot_history(history, pathlib.Path(run_dir) / "history.png", f"{config.model} on {config.dataset}",
                       fine_tune_from)
    scores = model.evaluate(_batches_of(config, data, splits)("test"), verbose=0, return_dict=True)
    test_accuracy = scores[f"{models.MAIN_OUTPUT}_accuracy" if config.exits else "accuracy"]
    normalization = models.NORMALIZATION[config.model]
    asked = _asked_section(config)
    manifest["training"] = {
        **asked, "status": "done", "keras_flavour": f"tf_keras {keras.__version__}",
        "tensorflow": tf.__version__, "keras_model": runfolder.file_record(run_dir, model_path),
        "epochs_run": len(history.get("loss", [])), "boundaries": models.BOUNDARIES.get(config.model, []),
        "history": "history.json", "plot": "history.png",
        "input_normalization": {"mean": normalization[0], "std": normalization[1]},
        **_outcome(history, phases[-1][0]),
        "transfer": dict(asked["transfer"], fine_tune_from_epoch=fine_tune_from) if asked["transfer"] else None,
    }
    if config.exits:
        manifest["training"]["exits"] = [
            {**entry, "test_accuracy": float(scores[f"{entry['output']}_accuracy"]),
             "val_accuracy": history.get(f"val_{entry['output']}_accuracy", [None])[-1]}
            for entry in _exit_entries(config.exits)]
    runfolder.drop_after(manifest, "training")   # a new model makes later steps' results stale
    manifest["accuracy"] = {"float": float(test_accuracy)}
    runfolder.save(run_dir, manifest)
    _report(manifest["training"], test_accuracy, len(data.labels[splits["test"]]), len(data.class_names), run_dir)
    for entry in manifest["training"].get("exits", []):
        print(f"  exit at {entry['boundary']} alone: {entry['test_accuracy']:.4f}")
    return manifest
