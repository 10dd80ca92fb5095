"""What ``python -m deploy`` does on a run folder: classify images, evaluate, verify, bench."""
import dataclasses
import json
import pathlib
import sys

from PIL import Image

import runfolder
from datasets import ImageError, load_image
from datasets.labels import labels_of, name_of
from deploy.pipeline import bench
from deploy.pipeline import replicas as copies_of
from deploy.core.classify import classify, evaluate
from deploy.core.exits import check_exit_threshold, exit_shares
from deploy.core.progress import printer
from deploy.core.runtime import load_runtime
from deploy.core.stages import StageError
from deploy.core.open import Runtime, describe_classes, describe_placement, input_spec, load_test_set, open_run
from deploy.core.verify import compare, reference_chain, sample_feeds
from runfolder.errors import CannotRunHere


class CannotRun(CannotRunHere, RuntimeError):
    """The command cannot run here (e.g. no Edge TPU to compare with); the message says why."""


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm")


def image_paths(paths):
    """The files named, with every image file under a named folder (recursively, sorted) in its place."""
    found = []
    for path in map(pathlib.Path, paths):
        if path.is_dir():
            found += sorted(str(p) for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                            and not any(part.startswith(".") for part in p.relative_to(path).parts))
        else:
            found.append(str(path))
    return found


def _adapted(path, spec, resize, convert):
    """What load_image will do to fit the image to the model, in words ("" when it fits as it is)."""
    try:
        with Image.open(path) as image:
            size, mode = image.size, image.mode
    except (OSError, ValueError):
        return ""   # load_image says what is wrong with it
    done = []
    if resize and tuple(size) != (spec.width, spec.height):
        done.append(f"resized {size[0]}x{size[1]} to {spec.width}x{spec.height}")
    if convert and mode != spec.mode:
        done.append(f"converted {mode} to {spec.mode}")
    return ", ".join(done)


def classify_images(run_dir, images, runtime=Runtime(), top_k=3, resize=True, convert=True, exit_threshold=None,
                    as_json=False):
    """Top-k classes of each image file (folders: every image in them); returns [(path, [Class] or None)].

    An image that cannot be read gets its error line and the others still run (None in the result).
    With ``as_json`` each image is one JSON line {"path", "top": [{"id", "label", "score"}]} or {"path", "error"}.
    """
    manifest, chain = open_run(run_dir, runtime)
    check_exit_threshold(manifest, exit_threshold)
    say = (lambda line: print(line, file=sys.stderr)) if as_json else print
    for line in describe_placement(chain):
        say(line)
    spec = input_spec(manifest, chain)
    names = labels_of(manifest)
    paths = image_paths(images)
    if not paths:
        raise ImageError(f"no image files in {', '.join(map(str, images))} (looked for {', '.join(IMAGE_SUFFIXES)})")
    results = []
    for path in paths:
        try:
            classes = classify(chain, load_image(path, spec, resize=resize, convert=convert), top_k, exit_threshold)
        except ImageError as exc:
            print(json.dumps({"path": path, "error": str(exc)}) if as_json else f"error: {exc}",
                  file=sys.stdout if as_json else sys.stderr)
            results.append((path, None))
            continue
        adapted = _adapted(path, spec, resize, convert)
        if adapted:
            print(f"note: {path}: {adapted} (--no-resize/--no-convert refuse instead)", file=sys.stderr)
        if as_json:
            top = [{"id": c.id, "label": name_of(names, c.id), "score": round(c.score, 6)} for c in classes]
            print(json.dumps({"path": path, "top": top}))
        else:
            print(f"{path}: {describe_classes(classes, names)}")
        results.append((path, classes))
    return results


def evaluate_run(run_dir, runtime=Runtime(), limit=None, exit_threshold=None):
    """Accuracy and latency of the stage chain on the held-out test split; recorded in the manifest."""
    manifest, chain = open_run(run_dir, runtime)
    check_exit_threshold(manifest, exit_threshold)
    images, labels = load_test_set(run_dir, manifest)
    if limit:
        images, labels = images[:limit], labels[:limit]
    for line in describe_placement(chain):
        print(line)
    result = evaluate(chain, images, labels, printer("chain on test split"), exit_threshold)
    if exit_threshold is None:  # the chain's own accuracy; early-exit results stay in deploy.eval
        manifest.setdefault("accuracy", {})["chain"] = result["accuracy"]
    deploy = manifest.setdefault("deploy", {})
    runtime = load_runtime()
    deploy["eval"] = {
        "samples": result["samples"], "accuracy": result["accuracy"], "latency_ms": result["latency_ms"],
        "runtime": f"{runtime.name} {runtime.version}",
        "stages": [{"index": s.index, "placement": s.placement, "reason": s.reason, "file": s.path,
                    "latency_ms_median": ms} for s, ms in zip(chain.stages, result["stage_latency_ms"])],
    }
    if exit_threshold is not None:
        deploy["eval"].update(exit_threshold=exit_threshold, exit_share=exit_shares(chain, result["exit_stages"]))
        print(f"early exit at top probability >= {exit_threshold}: share per exit {deploy['eval']['exit_share']}")
    runfolder.save(run_dir, manifest)
    print(f"chain accuracy on {result['samples']} test samples: {result['accuracy']:.4f}; "
          f"latency median {result['latency_ms']['median']:.3f} ms, p95 {result['latency_ms']['p95']:.3f} ms")
    for stage in deploy["eval"]["stages"]:
        print(f"  stage {stage['index']}: {stage['latency_ms_median']:.3f} ms on {stage['placement']}")
    return deploy["eval"]


def verify_run(run_dir, reference=None, samples=64, runtime=Runtime()):
    """Runs the chain and the unsplit model on the same inputs; returns the comparison dict."""
    manifest, chain = open_run(run_dir, runtime)
    tpus = [s for s in chain.stages if s.placement.startswith("edgetpu")]
    if reference is None:
        record = runfolder.require(manifest, "quantization", run_dir, "deploy verify")["int8_model"]
        reference = runfolder.verify_file(run_dir, record, "int8 model")
    if not pathlib.Path(reference).is_file():
        raise StageError(f"reference model {reference} does not exist")
    ref, note = reference_chain(reference, tpus)
    if note:
        print(note)
    images = _test_images(run_dir, manifest, chain)
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


def _test_images(run_dir, manifest, chain):
    """The held-out test images when the run has them and they fit the chain, else None."""
    if not manifest.get("dataset"):
        return None
    images, _ = load_test_set(run_dir, manifest)
    return images if _fits(chain, images) else None


def verify_devices_run(run_dir, runtime, samples=64):
    """Compiled stages on their Edge TPUs (``runtime.devices``) against the same stages' int8 files on the
    CPU, same inputs.

    Returns:
      The comparison dict of ``deploy.core.verify.compare`` plus ``exact_match_rate``,
      ``devices`` and per-stage ``placements``; recorded as ``deploy.verify_devices``.
    Raises:
      CannotRun: no stage runs on an Edge TPU; the message gives each stage's reason.
    """
    manifest, chain = open_run(run_dir, runtime)
    if not any(s.placement.startswith("edgetpu") for s in chain.stages):
        reasons = "; ".join(f"stage {s.index}: {s.reason}" for s in chain.stages)
        raise CannotRun(f"cannot compare Edge TPU with CPU results: no stage runs on an Edge TPU ({reasons}). "
                        "It needs compiled stages (`python -m compile`), an Edge TPU plugged in and libedgetpu "
                        "installed; `python -m deploy doctor` checks the last two")
    _, cpu = open_run(run_dir, dataclasses.replace(runtime, devices="cpu"))
    for line in describe_placement(chain):
        print(line)
    feeds = sample_feeds(chain, samples, _test_images(run_dir, manifest, chain))
    result = compare(chain, cpu, feeds, printer("verify devices"))
    result["exact_match_rate"] = 1.0 - result["mismatching_outputs"] / max(result["outputs_compared"], 1)
    result["devices"] = runtime.devices
    result["placements"] = [{"index": s.index, "placement": s.placement, "reason": s.reason} for s in chain.stages]
    manifest.setdefault("deploy", {})["verify_devices"] = result
    runfolder.save(run_dir, manifest)
    print(f"Edge TPU vs CPU on {result['samples']} samples: exact match {100 * result['exact_match_rate']:.2f}% "
          f"of outputs, max difference {result['max_abs_difference']} steps, "
          f"top-1 agreement {result['top1_agreement']:.4f}")
    return result


def _copies(run_dir, manifest, chain, runtime, replicas):
    """The stage copies ``--replicas`` asks for ("auto": spare Edge TPUs to the slowest stages)."""
    if not replicas:
        return None
    spare = copies_of.spare_tpus(chain, runtime.tpus)
    if replicas == "auto":
        if not spare:
            print("--replicas auto: no spare Edge TPU (every one found runs a stage, or none was found); "
                  "no copies. Name copies to run them on the CPU, e.g. --replicas 1:2")
            return None
        counts = copies_of.plan_copies(copies_of.stage_times(manifest, chain), len(chain.stages) + len(spare))
        counts = {k: n for k, n in enumerate(counts) if n > 1}
    else:
        counts = copies_of.parse_copies(replicas, len(chain.stages))
    copies = copies_of.load_copies(run_dir, manifest, counts, runtime, spare)
    for k, extra in copies.items():
        print(f"stage {chain.stages[k].index}: {1 + len(extra)} copies ("
              + ", ".join([chain.stages[k].placement] + [s.placement for s in extra]) + ")")
    return copies


def _gap_lines(manifest, chain, result):
    """For stages on an Edge TPU: measured against the estimate, and the device faults that explain a gap."""
    on_tpu = {k for k, s in enumerate(chain.stages) if s.placement.startswith("edgetpu")}
    if not on_tpu:
        return []
    from deploy.cli.doctor import dpkg_packages
    from deploy.cli.doctor_devices import device_verdicts, explain_gap, gather_devices
    estimates = ((manifest.get("split") or {}).get("balance") or {}).get("stage_edgetpu_ms_estimated") or []
    measured = [result["sequential"]["stages_ms"][k]["p50"] if k in on_tpu else None for k in range(len(chain.stages))]
    usb, pci = gather_devices()
    return explain_gap(measured, estimates, device_verdicts(usb, pci, sorted(dpkg_packages())))


def bench_run(run_dir, runtime=Runtime(), samples=200, warmup=20, queue_size=2, make_plot=True, replicas=None):
    """Latency (p50/p95/p99 per stage and end to end) and throughput, sequential vs pipelined, and
    with ``replicas`` ("auto" or "STAGE:COPIES,...") pipelined with copies of stages.

    Returns the result recorded as ``deploy.bench`` in the manifest (see ``deploy.pipeline.bench``).
    """
    manifest, chain = open_run(run_dir, runtime)
    for line in describe_placement(chain):
        print(line)
    copies = _copies(run_dir, manifest, chain, runtime, replicas)
    feeds = sample_feeds(chain, samples, _test_images(run_dir, manifest, chain))
    result = bench.describe(chain, samples, warmup, runtime.threads, runtime.xnnpack, queue_size)
    result.update(bench.bench_chain(chain, feeds, warmup, queue_size, printer, copies))
    for line in bench.table_lines(result) + _gap_lines(manifest, chain, result):
        print(line)
    written = bench.record(run_dir, manifest, result, make_plot)
    if make_plot:
        print(f"plot: {written}" if written else "plot skipped: matplotlib is not installed (pip install matplotlib)")
    return manifest["deploy"]["bench"]
