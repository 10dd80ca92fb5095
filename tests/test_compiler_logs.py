"""Parsing real edgetpu_compiler output: sizes, the operation table, summaries, refusals."""
import pathlib

import pytest

from compile import parse_compiler_output, parse_size

DATA = pathlib.Path(__file__).resolve().parent / "data" / "edgetpu_compiler"


def test_parse_size_converts_compiler_units():
    assert parse_size("0.00B") == 0
    assert parse_size("7.25KiB") == 7424
    assert parse_size("1.05MiB") == round(1.05 * 1024 * 1024)
    assert parse_size("2.00GiB") == 2 << 30
    with pytest.raises(ValueError, match="1.05 MB"):
        parse_size("1.05 MB")


def test_parse_real_stdout_with_operation_table():
    report = parse_compiler_output((DATA / "yolov5s-int8-224_stdout.txt").read_text())
    assert (report["compiler_version"], report["compile_time_ms"]) == ("16.0.384591198", 3173)
    assert report["succeeded"] is True
    assert (report["input_model"], report["output_model"]) == (
        "yolov5s-int8-224.tflite", "yolov5s-int8-224_edgetpu.tflite")
    assert report["input_size_bytes"] == round(7.37 * (1 << 20))
    assert report["on_chip_memory_bytes"] == round(6.08 * (1 << 20))
    assert report["on_chip_remaining_bytes"] == 0
    assert report["off_chip_memory_bytes"] == round(1.70 * (1 << 20))
    assert (report["edgetpu_subgraphs"], report["total_ops"]) == (2, 294)
    assert report["operation_log"] == "yolov5s-int8-224_edgetpu.log"
    # The table agrees with the "Number of operations that will run on ..." lines.
    assert (report["ops_mapped"], report["ops_on_cpu"]) == (289, 5)
    assert len(report["operations"]) == 17
    assert sum(o["count"] for o in report["operations"]) == report["total_ops"]
    assert report["operations"][1] == {
        "op": "CONCATENATION", "count": 1, "on_tpu": False,
        "status": "Operation is otherwise supported, but not mapped due to some unspecified limitation"}
    assert report["operations"][-1] == {"op": "CONV_2D", "count": 62, "on_tpu": True,
                                        "status": "Mapped to Edge TPU"}


def test_parse_real_operation_log():
    report = parse_compiler_output((DATA / "yolov8s_integer_quant_edgetpu_160_CPU.log").read_text())
    assert report["compiler_version"] == "16.0.384591198"
    assert report["input_model"] == "yolov8s_integer_quant.tflite"
    assert report["output_model"] == "yolov8s_integer_quant_edgetpu.tflite"
    assert report["total_ops"] is None and report["on_chip_memory_bytes"] is None
    assert len(report["operations"]) == 16
    assert (report["ops_mapped"], report["ops_on_cpu"]) == (257, 2)
    assert [o["op"] for o in report["operations"] if not o["on_tpu"]] == ["DEQUANTIZE", "QUANTIZE"]

    full = parse_compiler_output((DATA / "mobilenet_v2_1.0_224_inat_bird_quant_edgetpu.log").read_text())
    assert (full["ops_mapped"], full["ops_on_cpu"]) == (65, 0)


def test_parse_summary_without_table_uses_summary_lines():
    text = (DATA / "yolov5s-int8-224_stdout.txt").read_text().split("\nOperator ")[0]
    report = parse_compiler_output(text)
    assert report["operations"] == []
    assert (report["ops_mapped"], report["ops_on_cpu"]) == (289, 5)


def test_parse_refuses_co_compiled_output():
    one = (DATA / "yolov5s-int8-224_stdout.txt").read_text()
    with pytest.raises(ValueError, match="co-compiled"):
        parse_compiler_output(one + one)
