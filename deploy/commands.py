"""What ``python -m deploy`` does on a run folder: classify images, evaluate, verify."""
import pathlib

import numpy as np

import runfolder
from datasets import InputSpec, load_image
from deploy.chain import StageChain
from deploy.classify import classify, evaluate
from deploy.progress import printer
from deploy.runtime import load_runtime
from deploy.stages import StageError, load_stages
from deploy.verify import compare, reference_chain, sample_feeds


def open_chain(run_dir, devices=None, num_threads=None, tpus=None):
    """(manifest, StageChain) for a run folder, every file checked against its sha256."""
    manifest = runfolder.load(run_dir)
    stages = load_stages(run_dir, manifest, devices, num_threads, tpus)
    split = manifest.get("split") or {}
    outputs = [t["name"] for t in split.get("model_outputs", [])]
    inputs = [t["name"] for t in split.get("model_inputs", [])]
    available = {t["name"] for s in stages for t in s.outputs}
    chain = StageChain(stages, outputs if outputs and set(outputs) <= available else None, inputs or None)
    return manifest, chain


def describe_placement(chain):
    """One line per stage: where it runs and why."""
    return [f"stage {s.index}: {s.placement} ({s.reason})" for s in chain.stages]


def input_spec(manifest, chain):
    """The image size and channels the chain takes: from the data set, else from its input tensor."""
    spec = (manifest.get("dataset") or {}).get("input_spec")
    if spec:
        return InputSpec.from_dict(spec)
    shape = chain.inputs[0]["shape"]
    if len(shape) != 4 or shape[3] not in (1, 3):
        raise StageError(f"the model input has shape {shape}; images need [1, H, W, 1 or 3]")
    return InputSpec(height=shape[1], width=shape[2], channels=shape[3])


def classify_images(run_dir, images, top_k=3, resize=False, convert=False, devices=None):
    """Top-k classes for each image file; returns [(path, [Class])]."""
    manifest, chain = open_chain(run_dir, devices)
    for line in describe_placement(chain):
        print(line)
    spec = input_spec(manifest, chain)
    names = (manifest.get("dataset") or {}).get("class_names")
    results = []
    for path in images:
        classes = classify(chain, load_image(path, spec, resize=resize, convert=convert), top_k)
        label = ", ".join(f"{names[c.id] if names and c.id < len(names) else c.id} ({c.score:.3f})"
                          for c in classes)
        print(f"{path}: {label}")
        results.append((path, classes))
    return results


def load_test_set(run_dir, manifest):
    """(images, labels) of the held-out test split saved by training."""
    section = runfolder.require(manifest, "dataset", run_dir, "deploy --eval")
    path = runfolder.verify_file(run_dir, section["test_set"], "test set")
    with np.load(path) as data:
        return data["images"], data["labels"]


def evaluate_run(run_dir, devices=None, num_threads=None, limit=None):
    """Accuracy and latency of the stage chain on the held-out test split; recorded in the manifest."""
    manifest, chain = open_chain(run_dir, devices, num_threads)
    images, labels = load_test_set(run_dir, manifest)
    if limit:
        images, labels = images[:limit], labels[:limit]
    for line in describe_placement(chain):
        print(line)
    result = evaluate(chain, images, labels, printer("chain on test split"))
    manifest.setdefault("accuracy", {})["chain"] = result["accuracy"]
    deploy = manifest.setdefault("deploy", {})
    runtime = load_runtime()
    deploy["eval"] = {
        "samples": result["samples"], "accuracy": result["accuracy"], "latency_ms": result["latency_ms"],
        "runtime": f"{runtime.name} {runtime.version}",
        "stages": [{"index": s.index, "placement": s.placement, "reason": s.reason, "file": s.path,
                    "latency_ms_median": ms} for s, ms in zip(chain.stages, result["stage_latency_ms"])],
    }
    runfolder.save(run_dir, manifest)
    print(f"chain accuracy on {result['samples']} test samples: {result['accuracy']:.4f}; "
          f"latency median {result['latency_ms']['median']:.3f} ms, p95 {result['latency_ms']['p95']:.3f} ms")
    for stage in deploy["eval"]["stages"]:
        print(f"  stage {stage['index']}: {stage['latency_ms_median']:.3f} ms on {stage['placement']}")
    return deploy["eval"]


def verify_run(run_dir, reference=None, samples=64, devices=None):
    """Runs the chain and the unsplit model on the same inputs; returns the comparison dict."""
    manifest, chain = open_chain(run_dir, devices)
    tpus = [s for s in chain.stages if s.placement.startswith("edgetpu")]
    if reference is None:
        record = runfolder.require(manifest, "quantization", run_dir, "deploy verify")["int8_model"]
        reference = runfolder.verify_file(run_dir, record, "int8 model")
    if not pathlib.Path(reference).is_file():
        raise StageError(f"reference model {reference} does not exist")
    ref, note = reference_chain(reference, tpus)
    if note:
        print(note)
    images = None
    if manifest.get("dataset"):
        images, _ = load_test_set(run_dir, manifest)
        images = images if _fits(chain, images) else None
    feeds = sample_feeds(chain, samples, images)
    result = compare(chain, ref, feeds, printer("verify"))
    result["reference"] = str(reference)
    result["inputs"] = "test split images" if images is not None else "random"
    manifest.setdefault("deploy", {})["verify"] = result
    runfolder.save(run_dir, manifest)
    print(f"{result['mismatching_outputs']} mismatching outputs of {result['outputs_compared']} "
          f"({result['samples']} samples, {result['inputs']}); max difference {result['max_abs_difference']} "
          f"steps; top-1 agreement {result['top1_agreement']:.4f}")
    return result


def _fits(chain, images):
    shape = chain.inputs[0]["shape"]
    return len(chain.inputs) == 1 and list(images.shape[1:]) == list(shape[1:])

