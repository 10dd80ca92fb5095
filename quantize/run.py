"""``python -m quantize --run DIR``: PTQ of the trained model, accuracy check, then split."""
import pathlib
import sys

import datasets
import runfolder
from datasets.preprocess import normalization_of
from deploy.core.classify import evaluate, whole_model_chain
from deploy.core.open import load_test_set
from deploy.core.classify import output_accuracies
from deploy.core.progress import printer
from quantize.edgetpu_check import describe_changes, lower_op_versions
from quantize.exit_heads import prepare_exit_model
from quantize.plan_options import PlanOptions
from tflitegraph.graph import read_graph
from quantize.ptq import convert_int8
from quantize.qat import QatPolicy, RunData, check_epochs, choose_int8
from quantize.stages import output_contract, write_stages
from training.keras_setup import keras


def quantize_run(run_dir, options=PlanOptions(), io_type="uint8", samples=300, qat=QatPolicy(),
                 keep_op_versions=False):
    """Quantizes the run's Keras model to full int8, evaluates it, and splits it into stages.

    Args:
      options: how to cut (quantize.plan_options.PlanOptions).
      samples: representative samples for calibration.
      qat: when quantization-aware training runs (always, or when PTQ loses more than
        ``qat.threshold`` points, which also warns loudly); the int8 model more accurate on the
        validation split is kept (quantize.qat).
      keep_op_versions: write op versions as converted, even those compiler 16.0 refuses.
    Returns:
      The updated manifest.
    """
    check_epochs(qat.epochs)
    threshold = qat.threshold
    manifest = runfolder.load(run_dir)
    section = runfolder.require(manifest, "dataset", run_dir, "quantize")
    training = runfolder.require(manifest, "training", run_dir, "quantize")
    if "keras_model" not in training:
        raise runfolder.StepOrderError(
            f"the training in {run_dir} did not finish (it stopped or crashed); run `python -m training --run "
            f"{run_dir} --resume` to continue it, or `python -m training --run {run_dir} --overwrite ...` to start "
            "over, then quantize")
    model_path = runfolder.verify_file(run_dir, training["keras_model"], "Keras model")
    splits_path = runfolder.verify_file(run_dir, section["splits"], "split file")
    print(f"loading {model_path} and the {section['name']} training split for calibration")
    model = keras.models.load_model(model_path)
    data = datasets.load_dataset(section["name"], **section["options"])
    if data.skipped:
        print(data.skipped_summary())
    splits = datasets.load_splits(splits_path)
    normalization = normalization_of(manifest)
    representative = datasets.representative_samples(data, splits, samples, normalization=normalization)
    print(f"converting to full int8 ({io_type} input/output) with {len(representative)} calibration samples")
    int8_path = pathlib.Path(run_dir) / "model_int8.tflite"
    exits = training.get("exits") or []

    def finish(int8_bytes):
        """Exit-head order and op-version lowering, the same for the PTQ and the QAT model."""
        rewrites = []
        if exits:  # outputs in Keras order and names, each exit head right after its boundary
            int8_bytes = prepare_exit_model(int8_bytes, list(model.output_names))
        if not keep_op_versions:
            int8_bytes, rewrites = lower_op_versions(int8_bytes)
            for line in describe_changes(rewrites):
                print("lowered for edgetpu_compiler 16.0: " + line)
        return int8_bytes, rewrites

    int8_bytes, rewrites = finish(convert_int8(model, representative, io_type))
    int8_path.write_bytes(int8_bytes)
    images, labels = load_test_set(run_dir, manifest)
    result = evaluate(whole_model_chain(int8_path, normalization=normalization), images, labels,
                      printer("int8 accuracy"))
    run = RunData(model=model, data=data, splits=splits, representative=representative, io_type=io_type,
                  finish=finish, images=images, labels=labels)
    result, chosen = choose_int8(run_dir, int8_path, result, manifest.get("accuracy", {}).get("float", result["accuracy"]),
                                 run, qat, training)
    rewrites = chosen.pop("op_version_rewrites", rewrites)
    accuracy = manifest.setdefault("accuracy", {})
    accuracy["int8"] = result["accuracy"]
    accuracy.update(chosen.pop("accuracy"))
    accuracy.pop("chain", None)
    if exits:
        accuracy["exits"] = output_accuracies(whole_model_chain(int8_path, normalization=normalization), images,
                                              labels, exits)
    drop = 100.0 * (accuracy.get("float", result["accuracy"]) - result["accuracy"])
    print(f"accuracy on {len(labels)} test samples: float {accuracy.get('float', float('nan')):.4f}, "
          f"int8 {result['accuracy']:.4f} (drop {drop:+.2f} points)")
    if drop > threshold:
        print(f"WARNING: int8 quantization lost {drop:.2f} percentage points (threshold {threshold}); "
              "try more calibration samples (--samples) or quantization-aware training (--qat)", file=sys.stderr)
    manifest["quantization"] = {
        "int8_model": runfolder.file_record(run_dir, int8_path), "io_type": io_type,
        "representative_samples": len(representative),
        "accuracy_drop_points": drop, "threshold_points": threshold, "warned": drop > threshold,
        "op_version_rewrites": rewrites, **chosen,
    }
    runfolder.drop_after(manifest, "quantize")
    print(f"splitting {int8_path.name} into stages")
    manifest["split"], manifest["stages"] = write_stages(   # op versions are lowered (or kept) already
        run_dir, int8_path, options, print, lower_versions=False, exits=exits or None)
    manifest["output"] = output_contract(read_graph(str(int8_path)))   # an imported model may end in a softmax
    runfolder.save(run_dir, manifest)
    return manifest
