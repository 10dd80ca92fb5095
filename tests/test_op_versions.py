"""The op-version table of compiler 16.0 (``compile.preflight.optable``) and the safe version
rewrite (``compile.preflight.opversions``), checked against real compiled twins, real refusals, what
the TFLite converter writes, and the real interpreter's outputs.
"""
import glob
import pathlib
import re

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

from compile.preflight import optable
from compile.preflight.opcheck import op_version
from compile.preflight.opversions import required_version, rewrite_op_versions
from compile.preflight.placement import compiled_placement
from compile.preflight.check import check_model
from tflitegraph import schema as fb
from tflitegraph.graph import GraphError, read_graph

litert = pytest.importorskip("ai_edge_litert.interpreter")
CORAL = ROOT.parent / "shared" / "coral_test_data"
DATA = ROOT / "tests" / "data" / "edgetpu_compiler"
TWINS = sorted(pathlib.Path(p) for p in glob.glob(str(CORAL / "*_edgetpu.tflite"))
               if pathlib.Path(p.replace("_edgetpu.tflite", ".tflite")).exists())


def readable_sources():
    """Every uncompiled .tflite in the shared data that reads as one graph."""
    found = []
    for path in sorted(CORAL.glob("*.tflite")):
        if path.stem.endswith("_edgetpu"):
            continue
        try:
            read_graph(path)
        except GraphError:
            continue
        found.append(path)
    return found


SOURCES = readable_sources() if CORAL.exists() else []


def test_every_edge_tpu_op_has_a_version_limit_with_a_source():
    assert set(optable.SUPPORTED_OPS) <= set(optable.VERSION_LIMITS)
    for op, (limit, source) in optable.VERSION_LIMITS.items():
        assert limit >= 1 and source.strip(), op
    for op, (seen, source) in optable.SEEN_MAPPED.items():
        assert seen <= optable.VERSION_LIMITS[op][0], (op, seen)


@pytest.mark.skipif(not TWINS, reason="no compiled twins in the shared data")
def test_versions_the_real_compiler_mapped_are_within_the_table():
    seen = {}
    for compiled in TWINS:
        source = pathlib.Path(str(compiled).replace("_edgetpu.tflite", ".tflite"))
        graph = read_graph(source)
        for place in compiled_placement(source, compiled):
            if place["placement"] == "tpu":
                version = op_version(graph, place["index"])
                key = place["type"]
                seen[key] = max(seen.get(key, 0), version)
                assert version <= optable.VERSION_LIMITS[key][0], (source.name, key, version)
    twin_entries = {op: v for op, (v, src) in optable.SEEN_MAPPED.items() if "twin:" in src}
    assert twin_entries == {op: v for op, v in seen.items() if op in twin_entries}
    assert set(seen) <= set(optable.SEEN_MAPPED)


def _refusals():
    """(op, version) pairs real 16.0 compilers refused: stored log, and cited issues."""
    text = (DATA / "op_version_refused_stdout.txt").read_text()
    stored = [(op, int(v)) for op, v in
              re.findall(r"Didn't find op for builtin opcode '(\w+)' version '(\d+)'", text)]
    assert stored, "the stored refusal log names no op"
    cited = [("CONV_2D", 6),    # github.com/google-coral/edgetpu/issues/631 (TF 2.9.1)
             ("QUANTIZE", 3)]   # github.com/google-coral/edgetpu/issues/879
    return stored + cited


@pytest.mark.parametrize("op, version", _refusals())
def test_versions_the_real_compiler_refused_are_above_the_table(op, version):
    limit, source = optable.version_limit(op)
    assert limit is not None and limit < version, (op, version, limit, source)


@pytest.mark.skipif(not SOURCES, reason="no readable models in the shared data")
def test_required_version_matches_what_the_converter_wrote():
    checked = 0
    for path in SOURCES:
        graph = read_graph(path)
        for index, op in enumerate(graph.ops):
            needed, why = required_version(graph, index)
            if needed is not None:
                assert needed == op_version(graph, index), (path.name, op.name, why)
                checked += 1
    assert checked >= 20


def test_what_this_tensorflow_emits_is_within_the_table(tiny_run):
    """The int8 model TF 2.x writes for splitnet: nothing the compiler would refuse."""
    import json
    manifest = json.loads((tiny_run / "manifest.json").read_text())
    path = tiny_run / manifest["quantization"]["int8_model"]["path"]
    report = check_model(path)
    assert report["problems"] == [] and report["summary"]["cpu_ops"] == 0
    graph = read_graph(path)
    for index in range(len(graph.ops)):
        needed, _ = required_version(graph, index)
        assert needed in (None, op_version(graph, index))


def interpreter(model_bytes):
    """The TFLite reference kernels, no XNNPACK: the kernels a version would select."""
    return litert.Interpreter(
        model_content=bytes(model_bytes),
        experimental_op_resolver_type=litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)


def outputs(model_bytes, samples):
    results = []
    for sample in samples:
        it = interpreter(model_bytes)   # fresh, so op state (LSTM) starts the same
        it.allocate_tensors()
        for detail, value in zip(it.get_input_details(), sample):
            it.set_tensor(detail["index"], value)
        it.invoke()
        results.append([it.get_tensor(d["index"]).copy() for d in it.get_output_details()])
    return results


def raised(path):
    """The model with every op code that has a rewrite rule stamped one version above the
    table, as a newer converter might write it, where the runtime still loads it."""
    model = fb.read_model(path)
    graph = read_graph(path)
    codes = {model.subgraphs[0].operators[i].opcodeIndex: graph.ops[i].name
             for i in range(len(graph.ops)) if required_version(graph, i)[0] is not None}
    original = {}
    for index, name in codes.items():
        code = model.operatorCodes[index]
        original[index], code.version = code.version, optable.version_limit(name)[0] + 1
        try:
            interpreter(fb.model_to_bytes(model)).allocate_tensors()
        except (RuntimeError, ValueError):   # this runtime has no kernel for that version
            code.version = original.pop(index)
    return fb.model_to_bytes(model), {codes[i]: v for i, v in original.items()}


@pytest.mark.skipif(not SOURCES, reason="no readable models in the shared data")
@pytest.mark.parametrize("path", SOURCES, ids=[p.stem for p in SOURCES])
def test_rewrite_restores_accepted_versions_with_bit_equal_outputs(path):
    newer, before = raised(path)
    if not before:
        pytest.skip(f"{path.name}: the runtime loads no higher version of its rewritable ops")
    assert check_model(newer)["refused"]
    fixed, changes = rewrite_op_versions(newer)
    assert {c["op"]: c["to"] for c in changes} == before   # back to what the converter wrote
    assert all(c["to"] <= optable.version_limit(c["op"])[0] < c["from"] for c in changes)
    assert not check_model(fixed)["refused"]

    rng = np.random.default_rng(7)
    it = interpreter(newer)
    samples = [[rng.integers(np.iinfo(d["dtype"]).min, np.iinfo(d["dtype"]).max + 1,
                             size=d["shape"], dtype=d["dtype"])
                for d in it.get_input_details()] for _ in range(3)]
    for got, want in zip(outputs(fixed, samples), outputs(newer, samples)):
        for a, b in zip(got, want):
            assert a.dtype == b.dtype and np.array_equal(a, b)


@pytest.mark.skipif(not (CORAL / "keras_lstm_mnist_ptq.tflite").exists(),
                    reason="keras_lstm_mnist_ptq.tflite missing")
def test_rewrite_leaves_ops_that_use_the_newer_feature():
    path = CORAL / "keras_lstm_mnist_ptq.tflite"
    model = fb.read_model(path)
    graph = read_graph(path)
    index = [op.name for op in graph.ops].index("FULLY_CONNECTED")
    op = model.subgraphs[0].operators[index]
    op.builtinOptions.keepNumDims = True              # what FULLY_CONNECTED version 5 means
    model.operatorCodes[op.opcodeIndex].version = optable.version_limit("FULLY_CONNECTED")[0] + 1
    fixed, changes = rewrite_op_versions(fb.model_to_bytes(model))
    assert "FULLY_CONNECTED" not in {c["op"] for c in changes}
    assert check_model(fixed)["refused"]
