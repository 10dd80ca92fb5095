"""--profile-cuts: the Edge TPU cuts refined by compiling their stages (here the stand-in compiler,
whose cache size a test can change, so its figures differ from the estimate's guess as a real one may)."""
import json

import pytest

import runfolder
from quantize.compiled_cuts import CompiledCuts, refine_cuts
from quantize.edgetpu_check import supported_ops
from quantize.partition import balanced_plan, objective_cost
from tests.conftest import STANDINS, run_cli
from tests.test_edgetpu_latency import conv_stack
from tflitegraph.graph import GraphError, read_graph

CACHE = 256 * 1024


@pytest.fixture(scope="module")
def conv_model(tmp_path_factory):
    """Six convolutions with 1.4 MB of int8 weights, made here."""
    return conv_stack(tmp_path_factory.mktemp("compiled_cuts") / "convs.tflite", 8, 64, (128, 128, 256, 256, 128, 64))


@pytest.fixture
def standin_path(monkeypatch, standin_env):
    monkeypatch.setenv("PATH", standin_env["PATH"])   # the stand-in runs on this venv's python3
    return str(STANDINS / "edgetpu_compiler")


def _refine(graph, standin, stages=3):
    latencies = [0.05] * len(graph.ops)
    return refine_cuts(graph, stages, "edgetpu:usb3", supported_ops(graph), latencies,
                       CompiledCuts(standin), progress=lambda line: None)


def test_when_the_compiler_agrees_with_the_guess_the_slowest_stage_stays(conv_model, standin_path):
    """Everything fits the cache, as the estimate guessed: the first round's figures are the estimate's,
    and the slowest stage is the estimate's (its cuts may move within ties)."""
    graph = read_graph(conv_model)
    guess = balanced_plan(graph, 3, "edgetpu:usb3")
    cuts, estimates, history = _refine(graph, standin_path)
    assert history[0]["cut_positions"] == guess.cuts and len(history) <= 2
    assert history[0]["stage_ms_compiled"] == pytest.approx(history[0]["stage_ms_estimated"], abs=1e-3)
    assert all(e["streamed_from"] == "compiler" and e["features"]["streamed_bytes"] == 0 for e in estimates)
    assert max(e["ms"] for e in estimates) == pytest.approx(max(guess.edgetpu_ms), abs=1e-3)
    assert history[-1]["cut_positions"] == cuts


def test_a_compiler_that_streams_more_moves_the_cuts_and_shortens_the_slowest_stage(conv_model, standin_path,
                                                                                     monkeypatch):
    monkeypatch.setenv("STANDIN_COMPILER_CACHE_BYTES", str(CACHE))
    graph = read_graph(conv_model)
    guess = balanced_plan(graph, 3, "edgetpu:usb3")
    cuts, estimates, history = _refine(graph, standin_path)
    assert history[0]["cut_positions"] == guess.cuts
    first_worst = max(history[0]["stage_ms_compiled"])     # the estimate's cuts, as the compiler sees them
    assert first_worst > max(history[0]["stage_ms_estimated"]) + 0.1
    assert cuts != guess.cuts and len(history) >= 2
    assert max(e["ms"] for e in estimates) < first_worst - 0.1
    params = objective_cost(graph, "params")
    for (a, b), e in zip(zip([0, *cuts], [*cuts, len(graph.ops)]), estimates):
        streamed = max(0, int(params(a, b)) - CACHE)     # as the compiler printed it, to 2 decimals of KiB
        assert e["features"]["streamed_bytes"] == pytest.approx(streamed, abs=16), (a, b)
    print(f"slowest stage, compiler's figures: estimate's cuts {guess.cuts} {first_worst:.3f} ms -> "
          f"refined {cuts} {max(e['ms'] for e in estimates):.3f} ms in {len(history)} rounds")


def test_a_stage_the_compiler_refuses_is_left_out_and_no_compiler_is_a_clear_error(conv_model, standin_path,
                                                                                     monkeypatch):
    graph = read_graph(conv_model)
    first = (0, balanced_plan(graph, 3, "edgetpu:usb3").cuts[0])
    monkeypatch.setenv("STANDIN_COMPILER_FAIL", f"ops_{first[0]}_{first[1]}")
    cuts, _, history = _refine(graph, standin_path)
    assert history[0]["stage_ms_compiled"][0] is None and len(history) >= 2
    assert (0, cuts[0]) != first
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    with pytest.raises(GraphError, match="--profile-cuts compiles candidate stages with edgetpu_compiler"):
        refine_cuts(graph, 2, "edgetpu:usb3", supported_ops(graph), [0.05] * len(graph.ops), CompiledCuts())


def test_split_with_profile_cuts_records_the_rounds(conv_model, tmp_path, standin_env):
    out = tmp_path / "run"
    env = dict(standin_env, STANDIN_COMPILER_CACHE_BYTES=str(CACHE))
    result = run_cli("quantize", "split", conv_model, "--stages", "3", "--balance", "edgetpu", "--profile-cuts",
                     "--profile-runs", "3", "--out", out, env=env)
    assert result.returncode == 0, result.stderr
    assert "--profile-cuts round 1: compiling 3 stage(s)" in result.stdout + result.stderr
    manifest = runfolder.load(out)
    balance = manifest["split"]["balance"]
    assert balance["refined_by"] == "compiler" and len(balance["refinement_rounds"]) >= 2
    assert balance["cut_positions"] == balance["refinement_rounds"][-1]["cut_positions"]
    assert all(s["edgetpu_estimate"]["streamed_from"] == "compiler" for s in manifest["stages"])
    assert "profile-cuts round 2" in result.stdout
    refused = run_cli("quantize", "plan", conv_model, "--stages", "3", "--profile-cuts", "--no-profile")
    assert refused.returncode != 0 and "--profile-cuts refines the cuts of --balance edgetpu" in refused.stderr
    missing = run_cli("quantize", "plan", conv_model, "--stages", "3", "--balance", "edgetpu", "--profile-cuts",
                      "--profile-runs", "3", env={"PATH": "/usr/bin:/bin"})
    assert missing.returncode != 0 and "was not found on PATH" in missing.stderr
    json.dumps(balance)
