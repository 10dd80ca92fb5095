"""``python -m deploy bench`` and the bench/ scripts: what they record and print (never how fast)."""
import json
import sys

import pytest

import runfolder
from deploy.pipeline import bench
from tests.conftest import REPO, copy_run, run_cli


def _check_percentiles(figures):
    assert figures["p50"] <= figures["p95"] <= figures["p99"]
    assert figures["p50"] > 0 and figures["mean"] > 0


def test_bench_command_records_latency_throughput_and_a_plot(tiny_run, tmp_path):
    run = copy_run(tiny_run, tmp_path)
    result = run_cli("deploy", "bench", "--run", run, "--samples", 24, "--warmup", 3, "--threads", 1,
                     "--no-xnnpack")
    assert result.returncode == 0, result.stderr
    manifest = runfolder.load(run)
    recorded = manifest["deploy"]["bench"]
    stage_count = len(manifest["stages"])
    assert recorded["samples"] == 24 and recorded["warmup"] == 3
    assert recorded["num_threads"] == 1 and recorded["xnnpack"] is False
    assert [s["index"] for s in recorded["stages"]] == [s["index"] for s in manifest["stages"]]
    for mode in ("sequential", "pipelined"):
        figures = recorded[mode]
        assert figures["samples"] == 24 and figures["throughput_per_s"] > 0
        assert len(figures["stages_ms"]) == stage_count
        _check_percentiles(figures["end_to_end_ms"])
        for stage in figures["stages_ms"]:
            _check_percentiles(stage)
    assert recorded["speedup"] == pytest.approx(
        recorded["pipelined"]["throughput_per_s"] / recorded["sequential"]["throughput_per_s"])
    plot = runfolder.resolve(run, recorded["plot"])
    assert plot.name == "bench.png" and plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    runfolder.verify_file(run, recorded["plot"], "bench plot")
    assert "pipelined / sequential throughput:" in result.stdout
    assert "end to end  sequential" in result.stdout and "end to end  pipelined" in result.stdout
    progress = result.stderr
    assert "sequential: evaluated 24 of 24 samples" in progress and "pipelined: evaluated 24 of 24" in progress
    summary = run_cli("deploy", "summary", "--run", run)
    assert f"pipelined ({recorded['speedup']:.2f}x, 24 samples" in summary.stdout


def test_plot_is_skipped_with_a_message_without_matplotlib(tiny_run, tmp_path, monkeypatch, capsys):
    from deploy.cli import actions as commands
    run = copy_run(tiny_run, tmp_path)
    monkeypatch.setitem(sys.modules, "matplotlib", None)        # import matplotlib now raises ImportError
    recorded = commands.bench_run(str(run), samples=6, warmup=1)
    assert recorded["plot"] is None and not (run / "bench.png").exists()
    assert "plot skipped: matplotlib is not installed" in capsys.readouterr().out


def test_percentiles_and_table():
    figures = bench.percentiles_ms([0.001 * k for k in range(1, 101)])
    assert figures["p50"] == pytest.approx(50.5) and figures["p99"] == pytest.approx(99.01)
    assert bench.percentiles_ms([])["p50"] is None


def _last_json(stdout):
    lines = stdout.strip().splitlines()
    figures = json.loads(lines[-1])
    assert not any(line.startswith("{") for line in lines[:-1])   # exactly one JSON line, at the end
    return figures


def test_bench_pipeline_script_ends_with_one_json_line(coral_data, tmp_path):
    result = run_cli("bench.pipeline", "--model", coral_data / "mobilenet_v1_0.25_128_quant.tflite",
                     "--stages", 2, "--samples", 6, "--warmup", 1, "--gil-invokes", 2, "--balance", "macs",
                     "--rounds", 3, "--work", tmp_path)
    assert result.returncode == 0, result.stderr
    figures = _last_json(result.stdout)
    two = figures["stages"]["2"]
    assert len(two["speedup_per_round"]) == 3
    assert two["speedup"] == pytest.approx(sorted(two["speedup_per_round"])[1])  # the median round
    assert two["ceiling_speedup"] > 0 and two["pipelined_of_ceiling"] > 0
    assert len(two["stage_p50_ms"]) == 2 and figures["gil"]["ratio"] > 0
    assert "2 stages" in result.stdout and "GIL check" in result.stdout


@pytest.mark.slow
def test_bench_seed_chain_script_ends_with_one_json_line(coral_data, tiny_run, tmp_path):
    run = copy_run(tiny_run, tmp_path)
    result = run_cli("bench.seed_chain", "--run", run, "--samples", 6, "--predict-samples", 2, "--warmup", 1,
                     "--mnv2", coral_data / "mobilenet_v1_0.25_128_quant.tflite", "--mnv2-samples", 4,
                     "--work", tmp_path / "work")
    assert result.returncode == 0, result.stderr
    figures = _last_json(result.stdout)
    seed = figures["seed000"]
    assert seed["ratio_vs_direct_call"] == pytest.approx(seed["direct_call_ms"] / seed["ours_ms"])
    assert seed["ratio_vs_predict"] == pytest.approx(seed["predict_ms"] / seed["ours_ms"])
    assert seed["stages"] == 3 and seed["overhead_per_hop_us"] > 0
    cost = figures["split_cost"]
    assert cost["ratio_chain_vs_unsplit"] == pytest.approx(cost["chain_ms"] / cost["unsplit_ms"])
    assert (REPO / "bench" / "seed_chain.py").is_file()
