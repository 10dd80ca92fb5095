"""``compile check`` against the real compiler: every public (model, compiled twin) pair in
tests/data/edgetpu_pairs (SOURCES.md there), op by op, and the agreement figure the check prints."""
import gzip
import hashlib
import json
import pathlib

import pytest

from compile.preflight import check_model, optable

PAIRS = pathlib.Path(__file__).parent / "data" / "edgetpu_pairs"
RECORDS = json.loads((PAIRS / "pairs.json").read_text())


def _model(record):
    return gzip.decompress((PAIRS / "models" / f"{record['name']}.tflite.gz").read_bytes())


def _disagreements(record):
    report = check_model(_model(record), name=record["name"])
    assert [op["type"] for op in report["ops"]] == record["types"], "the stored model is not the pair's source"
    real_cpu = set(record["cpu_ops"])
    return [(op["index"], op["type"], op["placement"], "cpu" if op["index"] in real_cpu else "tpu", op["reason"])
            for op in report["ops"] if (op["placement"] == "cpu") != (op["index"] in real_cpu)]


@pytest.mark.parametrize("record", RECORDS, ids=[r["name"] for r in RECORDS])
def test_the_prediction_places_every_op_where_the_real_compiler_did(record):
    wrong = _disagreements(record)
    assert not wrong, f"{record['name']} ({record['repository']}): (op, type, predicted, real, reason): {wrong}"


def test_the_agreement_the_check_prints_is_the_one_measured_on_the_pairs():
    ops = sum(len(r["types"]) for r in RECORDS)
    agreeing = ops - sum(len(_disagreements(r)) for r in RECORDS)
    assert optable.AGREEMENT == {"models": len(RECORDS), "ops": ops, "agreeing": agreeing}
    assert f"{len(RECORDS)} models" in optable.agreement_line()


def test_pairs_cover_the_cases_the_rules_stand_on():
    """The evidence is in the data: refusal-free -1 batches, resizes left on the CPU, a mapped TILE."""
    names = {r["name"] for r in RECORDS}
    assert {"mnist7", "mobv1", "mobv2", "deeplabv3_mnv2_pascal_quant",
            "deeplab_mobilenet_edgetpu_slim_cityscapes_quant"} <= names
    for name in ("mnist7", "mobv2"):
        record = next(r for r in RECORDS if r["name"] == name)
        report = check_model(_model(record))
        assert not report["refused"] and record["cpu_ops"] == []


def test_a_stored_model_predicts_as_the_full_model_it_was_made_from(coral_data):
    """The weights the stored models drop do not change the prediction (checked on the originals here)."""
    compared = 0
    for record in RECORDS:
        original = coral_data / pathlib.Path(record["source"]["path"]).name
        if not original.is_file() or hashlib.sha256(original.read_bytes()).hexdigest() != record["source"]["sha256"]:
            continue
        full, stored = check_model(str(original)), check_model(_model(record))
        assert full["ops"] == stored["ops"] and full["problems"] == stored["problems"], record["name"]
        compared += 1
    assert compared >= 2


def test_the_cutting_fix_it_suggests_puts_more_of_the_model_on_the_edge_tpu(tmp_path):
    """DeepLab v3: the check says the x33 resize ends the Edge TPU part and that isolating it lets the ops
    behind it map; following that advice (quantize split --isolate-unsupported) does map them."""
    from compile.preflight import check_run
    from quantize.plan_options import PlanOptions
    from quantize.stages import split_into
    record = next(r for r in RECORDS if r["name"] == "deeplabv3_mnv2_pascal_quant")
    model = tmp_path / "deeplab.tflite"
    model.write_bytes(_model(record))
    whole = check_model(str(model))
    fixes = [(f["type"], f["fix"]) for f in whole["fixes"]]
    assert any(kind == "RESIZE_BILINEAR" and "x2 steps" in fix for kind, fix in fixes)
    assert any(kind == "ARG_MAX" and "argmax on the host" in fix for kind, fix in fixes)
    cutting = [f for f in whole["fixes"] if "--isolate-unsupported" in f["fix"]]
    assert len(cutting) == 1 and cutting[0]["ops"] == [64] and "the 5 supported op(s)" in cutting[0]["fix"]
    split_into(str(tmp_path / "run"), str(model), PlanOptions(isolate_unsupported=True), progress=lambda *_: None)
    stages = check_run(tmp_path / "run")["models"][1:]
    on_tpu = sum(s["summary"]["tpu_ops"] for s in stages)
    assert whole["summary"]["tpu_ops"] == 64 and on_tpu == 64 + 5


def test_the_agreement_bench_prints_the_same_figure():
    import subprocess
    import sys
    out = subprocess.run([sys.executable, str(PAIRS.parents[2] / "bench" / "preflight_agreement.py")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    a = optable.AGREEMENT
    assert out.stdout.splitlines()[-1].startswith(f"all {a['models']} pairs: {a['agreeing']} of {a['ops']} ops")
