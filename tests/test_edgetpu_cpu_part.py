"""The Edge TPU estimate of a stage charges what the compiler leaves on the CPU at its measured CPU
time, so --balance edgetpu weighs a CPU op (and everything it drags off the TPU) as the hardware will."""
import itertools

import pytest

from compile.preflight.check import predict_placement
from quantize.edgetpu_check import supported_ops
from quantize.partition import balanced_plan, isolating_plan, objective_cost
from quantize.plan_table import format_plan
from tests.test_isolate import _model_with_abs_in_the_middle
from tflitegraph import edgetpu_latency as L
from tflitegraph.graph import read_graph


@pytest.fixture(scope="module")
def abs_graph(tmp_path_factory):
    return read_graph(str(_model_with_abs_in_the_middle(tmp_path_factory.mktemp("cpu_part") / "abs.tflite")))


def _latencies(graph):
    """Made-up but distinct CPU times per op: what matters here is which ops they are charged for."""
    return [0.5 + 0.1 * p for p in range(len(graph.ops))]


def test_the_estimate_charges_the_ops_the_fall_through_rule_puts_on_the_cpu(abs_graph):
    graph, supported, latencies = abs_graph, supported_ops(abs_graph), _latencies(abs_graph)
    n, first_cpu = len(graph.ops), supported.index(False)
    whole = L.stage_estimate(graph, 0, n, "usb3", supported, latencies)
    on_cpu = [p["index"] for p in predict_placement(graph) if p["placement"] == "cpu"]
    assert on_cpu == list(range(first_cpu, n))            # ABS drags every later op off the TPU
    assert whole["cpu_ops"] == len(on_cpu)
    assert whole["cpu_ms"] == pytest.approx(sum(latencies[p] for p in on_cpu), abs=1e-4)
    assert whole["tpu_ms"] == pytest.approx(L.stage_ms(graph, 0, first_cpu), abs=1e-4)   # its output goes to ABS
    assert whole["ms"] == pytest.approx(whole["tpu_ms"] + whole["cpu_ms"], abs=1e-3)
    untimed = L.stage_estimate(graph, 0, n, "usb3", supported)
    assert untimed["cpu_ms"] is None and untimed["ms"] == untimed["tpu_ms"]
    after = L.stage_estimate(graph, first_cpu + 1, n, "usb3", supported, latencies)
    assert after["cpu_ops"] == 0 and after["cpu_ms"] == 0.0   # a stage of its own after ABS maps fully
    alone = L.stage_estimate(graph, first_cpu, first_cpu + 1, "usb3", supported, latencies)
    assert alone["tpu_ms"] == 0.0 and alone["ms"] == pytest.approx(latencies[first_cpu], abs=1e-4)


def test_the_partitioners_cost_agrees_with_the_stage_estimate_on_every_range(abs_graph):
    graph, supported, latencies = abs_graph, supported_ops(abs_graph), _latencies(abs_graph)
    cost = objective_cost(graph, "edgetpu:usb3", latencies, supported)
    n = len(graph.ops)
    for i, j in itertools.combinations(range(n + 1), 2):
        exact = L.stage_estimate(graph, i, j, "usb3", supported, latencies)["ms"]
        assert cost(i, j) == pytest.approx(exact, abs=2e-4), (i, j)
    with pytest.raises(ValueError, match="per-op CPU latencies"):
        objective_cost(graph, "edgetpu:usb3", None, supported)


def test_edgetpu_cuts_put_the_ops_after_a_cpu_op_back_on_a_tpu(abs_graph):
    """Two stages: charging CPU time, the best cut is next to ABS, either side (a CPU op that reads only
    the stage's input does not stop the ops after it from mapping); the estimate that ignores placement
    cuts elsewhere and leaves ops on the CPU."""
    graph, supported, latencies = abs_graph, supported_ops(abs_graph), _latencies(abs_graph)
    first_cpu = supported.index(False)
    placed = balanced_plan(graph, 2, "edgetpu:usb3", latencies, supported=supported)
    blind = balanced_plan(graph, 2, "edgetpu:usb3", latencies)
    assert placed.cuts in ([first_cpu], [first_cpu + 1])
    assert blind.cuts != placed.cuts
    blind_placed = [L.stage_estimate(graph, a, b, "usb3", supported, latencies)
                    for a, b in itertools.pairwise([0, *blind.cuts, len(graph.ops)])]
    assert sum(e["cpu_ops"] for e in placed.estimates) == 1 < sum(e["cpu_ops"] for e in blind_placed)
    assert max(placed.edgetpu_ms) < max(e["ms"] for e in blind_placed)
    table = "\n".join(format_plan(placed))
    assert "(1 op(s) on CPU" in table


def test_an_isolated_cpu_stage_is_charged_its_cpu_time_not_a_tpu_invoke(abs_graph):
    graph, supported, latencies = abs_graph, supported_ops(abs_graph), _latencies(abs_graph)
    plan = isolating_plan(graph, supported, None, "edgetpu:usb3", latencies)
    assert plan.targets == ["tpu", "cpu", "tpu"]
    cpu = plan.estimates[1]
    assert cpu["tpu_ms"] == 0.0 and cpu["ms"] == pytest.approx(latencies[supported.index(False)], abs=1e-4)
    assert " on CPU" in format_plan(plan)[2]


def test_the_cost_agrees_on_a_model_with_branches(coral_data):
    """MobileNet v2's residual adds read tensors from ops back; with one op in a residual block taken
    as unsupported, what leaves the Edge TPU part depends on where the range ends."""
    graph = read_graph(str(coral_data / "mobilenet_v2_1.0_224_quant.tflite"))
    n = len(graph.ops)
    supported = [True] * n
    adds = [op.position for op in graph.ops if op.name == "ADD"]
    supported[adds[1] - 1] = False           # the op before the second residual add
    latencies = [0.01 * (p % 7 + 1) for p in range(n)]
    cost = objective_cost(graph, "edgetpu:usb3", latencies, supported)
    blind = objective_cost(graph, "edgetpu:usb3")
    differs = 0
    for i in range(0, n, 5):
        for j in range(i + 1, n + 1, 3):
            exact = L.stage_estimate(graph, i, j, "usb3", supported, latencies)["ms"]
            assert cost(i, j) == pytest.approx(exact, abs=2e-4), (i, j)
            differs += abs(cost(i, j) - blind(i, j)) > 1e-3
    assert differs > 0
