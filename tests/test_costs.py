"""The cost model and the exact partitioner, on a hand-built graph whose numbers follow from arithmetic."""
import itertools

import numpy as np
import pytest

from deploy.core.classify import whole_model_chain
from deploy.core.verify import compare, sample_feeds
from quantize.costs import balance, op_costs, parameter_table, stage_cost
from tflitegraph.graph import GraphError, read_graph
from quantize.partition import balanced_plan, optimal_cuts
from quantize.split import split_model
from tests.handbuilt import build
from tests.test_split import _chain_of


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("handbuilt") / "tiny.tflite"
    path.write_bytes(build())
    return path


def test_op_costs_match_arithmetic(tiny):
    costs = op_costs(read_graph(str(tiny)))
    assert [c.name for c in costs] == ["CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "RESHAPE", "FULLY_CONNECTED"]
    # MACs: outputs x multiplies per output.
    assert [c.macs for c in costs] == [
        8 * 8 * 4 * (3 * 3 * 3),   # conv: 256 outputs, each a 3x3x3 dot product
        8 * 8 * 4 * (3 * 3),       # depthwise: 256 outputs, each a 3x3 window of one channel
        8 * 8 * 4,                 # add: one unit per output element
        256,                       # reshape: likewise
        10 * 256]                  # fully connected: 10 outputs over 256 inputs
    assert [c.parameter_bytes for c in costs] == [4 * 27 + 4 * 4, 36 + 4 * 4, 0, 2 * 4, 10 * 256 + 10 * 4]
    assert [c.activation_in_bytes for c in costs] == [8 * 8 * 3, 256, 256 + 256, 256, 256]
    assert [c.activation_out_bytes for c in costs] == [256, 256, 256, 256, 10]


def test_crossing_bytes_count_the_residual_branch(tiny):
    graph = read_graph(str(tiny))
    names = {c: [graph.tensors[t].name for t in graph.crossing(c)] for c in range(1, 5)}
    assert names == {1: ["a"], 2: ["a", "b"], 3: ["c"], 4: ["d"]}
    assert [graph.crossing_bytes(c) for c in range(1, 5)] == [256, 512, 256, 256]


def test_a_shared_constant_is_counted_once_per_stage(tiny):
    graph = read_graph(str(tiny))
    both_convs = stage_cost(graph, 0, 2)
    assert both_convs.parameter_bytes == 108 + 36 + 16  # the 16-byte bias buffer once
    assert stage_cost(graph, 1, 2).parameter_bytes == 36 + 16
    table = parameter_table(graph)
    for i, j in itertools.combinations(range(6), 2):
        assert table[i, j] == stage_cost(graph, i, j).parameter_bytes
    whole = stage_cost(graph, 0, 5)
    assert (whole.parameter_bytes, whole.activation_in_bytes, whole.activation_out_bytes) == (2768, 192, 10)
    assert stage_cost(graph, 0, 2).activation_out_bytes == 512  # a and b both leave the stage


def test_params_objective_puts_the_big_layer_alone(tiny):
    plan = balanced_plan(read_graph(str(tiny)), 2, "params")
    assert plan.cuts == [4]
    assert [s.parameter_bytes for s in plan.stages] == [168, 2600]


def test_macs_objective_is_optimal_and_avoids_the_two_tensor_cut(tiny):
    graph = read_graph(str(tiny))
    plan = balanced_plan(graph, 2, "macs")
    # +1 per op: costs 6913, 2305, 257, 257, 2561. Cut at 1 gives max(6913, 5380) = 6913, the best.
    assert plan.cuts == [1]
    assert plan.crossing == [(["a"], 256)]
    assert plan.balances()["macs"] == pytest.approx(6912 / ((6912 + 5376) / 2), rel=1e-3)


def test_split_of_the_handbuilt_model_is_bit_exact_at_every_cut(tiny):
    graph = read_graph(str(tiny))
    reference = whole_model_chain(tiny)
    for cuts in ([1], [2], [3], [4], [1, 2, 3, 4], [2, 4]):
        chain = _chain_of(split_model(graph, cuts))
        result = compare(chain, reference, sample_feeds(chain, 4, seed=2))
        assert result["mismatching_outputs"] == 0 and result["max_abs_difference"] == 0, cuts


def _brute_force(costs, stages, crossing):
    n = len(costs)
    best = None
    for cuts in itertools.combinations(range(1, n), stages - 1):
        bounds = (0, *cuts, n)
        worst = max(sum(costs[a:b]) for a, b in itertools.pairwise(bounds))
        value = (worst, sum(crossing[c] for c in cuts))
        best = value if best is None or value < best else best
    return best


@pytest.mark.parametrize("seed", range(20))
def test_dynamic_programme_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(4, 10))
    stages = int(rng.integers(2, min(n, 5) + 1))
    costs = rng.integers(1, 6, n).tolist()  # small integers: many ties, so the tie-break matters
    crossing = {c: int(rng.integers(1, 100)) for c in range(1, n)}
    prefix = np.concatenate([[0], np.cumsum(costs)])
    cuts = optimal_cuts(n, stages, lambda i, j: float(prefix[j] - prefix[i]), range(1, n), crossing.__getitem__)
    assert len(cuts) == stages - 1
    bounds = (0, *cuts, n)
    got = (max(sum(costs[a:b]) for a, b in itertools.pairwise(bounds)), sum(crossing[c] for c in cuts))
    assert got == _brute_force(costs, stages, crossing)


def test_balance_is_max_over_mean():
    assert balance([2, 2, 2]) == 1.0
    assert balance([1, 3]) == 1.5


def test_too_many_stages_and_unknown_objective_are_refused(tiny):
    graph = read_graph(str(tiny))
    with pytest.raises(GraphError, match="has 5 ops.*--stages 5 or fewer"):
        balanced_plan(graph, 6, "macs")
    with pytest.raises(GraphError, match="unknown objective 'speed'"):
        balanced_plan(graph, 2, "speed")
    with pytest.raises(GraphError, match="single tensor crosses"):
        balanced_plan(graph, 5, "macs", single_tensor=True)


@pytest.mark.parametrize("seed", range(10))
def test_required_cuts_are_always_made_and_the_rest_stays_optimal(seed):
    rng = np.random.default_rng(100 + seed)
    n = int(rng.integers(5, 10))
    required = sorted(rng.choice(np.arange(1, n), size=int(rng.integers(1, 3)), replace=False).tolist())
    stages = int(rng.integers(len(required) + 1, n + 1))
    costs = rng.integers(1, 6, n).tolist()
    crossing = {c: int(rng.integers(1, 100)) for c in range(1, n)}
    prefix = np.concatenate([[0], np.cumsum(costs)])
    cuts = optimal_cuts(n, stages, lambda i, j: float(prefix[j] - prefix[i]), range(1, n), crossing.__getitem__,
                        required=required)
    assert set(required) <= set(cuts) and len(cuts) == stages - 1
    best = None
    for combo in itertools.combinations(range(1, n), stages - 1):
        if not set(required) <= set(combo):
            continue
        bounds = (0, *combo, n)
        value = (max(sum(costs[a:b]) for a, b in itertools.pairwise(bounds)), sum(crossing[c] for c in combo))
        best = value if best is None or value < best else best
    bounds = (0, *cuts, n)
    assert (max(sum(costs[a:b]) for a, b in itertools.pairwise(bounds)), sum(crossing[c] for c in cuts)) == best


def test_isolating_plan_gives_each_unsupported_run_its_own_cpu_stage(tiny):
    from quantize.partition import isolating_plan, support_runs
    assert support_runs([True, False, False, True, True]) == [(0, 1, True), (1, 3, False), (3, 5, True)]
    graph = read_graph(str(tiny))
    plan = isolating_plan(graph, [True, False, True, True, True])
    assert plan.cuts == [1, 2] and plan.targets == ["tpu", "cpu", "tpu"]
    wider = isolating_plan(graph, [True, False, True, True, True], stages=4, objective="params")
    assert {1, 2} <= set(wider.cuts) and wider.targets.count("cpu") == 1
    assert wider.cuts == [1, 2, 4]  # the extra cut isolates the 2600-byte fully connected layer
    with pytest.raises(GraphError, match="needs at least 3 stages"):
        isolating_plan(graph, [True, False, True, True, True], stages=2)
