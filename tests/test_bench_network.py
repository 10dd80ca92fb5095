"""bench/network_chain.py end to end with tiny sample counts: the seed's Flask+Keras chain, our int8 stages over
Flask+JSON and over gRPC, all on loopback; checks the JSON line's figures make sense (not the targets)."""
import json
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow


def test_network_chain_bench_smoke(tiny_run):
    pytest.importorskip("flask")
    pytest.importorskip("grpc")
    result = subprocess.run([sys.executable, str(REPO / "bench" / "network_chain.py"), "--run", str(tiny_run),
                             "--samples", "12", "--seed-samples", "3", "--warmup", "2", "--workers", "4"],
                            cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    figures = json.loads(lines[-1])
    assert "gRPC streamed vs seed 000" in result.stdout           # the table for people comes first
    assert figures["bench"] == "network_chain" and figures["hops"] == 3
    assert all(figures["byte_identical"].values()), figures["byte_identical"]
    assert 0.0 <= figures["seed_top1_agreement"] <= 1.0
    for key in ("seed_flask_keras", "int8_http_json", "grpc_int8", "grpc_int8_stream_window_1", "in_process",
                "bare_grpc_echo"):
        row = figures[key]
        assert 0 < row["p50_ms"] <= row["p95_ms"] and row["throughput_per_s"] > 0, key
    assert figures["seed_flask_keras"]["samples"] == 3 and figures["grpc_int8"]["samples"] == 12
    # Every network chain costs more than the same stages in process; Keras predict more than int8 over JSON.
    assert figures["in_process"]["p50_ms"] < figures["grpc_int8"]["p50_ms"]
    assert figures["int8_http_json"]["p50_ms"] < figures["seed_flask_keras"]["p50_ms"]
    # Raw int8 bytes in protobuf are smaller than the same values as JSON lists, hop by hop.
    grpc_hops, json_hops = figures["grpc_int8"]["bytes_per_hop"], figures["int8_http_json"]["bytes_per_hop"]
    assert len(grpc_hops) == len(json_hops) == len(figures["seed_flask_keras"]["bytes_per_hop"]) == 3
    assert all(0 < g < j for g, j in zip(grpc_hops, json_hops))
    ratios = figures["ratios"]
    assert ratios["throughput_vs_seed_streamed"] == pytest.approx(
        figures["grpc_int8_streamed"]["throughput_per_s"] / figures["seed_flask_keras"]["throughput_per_s"])
    assert set(figures["targets_met"]) == set(figures["targets"])
