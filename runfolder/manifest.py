"""Read, write and check ``runs/<name>/manifest.json``.

The manifest is the contract between steps. Sections, each written by one step:

- ``dataset``      (training)  name, options, seed, input spec, class names, split file
- ``training``     (training)  model name, Keras model file, history, plot
- ``quantization`` (quantize)  int8 model file, I/O types, calibration settings
- ``accuracy``     (quantize, deploy) ``float``, ``int8``, ``chain``
- ``split``        (quantize)  source model, how cuts were chosen, the cuts
- ``stages``       (quantize, compile) one entry per stage file
- ``compile``      (compile)   compiler found or why not
- ``deploy``       (deploy)    evaluation results and per-stage latency

File records are ``{"path": <relative to the run folder>, "sha256": ..., "bytes": ...}``.
"""
import datetime
import hashlib
import json
import os
import pathlib
import tempfile

from runfolder import schema
from runfolder.errors import UserError

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"

# The steps in the order they run, each with the sections it writes. A step's new results make every
# later step's sections stale (``drop_after``); ``require`` names the step that writes a missing one.
STEP_SECTIONS = (
    ("training", ("dataset", "training", "accuracy")),
    ("quantize", ("quantization", "split", "stages", "output")),
    ("compile", ("compile",)),
    ("deploy", ("deploy",)),
)
_WRITER = {section: f"python -m {step}" for step, sections in STEP_SECTIONS for section in sections
           if section != "accuracy"}


def drop_after(manifest, step):
    """Removes from ``manifest`` the sections the steps after ``step`` wrote; returns their names."""
    steps = [name for name, _ in STEP_SECTIONS]
    dropped = [section for _, sections in STEP_SECTIONS[steps.index(step) + 1:] for section in sections
               if manifest.pop(section, None) is not None]
    return dropped


class ManifestError(UserError):
    """The run folder or its manifest is missing, unreadable, or does not match its files."""


class StepOrderError(ManifestError):
    """A step was run before the step it depends on."""


def _path(run_dir):
    return pathlib.Path(run_dir) / MANIFEST_NAME


def new(run_dir):
    """Returns an empty manifest for a new run folder."""
    return {
        "schema_version": SCHEMA_VERSION,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "run": pathlib.Path(run_dir).name,
    }


def load(run_dir, create=False):
    """Reads the manifest of ``run_dir``.

    Args:
      run_dir: the run folder.
      create: return a new manifest instead of failing when there is none.
    Raises:
      ManifestError: the folder or manifest is missing, is not JSON, or has
        another schema version.
    """
    path = _path(run_dir)
    if not path.exists():
        if create:
            return new(run_dir)
        if not pathlib.Path(run_dir).is_dir():
            raise StepOrderError(
                f"run folder {run_dir} does not exist; create it with "
                f"`python -m training --run {run_dir}` first")
        raise StepOrderError(
            f"{path} is missing; run `python -m training --run {run_dir}` first")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{path} is not valid JSON ({exc}); restore it or re-run the steps") from exc
    version = manifest.get("schema_version") if isinstance(manifest, dict) else None
    if version != SCHEMA_VERSION:
        raise ManifestError(
            f"{path} has schema_version {version!r}, this tool reads version {SCHEMA_VERSION}; "
            "re-run the steps with this version of the tool")
    found = schema.problems(manifest)
    found = found or schema.stage_index_problems(manifest) + schema.split_problems(manifest)
    if found:
        section = found[0].split(".")[0].split("[")[0].split(" ")[0]
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        raise ManifestError(
            f"{path} is damaged: {found[0]}{more}. Restore it from a copy, or re-run "
            f"`{_WRITER.get(section, 'the step that writes it')} --run {run_dir}` to write it again")
    return manifest


def save(run_dir, manifest):
    """Writes the manifest atomically (a crash never leaves half a file)."""
    path = _path(run_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    manifest["updated"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".manifest-", suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(manifest, f, indent=2, sort_keys=False)
        f.write("\n")
    os.replace(tmp, path)


def require(manifest, section, run_dir, step):
    """Returns ``manifest[section]`` or says which step must run first."""
    value = manifest.get(section)
    if not value and section in ("dataset", "training") and (manifest.get("quantization") or {}).get("external"):
        # A run made by `quantize split` from an int8 model: no training to run, another way in.
        raise StepOrderError(
            f"{step}: {_path(run_dir)} was made by `quantize split` from an int8 model, so it has no "
            f"{section} of its own. "
            + (f"Measure it on a labelled folder: `python -m deploy --eval --run {run_dir} --dataset folder -o "
               "path=DIR` (class folders named as its labels)" if step.startswith("deploy")
               else "It is quantized already: split it again with `python -m quantize split MODEL.tflite --out "
                    f"{run_dir} --overwrite --stages N`; for a Keras model, `python -m training import MODEL --run "
                    "DIR --dataset folder -o path=DIR` brings its data too"))
    if not value:
        writer = _WRITER.get(section, "the previous step")
        raise StepOrderError(
            f"{step} needs the '{section}' part of {_path(run_dir)}, which is missing: "
            f"run `{writer} --run {run_dir}` first")
    return value


def restage_command(run_dir, manifest=None):
    """The command that writes the run's stages again, as the run was made: ``quantize --run`` for a run
    trained or imported here, ``quantize split SOURCE --out RUN --overwrite`` for one split from an int8 file.
    Error messages use it, so the manifest (read when not given) may be damaged: what cannot be read counts
    as a run made here."""
    if manifest is None:
        try:
            manifest = json.loads((pathlib.Path(run_dir) / MANIFEST_NAME).read_text())
        except (OSError, ValueError):
            manifest = {}
    quantization = (manifest.get("quantization") if isinstance(manifest, dict) else None) or {}
    quantization = quantization if isinstance(quantization, dict) else {}
    if not quantization.get("external"):
        return f"python -m quantize --run {run_dir}"
    split = manifest.get("split") if isinstance(manifest.get("split"), dict) else {}
    source = (split.get("source") or {}).get("path") or "MODEL.tflite"
    source = source if os.path.isabs(source) else os.path.join(str(run_dir), source)
    return f"python -m quantize split {source} --out {run_dir} --overwrite" + _split_options(manifest)


def _split_options(manifest):
    """The options a split run was made with, as far as its manifest says: stages, labels, input contract."""
    words = []
    if isinstance(manifest.get("stages"), list) and len(manifest["stages"]) > 1:
        words.append(f"--stages {len(manifest['stages'])}")
    labels = manifest.get("labels") if isinstance(manifest.get("labels"), dict) else {}
    if isinstance(labels.get("source"), str):
        words.append(f"--labels {labels['source']}")
    contract = manifest.get("input") if isinstance(manifest.get("input"), dict) else {}
    if str(contract.get("source", "")).startswith("--"):
        words.append(contract["source"])
    words += [f"--{key.replace('_', '-')} {contract[key]}" for key in ("color_order", "resize_method") if key in contract]
    return "".join(" " + word for word in words)


def sha256_of(path):
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_record(run_dir, path):
    """Record of a file inside the run folder: relative path, sha256 and size."""
    path = pathlib.Path(path)
    rel = os.path.relpath(path, run_dir)
    return {"path": rel, "sha256": sha256_of(path), "bytes": path.stat().st_size}


def resolve(run_dir, record_or_path):
    """Absolute path of a file record (or a path relative to the run folder)."""
    rel = record_or_path["path"] if isinstance(record_or_path, dict) else record_or_path
    return (pathlib.Path(run_dir) / rel).resolve()


def verify_file(run_dir, record, what):
    """Checks that a recorded file exists and still has its recorded sha256.

    Returns:
      The absolute path of the file.
    Raises:
      ManifestError: naming ``what`` when the file is missing or was changed.
    """
    path = resolve(run_dir, record)
    if not path.exists():
        raise ManifestError(
            f"{what} {path} is missing; it is listed in {_path(run_dir)}. "
            "Restore it or re-run the step that writes it")
    if not path.is_file():
        raise ManifestError(
            f"{what} {path} is not a file (a directory or a device); it is listed in {_path(run_dir)}. "
            "Restore the file or re-run the step that writes it")
    actual = sha256_of(path)
    if actual != record.get("sha256"):
        raise ManifestError(
            f"{what} {path} was changed after it was recorded (sha256 {actual[:12]}..., "
            f"manifest says {str(record.get('sha256'))[:12]}...). Re-run the step that writes it, "
            "or restore the original file")
    return path
