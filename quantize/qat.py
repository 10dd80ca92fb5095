"""Quantization-aware training: fine-tune a fake-quantized copy of the model, then convert to full int8.

When post-training quantization loses too much accuracy, training a few
epochs with tensorflow-model-optimization's fake quantization lets the
weights adapt to int8 rounding. ``tfmot.quantization.keras.quantize_model``
folds each Conv2D+BatchNormalization(+ReLU) into one quantized convolution,
so the converted graph has the same ops as the PTQ one (BN folded, ReLU
fused); ``unfolded`` checks that, and the QAT model is kept only if it
holds. The TFLite conversion is quantize.ptq's, so the I/O type and the op
set (TFLITE_BUILTINS_INT8) are the same. ``choose_int8`` runs after PTQ:
QAT when asked or past the threshold, then the int8 model more accurate on
the validation split is kept, with both recorded.
"""
import collections
import dataclasses
import pathlib
import shutil
import sys

import numpy as np

import runfolder
from datasets import to_model_input
from datasets.preprocess import PIXELS_0_1, normalization_of
from deploy.core.classify import evaluate, whole_model_chain
from deploy.core.progress import printer
from tflitegraph import schema as fb
from tflitegraph.graph import read_graph
from quantize.ptq import QuantizeError, convert_int8
from quantize.stages import check_full_int8
from training.keras_setup import keras


def _tfmot():
    try:
        import tensorflow_model_optimization as tfmot
    except ImportError as exc:
        raise QuantizeError("quantization-aware training needs tensorflow-model-optimization; install it "
                            "with `pip install tensorflow-model-optimization` (or leave out --qat and pass "
                            "--no-auto-qat)") from exc
    return tfmot


def quantize_aware_copy(model):
    """A fake-quantized copy of a tf_keras functional model, starting from its trained weights."""
    tfmot = _tfmot()
    try:
        return tfmot.quantization.keras.quantize_model(model)
    except (ValueError, RuntimeError) as exc:
        raise QuantizeError(f"tensorflow-model-optimization cannot make a quantization-aware copy of "
                            f"'{model.name}': {exc}. Annotate the layers it supports with "
                            "tfmot.quantization.keras.quantize_annotate_layer, or use PTQ (--no-auto-qat)"
                            ) from exc


def ends_in_softmax(model):
    """True when the model's (main) output is a softmax's: an imported model may end in one, ours end in logits."""
    layer = model.get_layer(model.output_names[0]) if model.output_names else model.layers[-1]
    return isinstance(layer, keras.layers.Softmax) or \
        getattr(layer, "activation", None) in (keras.activations.softmax, getattr(keras.activations, "softmax", None))


def _compile(qmodel, learning_rate, exit_weight, from_logits=True):
    """Adam on sparse cross-entropy (of logits, as in training, unless the model ends in a softmax); exit
    heads (extra outputs) weighted."""
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits)
    outputs = len(qmodel.outputs)
    qmodel.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=[loss] * outputs,
                   loss_weights=[1.0] + [exit_weight] * (outputs - 1),
                   metrics=[["accuracy"]] + [[]] * (outputs - 1))


def check_epochs(epochs):
    """Raises QuantizeError for an epoch count QAT cannot run with (checked before any work)."""
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise QuantizeError(f"--qat-epochs must be at least 1, got {epochs}")


@dataclasses.dataclass(frozen=True)
class FineTune:
    """How the quantization-aware copy is trained."""
    epochs: int = 3
    learning_rate: float = 1e-4
    batch_size: int = 64
    exit_weight: float = 0.3     # loss weight of each early-exit head
    seed: int = 0
    verbose: int = 2


@dataclasses.dataclass(frozen=True)
class QatPolicy:
    """When QAT runs: ``asked`` (--qat), or ``auto`` when PTQ lost more than ``threshold`` points."""
    asked: bool = False
    auto: bool = True
    threshold: float = 0.5
    epochs: int = 3


@dataclasses.dataclass(frozen=True)
class RunData:
    """What the PTQ step has that QAT needs: the float model, its data and splits, the calibration set,
    the test set, the I/O type and ``finish`` (bytes -> (bytes, op-version rewrites), PTQ's post-processing)."""
    model: object
    data: object
    splits: dict
    representative: object
    io_type: str
    finish: object
    images: np.ndarray
    labels: np.ndarray


def fine_tune(qmodel, train, val, settings=FineTune(), from_logits=True):
    """Trains the quantization-aware model; keeps the weights of the epoch with the best val_loss.

    Args:
      train, val: (float inputs, integer labels) of the run's training and validation splits.
    Returns:
      The history: {metric: [value per epoch]} with plain floats, plus "best_epoch" (1-based).
    """
    epochs = settings.epochs
    check_epochs(epochs)
    keras.utils.set_random_seed(settings.seed)
    _compile(qmodel, settings.learning_rate, settings.exit_weight, from_logits)
    outputs = len(qmodel.outputs)

    def labels(y):
        return y if outputs == 1 else [y] * outputs

    best = keras.callbacks.EarlyStopping(monitor="val_loss", patience=epochs, restore_best_weights=True)
    fit = qmodel.fit(train[0], labels(train[1]), validation_data=(val[0], labels(val[1])), epochs=epochs,
                     batch_size=settings.batch_size, callbacks=[best], verbose=settings.verbose)
    history = {key: [float(v) for v in values] for key, values in fit.history.items()}
    history["best_epoch"] = int(best.best_epoch) + 1
    return history


def convert_qat_int8(model, train, val, representative, io_type="uint8", settings=FineTune()):
    """Fine-tunes a quantization-aware copy of ``model`` and converts it to full-int8 tflite bytes.

    Returns:
      (bytes, history) where history is fine_tune's.
    Raises:
      QuantizeError: tensorflow-model-optimization is missing or cannot wrap the model.
    """
    qmodel = quantize_aware_copy(model)
    print(f"quantization-aware training: {settings.epochs} epoch(s) on {len(train[1])} training samples, "
          f"learning rate {settings.learning_rate:g}")
    history = fine_tune(qmodel, train, val, settings, from_logits=not ends_in_softmax(model))
    print(f"quantization-aware training: keeping epoch {history['best_epoch']} (lowest val_loss)")
    return convert_int8(qmodel, representative, io_type), history


def keras_tensor_names(int8_bytes, layer_names):
    """The tflite bytes with tfmot's ``quant_`` prefix taken off layer names inside tensor names, so
    ``--cut-after after_block1`` and the manifest's boundaries name the same tensors as in PTQ."""
    model = fb.read_model(int8_bytes)
    layers = set(layer_names)

    def plain(part):
        return part[len("quant_"):] if part.startswith("quant_") and part[len("quant_"):] in layers else part

    for tensor in model.subgraphs[0].tensors:
        name = tensor.name.decode() if isinstance(tensor.name, bytes) else str(tensor.name or "")
        renamed = ";".join("/".join(plain(part) for part in piece.split("/")) for piece in name.split(";"))
        tensor.name = renamed.encode()
    return fb.model_to_bytes(model)


def op_counts(model):
    """{op name: count} of a tflite model (path, bytes or ModelT)."""
    return dict(collections.Counter(op.name for op in read_graph(model).ops))


def extra_ops(reference, candidate):
    """{op name: how many more} the candidate graph has than the reference (e.g. an unfolded MUL/ADD
    of batch norm, or a standalone RELU where PTQ fused it into the convolution)."""
    ref, cand = collections.Counter(op_counts(reference)), collections.Counter(op_counts(candidate))
    return dict(cand - ref)


# Ops that, beyond the PTQ graph's, mean a batch norm was not folded or an activation not fused. Other
# extra ops (a requantizing QUANTIZE after an exit head's pooling) are recorded but allowed.
UNFOLDED_OPS = {"MUL", "ADD", "SUB", "RELU", "RELU6", "RELU_N1_TO_1", "DEQUANTIZE"}


def fused_activations(model):
    """How many ops carry a fused activation (e.g. CONV_2D with RELU) in a tflite model."""
    tree = model if hasattr(model, "subgraphs") else fb.read_model(model)
    none = fb.schema.ActivationFunctionType.NONE
    return sum(1 for op in tree.subgraphs[0].operators
               if getattr(op.builtinOptions, "fusedActivationFunction", none) != none)


def unfolded(reference, candidate):
    """{op or "unfused activations": how many more} showing batch norm or activation fusion lost in
    ``candidate`` against ``reference`` (both tflite paths or bytes); empty when none."""
    found = {op: n for op, n in extra_ops(reference, candidate).items() if op in UNFOLDED_OPS}
    missing = fused_activations(reference) - fused_activations(candidate)
    if missing > 0:
        found["unfused activations"] = missing
    return found


def predictions_of(model, images, normalization=PIXELS_0_1, batch_size=256):
    """Predicted class per sample of a float Keras model (the main output when it has exit heads)."""
    logits = model.predict(to_model_input(images, normalization), batch_size=batch_size, verbose=0)
    if isinstance(logits, (list, tuple)):
        logits = logits[0]
    return np.argmax(logits, axis=-1).astype(np.int64)


def wanted(asked, auto, drop, threshold):
    """Whether to run QAT: asked for, or PTQ lost more than the threshold and auto QAT is on."""
    return bool(asked or (auto and drop > threshold))


def _int8_accuracy(path, images, labels, label, normalization):
    return evaluate(whole_model_chain(path, normalization=normalization), images, labels, printer(label))


def qat_candidate(run_dir, run, settings, normalization=PIXELS_0_1):
    """Fine-tunes and converts the QAT model of ``run`` (a RunData); writes ``model_int8_qat.tflite``
    (after ``run.finish``: the same exit-head ordering and op-version lowering as PTQ).
    Returns (path, history, rewrites)."""
    split = {k: (to_model_input(run.data.images[run.splits[k]], normalization), run.data.labels[run.splits[k]])
             for k in ("train", "val")}
    int8_bytes, history = convert_qat_int8(run.model, split["train"], split["val"], run.representative,
                                           run.io_type, settings)
    int8_bytes = keras_tensor_names(int8_bytes, [layer.name for layer in run.model.layers])
    int8_bytes, rewrites = run.finish(int8_bytes)
    check_full_int8(read_graph(int8_bytes))
    path = pathlib.Path(run_dir) / "model_int8_qat.tflite"
    path.write_bytes(int8_bytes)
    return path, history, rewrites


def choose(ptq_val, qat_val, unfolded_ops):
    """("ptq" | "qat", why): the int8 model more accurate on the VALIDATION split (the test split
    only reports, so choosing does not tune on it); PTQ on a tie or when QAT lost folding/fusion."""
    if unfolded_ops:
        return "ptq", (f"the QAT graph lost batch-norm folding or activation fusion ({unfolded_ops} more "
                       "than PTQ)")
    if qat_val > ptq_val:
        return "qat", f"QAT is more accurate on the validation split ({qat_val:.4f} vs PTQ {ptq_val:.4f})"
    return "ptq", f"QAT is not more accurate on the validation split ({qat_val:.4f} vs PTQ {ptq_val:.4f})"


def write_predictions(run_dir, labels, **predictions):
    """``eval/predictions.npz``: true labels and the predicted class per test sample of each model."""
    path = pathlib.Path(run_dir) / "eval" / "predictions.npz"
    path.parent.mkdir(exist_ok=True)
    np.savez_compressed(path, labels=np.asarray(labels, np.int64),
                        **{k: np.asarray(v, np.int64) for k, v in predictions.items()})
    return runfolder.file_record(run_dir, path)


def choose_int8(run_dir, int8_path, ptq_result, float_accuracy, run, policy=QatPolicy(), training=None):
    """After PTQ: runs QAT when ``policy`` says (asked, or PTQ lost more than its threshold with auto on),
    keeps the better int8 model at ``int8_path`` and writes per-sample test predictions.

    Args:
      ptq_result: deploy.core.classify.evaluate's result for the PTQ model (at int8_path) on the test split.
      run: the RunData of the PTQ step.
      training: the manifest's training section (learning rate, exit loss weight).
    Returns:
      (evaluate result of the chosen model on the test split, manifest fields: method, ptq, qat, chosen,
      reason, predictions, op_version_rewrites when QAT is chosen, and "accuracy": {ptq, qat}).
    """
    training = training or {}
    normalization = normalization_of({"training": training})
    model, data, splits, images, labels = run.model, run.data, run.splits, run.images, run.labels
    asked, auto, threshold, epochs = policy.asked, policy.auto, policy.threshold, policy.epochs

    def drop_of(result):
        return 100.0 * (float_accuracy - result["accuracy"])

    ptq_drop = drop_of(ptq_result)
    fields = {"method": "ptq", "ptq": {"accuracy": ptq_result["accuracy"], "drop_points": ptq_drop},
              "qat": None, "auto_qat": bool(auto)}
    predictions = {"float": predictions_of(model, images, normalization), "ptq": ptq_result["predictions"]}
    for stale in ("model_int8_ptq.tflite", "model_int8_qat.tflite"):
        (int8_path.parent / stale).unlink(missing_ok=True)
    if not wanted(asked, auto, ptq_drop, threshold):
        fields["chosen"] = "ptq"
        fields["reason"] = ("QAT not asked for and auto QAT is off" if not auto else
                            f"PTQ drop {ptq_drop:.2f} points is within the threshold {threshold}")
        result = ptq_result
    else:
        why = "asked for (--qat)" if asked else f"PTQ lost {ptq_drop:.2f} points (threshold {threshold})"
        print(f"quantization-aware training: {why}")
        ptq_path = int8_path.parent / "model_int8_ptq.tflite"
        shutil.copyfile(int8_path, ptq_path)
        learning_rate = 0.1 * float(training.get("learning_rate", 1e-3))
        try:
            settings = FineTune(epochs=epochs, learning_rate=learning_rate,
                                exit_weight=float(training.get("exit_loss_weight", 0.3)))
            qat_path, history, rewrites = qat_candidate(run_dir, run, settings, normalization=normalization)
        except QuantizeError as exc:
            if asked:
                raise
            print(f"WARNING: automatic quantization-aware training cannot run, keeping PTQ: {exc}",
                  file=sys.stderr)
            ptq_path.unlink()
            fields.update(chosen="ptq", reason=f"automatic QAT could not run: {exc}")
            return _with_predictions(run_dir, labels, predictions, fields, ptq_result)
        qat_result = _int8_accuracy(qat_path, images, labels, "QAT int8 accuracy", normalization)
        val_images, val_labels = data.images[splits["val"]], data.labels[splits["val"]]
        ptq_val = _int8_accuracy(ptq_path, val_images, val_labels, "PTQ int8 validation accuracy",
                                 normalization)["accuracy"]
        qat_val = _int8_accuracy(qat_path, val_images, val_labels, "QAT int8 validation accuracy",
                                 normalization)["accuracy"]
        lost = unfolded(ptq_path, qat_path)
        chosen, reason = choose(ptq_val, qat_val, lost)
        fields["ptq"].update(val_accuracy=ptq_val, model=runfolder.file_record(run_dir, ptq_path))
        fields["qat"] = {"accuracy": qat_result["accuracy"], "drop_points": drop_of(qat_result),
                         "val_accuracy": qat_val, "epochs": epochs, "learning_rate": learning_rate,
                         "history": history, "why": why, "extra_ops": extra_ops(ptq_path, qat_path),
                         "unfolded": lost,
                         "model": runfolder.file_record(run_dir, qat_path)}
        fields.update(method=chosen, chosen=chosen, reason=reason)
        predictions["qat"] = qat_result["predictions"]
        result = ptq_result
        if chosen == "qat":
            shutil.copyfile(qat_path, int8_path)
            fields["op_version_rewrites"] = rewrites
            result = qat_result
        print(f"int8 accuracy on {len(labels)} test samples: PTQ {ptq_result['accuracy']:.4f} "
              f"({ptq_drop:+.2f} points), QAT {qat_result['accuracy']:.4f} ({drop_of(qat_result):+.2f} "
              f"points); keeping {chosen.upper()}: {reason}")
    return _with_predictions(run_dir, labels, predictions, fields, result)


def _with_predictions(run_dir, labels, predictions, fields, result):
    """(result, fields) with the predictions file written and the accuracy summary added."""
    fields["predictions"] = write_predictions(run_dir, labels, **predictions)
    fields["accuracy"] = {"ptq": fields["ptq"]["accuracy"],
                          "qat": fields["qat"]["accuracy"] if fields["qat"] else None}
    return result, fields
