"""A run folder opened for inference: its stage chain, the image it takes, its test set, in words.

What the command line, the network chain, the HTTP API, the report and the benches share; it imports
nothing of theirs.
"""
import dataclasses

import numpy as np

import runfolder
from datasets import InputSpec
from datasets.labels import name_of
from datasets.preprocess import normalization_of, output_kind_of
from deploy.core.chain import StageChain
from deploy.core.exits import stage_exits
from deploy.core.stages import DEFAULT_INVOKE_TIMEOUT, StageError, load_stages


@dataclasses.dataclass(frozen=True)
class Runtime:
    """Where and how the stage interpreters run: what ``--devices``, ``--threads``, ``--no-xnnpack`` say.

    devices: per-stage devices ("usb:0,cpu") or one for all; None lets compiled stages take the TPUs found.
    threads: CPU threads per interpreter (None: the runtime's choice). tpus: the Edge TPUs to use (None: look).
    fallback: "cpu" moves an Edge TPU stage whose TPU fails to its CPU file (``deploy.core.fallback``).
    invoke_timeout: seconds an Edge TPU invoke may take before its TPU counts as failed (0: no limit).
    """
    devices: str = None
    threads: int = None
    xnnpack: bool = True
    tpus: list = None
    fallback: str = None
    invoke_timeout: float = DEFAULT_INVOKE_TIMEOUT


def open_run(run_dir, runtime=Runtime()):
    """``open_chain`` with a Runtime."""
    return open_chain(run_dir, runtime.devices, runtime.threads, runtime.tpus, runtime.xnnpack,
                      runtime.fallback == "cpu", runtime.invoke_timeout)


def open_chain(run_dir, devices=None, num_threads=None, tpus=None, xnnpack=True, fallback=False,
               invoke_timeout=DEFAULT_INVOKE_TIMEOUT):
    """(manifest, StageChain) for a run folder, every file checked against its sha256."""
    manifest = runfolder.load(run_dir)
    stages = load_stages(run_dir, manifest, devices, num_threads, tpus, xnnpack, fallback, invoke_timeout)
    split = manifest.get("split") or {}
    outputs = [t["name"] for t in split.get("model_outputs", [])]
    inputs = [t["name"] for t in split.get("model_inputs", [])]
    available = {t["name"] for s in stages for t in s.outputs}
    chain = StageChain(stages, outputs if outputs and set(outputs) <= available else None, inputs or None,
                       stage_exits(manifest), normalization_of(manifest), output_kind_of(manifest))
    return manifest, chain


def describe_classes(classes, names):
    """ "Egyptian cat (0.789), tabby, tabby cat (0.109)": each class by its label (or index) and score."""
    return ", ".join(f"{name_of(names, c.id)} ({c.score:.3f})" for c in classes)


def describe_placement(chain):
    """One line per stage: where it runs and why."""
    return [f"stage {s.index}: {s.placement} ({s.reason})" for s in chain.stages]


def input_spec(manifest, chain):
    """The image the chain takes: size and channels from the data set, else from its input tensor;
    resize method and colour order from the input contract (``input``), else the data set's."""
    spec = (manifest.get("dataset") or {}).get("input_spec")
    if spec:
        spec = InputSpec.from_dict(spec)
    else:
        shape = chain.inputs[0]["shape"]
        if len(shape) != 4 or shape[3] not in (1, 3):
            raise StageError(f"the model input has shape {shape}; images need [1, H, W, 1 or 3]")
        spec = InputSpec(height=shape[1], width=shape[2], channels=shape[3])
    contract = manifest.get("input") or {}
    return dataclasses.replace(spec, **{k: contract[k] for k in ("resize_method", "color_order") if k in contract})


def load_test_set(run_dir, manifest):
    """(images, labels) of the held-out test split saved by training."""
    section = runfolder.require(manifest, "dataset", run_dir, "deploy --eval")
    path = runfolder.verify_file(run_dir, section["test_set"], "test set")
    with np.load(path) as data:
        return data["images"], data["labels"]
