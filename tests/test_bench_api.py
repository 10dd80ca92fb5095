"""bench/api_burst.py end to end with a small burst: the figures are there and consistent (not the targets)."""
import json
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow


def test_api_burst_bench_smoke(tiny_run):
    result = subprocess.run([sys.executable, str(REPO / "bench" / "api_burst.py"), "--run", str(tiny_run),
                             "--requests", "12", "--max-concurrent", "1", "--skip-bomb-baseline"],
                            cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "burst of 12 concurrent POST /v1/classify" in result.stdout
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    bounded, unbounded = figures["bounded"], figures["unbounded"]
    assert bounded["answered"] + bounded["refused_503"] == 12 and bounded["other"] == 0
    assert bounded["refused_with_retry_after"] == bounded["refused_503"]
    assert unbounded["answered"] == 12 and unbounded["refused_503"] == 0
    assert 0 < unbounded["p50_ms"] <= unbounded["p99_ms"]
    assert figures["bomb_through_api"]["codes"] == [422] * 4 and figures["bomb_without_check"] is None
    assert figures["bomb_through_api"]["peak_rise_mib"] < 64
