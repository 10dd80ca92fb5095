"""Rebuilds this folder from public (model, compiled twin) pairs: where the real compiler put each op.

    python tests/data/edgetpu_pairs/build.py MIRROR_ROOT

MIRROR_ROOT holds bare clones named owner+name/repo (as the project's `fetch` tool makes them) of the
repositories in REPOSITORIES. For each pair it writes models/NAME.tflite.gz, the source model with
every constant buffer over 64 bytes overwritten (all zeros stay zeros, anything else becomes ones: what the
pre-flight rules read, shapes, types, options, small constants and whether a constant is all zeros, is
kept; the weights are not), and pairs.json with the facts read from the twin (ops, types, which ran on
the CPU) and the provenance of both files. SOURCES.md is written from the same records.
"""
import gzip
import hashlib
import json
import pathlib
import subprocess
import sys

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))

from compile.preflight.placement import compiled_placement  # noqa: E402
from tflitegraph import schema as fb  # noqa: E402

REPOSITORIES = {
    "google-coral/test_data": {"note": "Coral's test models (Apache-2.0)", "pairs": "*_edgetpu.tflite"},
    "google-coral/edgetpu": {"note": "Coral's older test models (Apache-2.0), test_data/", "pairs": "*_edgetpu.tflite"},
    "HanChangHun/EdgeTPU-Compiler-Log-Parser": {
        "note": "a compiler-log parser's test model; its log says 16.0.384591198",
        "pairs": [("tests/model/dummy.tflite", "tests/model/compiled/dummy_edgetpu.tflite")]},
    "system-software-lab/nrf20": {"note": "Keras MNIST and MobileNet models with a dynamic (-1) batch; its README "
                                          "shows compiler 15.0.340273435 for mnist4/mnist7",
                                  "pairs": [("convert/quantize/mnist7.tflite",
                                             "convert/quantize/mnist7_edgetpu.tflite"),
                                            ("convert/quantize/tensorflow_lite/mnist9.tflite",
                                             "convert/quantize/tensorflow_lite/mnist9_edgetpu.tflite"),
                                            ("convert/mnist4.tflite", "convert/mnist4_edgetpu.tflite"),
                                            ("cpu/model/mobv1.tflite", "tflite/tpu/model/mobv1_edgetpu.tflite"),
                                            ("cpu/model/mobv2.tflite", "tflite/tpu/model/mobv2_edgetpu.tflite")]},
}
KEEP_BYTES = 64


def git(repo_dir, *args):
    return subprocess.run(["git", "-C", str(repo_dir), *args], check=True, capture_output=True).stdout


def tree(repo_dir, commit):
    """{path: blob id} of ``commit``."""
    lines = git(repo_dir, "ls-tree", "-r", commit).decode().splitlines()
    return {line.split("\t", 1)[1]: line.split()[2] for line in lines}


def present(repo_dir, blob):
    return subprocess.run(["git", "-C", str(repo_dir), "cat-file", "-e", blob], capture_output=True).returncode == 0


def candidates(repo_dir, spec):
    """(commit, source path, twin path, source blob, twin blob) for every pair whose files are stored."""
    found = {}
    for commit in git(repo_dir, "rev-list", "--all").decode().split():
        files = tree(repo_dir, commit)
        pairs = spec if isinstance(spec, list) else [
            (p.replace("_edgetpu.tflite", ".tflite"), p) for p in files
            if p.endswith("_edgetpu.tflite") and "cocompil" not in p and "segment_" not in p]
        for source, twin in pairs:
            key = (files.get(source), files.get(twin))
            if None in key or key in found or not (present(repo_dir, key[0]) and present(repo_dir, key[1])):
                continue
            found[key] = (commit, source, twin, *key)
    return list(found.values())


def skeleton(data):
    """The model with its large constant buffers overwritten, gzip-compressed."""
    model = fb.read_model(data)
    for buffer in model.buffers or []:
        if buffer.data is not None and len(buffer.data) > KEEP_BYTES:
            values = bytes(buffer.data)
            buffer.data = list((b"\0" if not any(values) else b"\1") * len(values))
    return gzip.compress(fb.model_to_bytes(model), 9, mtime=0)


def build(mirror_root):
    records, seen = [], set()
    (HERE / "models").mkdir(exist_ok=True)
    for repo, meta in REPOSITORIES.items():
        repo_dir = pathlib.Path(mirror_root) / repo.replace("/", "+") / "repo"
        for commit, source, twin, source_blob, twin_blob in candidates(repo_dir, meta["pairs"]):
            data, compiled = git(repo_dir, "cat-file", "-p", source_blob), git(repo_dir, "cat-file", "-p", twin_blob)
            digest = hashlib.sha256(data).hexdigest()
            if digest in seen:
                continue
            seen.add(digest)
            try:
                placement = compiled_placement(data, compiled)
            except ValueError as exc:
                print(f"skipped {repo} {source} @ {commit[:12]}: {exc}")
                continue
            name = pathlib.Path(source).stem
            facts = ([p["type"] for p in placement], [p["index"] for p in placement if p["placement"] == "cpu"])
            if any(r["name"].startswith(name) and (r["types"], r["cpu_ops"]) == facts for r in records):
                continue   # another version of a model already kept, with the same ops and placement
            if any(r["name"] == name for r in records):
                name = f"{name}_{digest[:8]}"
            (HERE / "models" / f"{name}.tflite.gz").write_bytes(skeleton(data))
            records.append({
                "name": name, "repository": repo, "commit": commit, "note": meta["note"],
                "source": {"path": source, "sha256": digest},
                "twin": {"path": twin, "sha256": hashlib.sha256(compiled).hexdigest()},
                "types": [p["type"] for p in placement],
                "cpu_ops": [p["index"] for p in placement if p["placement"] == "cpu"]})
            print(f"{name}: {len(placement)} ops, {len(records[-1]['cpu_ops'])} on the CPU ({repo})")
    records.sort(key=lambda r: r["name"])
    (HERE / "pairs.json").write_text(json.dumps(records, indent=1) + "\n")
    write_sources(records)


def write_sources(records):
    lines = ["# Real (model, compiled twin) pairs: where edgetpu_compiler put each op", "",
             "Written by `build.py` (see its docstring). `models/` holds each source model with its large",
             "constant buffers overwritten (weights are not needed to predict placement); `pairs.json` holds",
             "the facts read from the compiled twin: the op types and the ops left on the CPU (those outside",
             "`edgetpu-custom-op`). `tests/test_preflight_pairs.py` holds `compile check`'s prediction",
             "against every pair, op by op.", "",
             "| pair | ops | on the CPU | repository @ commit | source file (sha256) | twin file |",
             "|---|---|---|---|---|---|"]
    for r in records:
        lines.append(f"| {r['name']} | {len(r['types'])} | {len(r['cpu_ops'])} | "
                     f"https://github.com/{r['repository']} @ {r['commit'][:12]} | `{r['source']['path']}` "
                     f"({r['source']['sha256'][:12]}) | `{r['twin']['path']}` |")
    lines += ["", "Repositories:", ""] + [f"- {repo}: {meta['note']}" for repo, meta in REPOSITORIES.items()]
    (HERE / "SOURCES.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    build(sys.argv[1] if len(sys.argv) > 1 else "/work/.mirror")
