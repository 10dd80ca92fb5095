"""Everything the run report shows, gathered from the run folder: manifest, history, predictions.

Each part that cannot be read becomes a note (what is missing and which command
writes it) instead of an error, so a run stopped half-way still gets a report.
"""
import json

import numpy as np

import runfolder
from datasets.labels import labels_of

# Which command writes each part, for the notes shown where a part is missing.
COMMANDS = {
    "training": "python -m training --run {run}",
    "quantize": "python -m quantize --run {run}",
    "compile": "python -m compile --run {run}",
    "eval": "python -m deploy --run {run} --eval",
    "bench": "python -m deploy bench --run {run}",
    "verify": "python -m deploy verify --run {run}",
    "exits": "python -m deploy exits --run {run}",
    "report": "python -m deploy report --run {run}",
}


def command(step, run_dir):
    """The command line that writes ``step``'s part of the run folder."""
    return COMMANDS[step].format(run=run_dir)


def load_history(run_dir, manifest):
    """(per-epoch metrics {name: [values]}, note or None) from training's history file."""
    training = manifest.get("training") or {}
    record = training.get("history")
    if not record:
        return None, f"no training history in this run; `{command('training', run_dir)}` writes it"
    path = runfolder.resolve(run_dir, record)
    try:
        history = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        return None, f"training history {path} cannot be read ({exc}); re-run `{command('training', run_dir)}`"
    if isinstance(history, dict) and isinstance(history.get("history"), dict):
        history = history["history"]
    metrics = {k: [float(v) for v in vs] for k, vs in (history or {}).items()
               if isinstance(vs, list) and vs and all(isinstance(v, (int, float)) for v in vs)}
    if not metrics:
        return None, f"training history {path} holds no per-epoch metrics"
    return metrics, None


def confusion_matrix(labels, predicted, classes):
    """Counts [true class, predicted class] as a (classes, classes) int array."""
    matrix = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(labels, np.int64), np.asarray(predicted, np.int64)), 1)
    return matrix


def _recorded_predictions(run_dir, manifest, notes):
    """{name: array} from quantization.predictions (labels, float, ptq, qat), or {} with a note."""
    record = (manifest.get("quantization") or {}).get("predictions")
    if not record:
        notes.append("float / PTQ / QAT predictions are not recorded in this run (quantization.predictions, "
                      f"eval/predictions.npz); a quantize run that records them: `{command('quantize', run_dir)}`")
        return {}
    try:
        path = runfolder.verify_file(run_dir, record, "predictions file")
        with np.load(path) as data:
            return {name: np.asarray(data[name]) for name in data.files}
    except (runfolder.ManifestError, OSError, ValueError, KeyError) as exc:
        notes.append(f"recorded predictions cannot be read: {exc}")
        return {}


def load_test_split(run_dir, manifest):
    """((images, labels) of the held-out test split, None) or (None, why not)."""
    from deploy.core.open import load_test_set
    try:
        return load_test_set(run_dir, manifest), None
    except (runfolder.ManifestError, OSError, KeyError, ValueError) as exc:
        return None, str(exc)


def _evaluated_predictions(run_dir, manifest, test_split, limit, notes):
    """{"labels", "int8", "chain"} measured now on the held-out test split with the CPU interpreter."""
    from deploy.core.chain import ChainError
    from deploy.core.classify import evaluate, whole_model_chain
    from deploy.core.open import open_chain
    from deploy.core.runtime import RuntimeMissing, load_runtime
    from deploy.core.stages import StageError
    test_split, why = test_split
    if test_split is None:
        notes.append(f"int8 and chain predictions not computed: {why}")
        return {}
    images, labels = test_split
    if limit:
        images, labels = images[:limit], labels[:limit]
    found = {"labels": np.asarray(labels)}
    quantization = manifest.get("quantization") or {}
    try:
        runtime = load_runtime()
        found["measured_with"] = f"{runtime.name} {runtime.version}"
        if quantization.get("int8_model"):
            path = runfolder.verify_file(run_dir, quantization["int8_model"], "int8 model")
            found["int8"] = evaluate(whole_model_chain(path), images, labels)["predictions"]
        if manifest.get("stages"):
            _, chain = open_chain(run_dir, "cpu")
            found["chain"] = evaluate(chain, images, labels)["predictions"]
    except (runfolder.ManifestError, ChainError, StageError, RuntimeMissing, ValueError) as exc:
        notes.append(f"int8 / chain predictions not computed: {exc}")
        return found
    if "int8" not in found and "chain" not in found:
        notes.append(f"no int8 model or stages to evaluate; `{command('quantize', run_dir)}` makes them")
    return found


def agreement(predictions, pairs=(("float", "ptq"), ("float", "qat"), ("float", "int8"), ("int8", "chain"))):
    """[(a, b, samples, share of samples where a and b predict the same class)] for pairs measured on the
    same labels (so float vs int8 shows what quantization changed, int8 vs chain what the split changed)."""
    rows = []
    for a, b in pairs:
        if a in predictions and b in predictions:
            (labels_a, pred_a), (labels_b, pred_b) = predictions[a], predictions[b]
            if len(labels_a) == len(labels_b) and np.array_equal(labels_a, labels_b):
                rows.append((a, b, len(pred_a), float(np.mean(np.asarray(pred_a) == np.asarray(pred_b)))))
    return rows


def gather_predictions(run_dir, manifest, test_split, evaluate=True, limit=None):
    """({model name: (labels, predictions)}, notes on missing parts, facts) for the confusion matrices.

    Float / PTQ / QAT come from the recorded predictions file; int8 (the whole
    model) and the stage chain are run now on the CPU unless ``evaluate`` is off.

    Args:
      test_split: ``load_test_split``'s result.
    """
    notes, info, found = [], [], {}
    recorded = _recorded_predictions(run_dir, manifest, notes)
    if "labels" in recorded:
        for name in ("float", "ptq", "qat"):
            if name in recorded:
                found[name] = (recorded["labels"], recorded[name])
    if evaluate:
        measured = _evaluated_predictions(run_dir, manifest, test_split, limit, notes)
        for name in ("int8", "chain"):
            if name in measured:
                found[name] = (measured["labels"], measured[name])
        if "int8" in measured or "chain" in measured:
            info.append(f"int8 and chain predictions measured now with {measured['measured_with']} "
                         "on the CPU (runtimes differ by a few int8 steps, so this may differ slightly "
                         "from the accuracy recorded by quantize)")
    else:
        notes.append("int8 and chain predictions were not computed (--no-eval); "
                      f"drop --no-eval: `{command('report', run_dir)}`")
    return found, notes, info


def gather(run_dir, evaluate=True, limit=None):
    """The data of the report: manifest, history, confusion matrices and their notes."""
    manifest = runfolder.load(run_dir)
    history, history_note = load_history(run_dir, manifest)
    classes = len(labels_of(manifest) or [])
    test_split = load_test_split(run_dir, manifest) if manifest.get("dataset") else (None, "no data set")
    predictions, prediction_notes, prediction_info = gather_predictions(run_dir, manifest, test_split, evaluate,
                                                                        limit)
    if predictions:
        seen = 1 + max(int(max(np.max(labels), np.max(pred))) for labels, pred in predictions.values())
        classes = max(classes, seen)
    confusion = {name: confusion_matrix(labels, pred, classes) for name, (labels, pred) in predictions.items()}
    return {
        "run_dir": str(run_dir), "manifest": manifest, "history": history, "history_note": history_note,
        "predictions": predictions, "confusion": confusion, "confusion_notes": prediction_notes,
        "confusion_info": prediction_info, "test_split": test_split[0],
    }
