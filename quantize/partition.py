"""Choose where to cut a model into stages: exactly, for a chosen objective.

Objectives (``--balance``):
  macs     computation per stage, as seed 002 balanced MobileNetV2 over five Pis;
  params   constant bytes per stage, as ``edgetpu_compiler --num_segments`` does,
           so each stage's weights fit one Edge TPU's on-chip memory; when one
           big layer fixes the largest stage, the other stages are still made
           as even as they can be (least sum of squares), as the compiler's
           "about the same amount of parameter data" per segment intends;
  latency  measured CPU latency per stage, as Coral's ``partition_with_profiling``:
           each op is timed alone with the real interpreter, the cuts are
           optimised, the stages are timed, and the op costs are corrected by
           what the stages really took, for a few rounds;
  edgetpu  estimated Edge TPU time per stage (``tflitegraph.edgetpu_latency``):
           compute, parameters beyond the on-chip cache streamed every time, and
           the bytes crossing each cut over the link ("edgetpu:usb2" for USB 2).

A pipeline runs at the pace of its slowest stage, so each objective minimises
the largest stage cost. The optimisation is an exact dynamic programme over
the op order (any position is a candidate cut; several tensors may cross).
Among the optimal plans the one with the fewest bytes crossing the cuts wins,
found exactly by a second pass constrained to that optimum.
"""
import dataclasses
import itertools

import numpy as np

from quantize.costs import balance, parameter_table, stage_cost
from tflitegraph import edgetpu_latency
from tflitegraph.graph import GraphError

OBJECTIVES = ("macs", "params", "latency", "edgetpu")


@dataclasses.dataclass
class Plan:
    cuts: list                 # op positions where stages begin (excluding 0)
    objective: str             # macs | params | latency | cut-after
    stages: list               # StageCost per stage
    crossing: list             # per cut: (tensor names, bytes)
    latency_ms: list = None    # estimated CPU ms per stage, when profiled
    measured_ms: list = None   # measured CPU ms per stage (latency objective)
    rounds: list = dataclasses.field(default_factory=list)  # latency refinement history
    targets: list = None       # per stage "tpu" or "cpu" when unsupported ops were isolated
    edgetpu_ms: list = None    # estimated ms per stage on its own Edge TPU (an estimate: no TPU was used)
    link: str = "usb3"         # the link that estimate assumes
    estimates: list = None     # per stage the estimate's record (edgetpu_latency.estimate_record)
    refined_by: str = None     # "compiler": cuts refined by compiling their stages (quantize.compiled_cuts)

    def balances(self):
        """max/mean of each stage cost that is known, by name."""
        out = {"macs": balance([s.macs for s in self.stages]),
               "params": balance([s.parameter_bytes for s in self.stages])}
        if self.latency_ms:
            out["latency_estimated"] = balance(self.latency_ms)
        if self.measured_ms:
            out["latency_measured"] = balance(self.measured_ms)
        if self.edgetpu_ms:
            out["edgetpu_estimated"] = balance(self.edgetpu_ms)
        return out

    def to_dict(self):
        """The plan as plain data for the manifest."""
        return {
            "objective": self.objective, "cut_positions": list(self.cuts),
            "max_over_mean": {k: round(v, 4) for k, v in self.balances().items()},
            "crossing_bytes": [nbytes for _, nbytes in self.crossing],
            "stage_latency_ms_estimated": _rounded(self.latency_ms),
            "stage_latency_ms_measured": _rounded(self.measured_ms),
            "refinement_rounds": self.rounds,
            "targets": self.targets,
            "stage_edgetpu_ms_estimated": _rounded(self.edgetpu_ms),
            "edgetpu_link": self.link,
            "refined_by": self.refined_by,
        }


def _rounded(values):
    return None if values is None else [round(v, 4) for v in values]


def candidate_cuts(graph, single_tensor=False):
    """Positions 1..n-1; with ``single_tensor`` only those where exactly one tensor crosses."""
    positions = list(range(1, len(graph.ops)))
    if single_tensor:
        positions = [p for p in positions if len(graph.crossing(p)) == 1]
    return positions


def optimal_cuts(n, stages, range_cost, candidates, crossing_bytes, even=False, required=()):
    """Cuts of ops [0, n) into ``stages`` ranges minimising the largest ``range_cost(i, j)``.

    ``required`` cuts are always made (no stage may span one).

    Ties go to the smallest total ``crossing_bytes(p)`` over the cuts; with
    ``even``, first to the smallest sum of squared stage costs (the other
    stages as even as they can be). Exact: pass 1 finds the optimal largest
    cost by dynamic programming; pass 2 minimises the tie-breaks, which add
    up over stages, over the plans whose every stage is within it.
    Raises:
      GraphError: not enough candidate cuts for that many stages.
    """
    points = [0] + sorted(set(candidates) | set(required)) + [n]
    inf = float("inf")

    def allowed(i, j):
        return i < j and not any(points[i] < r < points[j] for r in required)

    cost = [[range_cost(points[i], points[j]) if allowed(i, j) else inf for j in range(len(points))]
            for i in range(len(points))]
    worst = [[inf] * len(points) for _ in range(stages + 1)]
    worst[0][0] = 0.0
    for s in range(1, stages + 1):
        for j in range(1, len(points)):
            worst[s][j] = min((max(worst[s - 1][i], cost[i][j]) for i in range(j)), default=inf)
    best = worst[stages][-1]
    if best == inf:
        raise GraphError(f"only {len(points) - 2} places to cut ({len(required)} of them required); "
                         f"cannot make {stages} stages")
    limit = best + 1e-9 * max(1.0, abs(best))
    cross = [crossing_bytes(p) if 0 < p < n else 0 for p in points]
    total = [[(inf, inf)] * len(points) for _ in range(stages + 1)]
    back = [[None] * len(points) for _ in range(stages + 1)]
    total[0][0] = (0.0, 0)
    for s in range(1, stages + 1):
        for j in range(1, len(points)):
            for i in range(j):
                if cost[i][j] <= limit and total[s - 1][i][0] < inf:
                    prev = total[s - 1][i]
                    value = (prev[0] + (cost[i][j] ** 2 if even else 0.0), prev[1] + cross[i])
                    if value < total[s][j]:
                        total[s][j], back[s][j] = value, i
    cuts, j = [], len(points) - 1
    for s in range(stages, 0, -1):
        j = back[s][j]
        if j:
            cuts.append(points[j])
    return sorted(cuts)


def _prefix_cost(values):
    prefix = np.concatenate([[0.0], np.cumsum(np.asarray(values, dtype=np.float64))])
    return lambda i, j: float(prefix[j] - prefix[i])


def objective_link(objective):
    """The link an objective's Edge TPU estimate assumes: "edgetpu:usb2" -> usb2; usb3 otherwise."""
    name, _, link = objective.partition(":")
    if link and (name != "edgetpu" or link not in edgetpu_latency.LINKS):
        raise GraphError(f"unknown objective '{objective}'; the link goes with edgetpu: "
                         f"{', '.join('edgetpu:' + k for k in edgetpu_latency.LINKS)}")
    return link or "usb3"


def edgetpu_cost(graph, link, latencies=None, supported=None, cache_bytes=edgetpu_latency.USABLE_ON_CHIP_BYTES):
    """The edgetpu objective's ``range_cost``: ``supported`` (per op: can the Edge TPU run it) charges
    the ops the compiler would leave on the CPU their measured ``latencies``."""
    placed = None
    if supported is not None and not all(supported):
        if latencies is None:
            raise ValueError("the edgetpu objective of a model with ops the Edge TPU cannot run needs "
                             "per-op CPU latencies (quantize.profile.op_latencies)")
        placed = edgetpu_latency.placed_tables(graph, supported, latencies)
    return edgetpu_latency.range_cost(graph, parameter_table(graph), link, placed=placed, cache_bytes=cache_bytes)


def objective_cost(graph, objective, latencies=None, supported=None):
    """``range_cost(i, j)`` for one objective (``edgetpu_cost`` for edgetpu)."""
    if objective.partition(":")[0] == "edgetpu":
        return edgetpu_cost(graph, objective_link(objective), latencies, supported)
    if objective == "macs":
        return _prefix_cost([op.macs + 1 for op in graph.ops])  # +1: no op is free
    if objective == "params":
        table = parameter_table(graph)
        return lambda i, j: float(table[i, j])
    if objective == "latency":
        if latencies is None:
            raise ValueError("the latency objective needs per-op latencies (quantize.profile.op_latencies)")
        return _prefix_cost(latencies)
    raise GraphError(f"unknown objective '{objective}'; choose one of {', '.join(OBJECTIVES)}")


def check_stage_count(graph, stages):
    n = len(graph.ops)
    if stages < 1:
        raise GraphError(f"--stages must be at least 1, got {stages}")
    if stages > n:
        raise GraphError(f"the model has {n} ops, so it cannot be cut into {stages} stages; use --stages {n} "
                         "or fewer")


def make_plan(graph, cuts, objective, latencies=None, measured=None, rounds=None, supported=None):
    """A Plan for given cuts, with every stage's costs and every cut's crossing tensors, and its Edge TPU
    estimate (ops ``supported`` says the compiler leaves on the CPU at their ``latencies``)."""
    bounds = [0] + list(cuts) + [len(graph.ops)]
    stages = [stage_cost(graph, a, b) for a, b in itertools.pairwise(bounds)]
    crossing = [([graph.tensors[t].name for t in graph.crossing(c)], graph.crossing_bytes(c)) for c in cuts]
    latency_ms = None
    if latencies is not None:
        latency_ms = [float(sum(latencies[a:b])) for a, b in itertools.pairwise(bounds)]
    base = objective.removeprefix("isolate-")
    link = objective_link(base) if base.startswith("edgetpu") else "usb3"
    estimates = [edgetpu_latency.stage_estimate(graph, a, b, link, supported, latencies)
                 for a, b in itertools.pairwise(bounds)]
    return Plan(list(cuts), objective, stages, crossing, latency_ms, measured, rounds or [],
                edgetpu_ms=[e["ms"] for e in estimates], link=link, estimates=estimates)


def balanced_plan(graph, stages, objective="macs", latencies=None, single_tensor=False,
                  refine_rounds=2, measure=None, supported=None):
    """The optimal plan for ``objective``.

    Args:
      latencies: per-op CPU ms (needed for ``latency``, and for ``edgetpu`` when some op is not
        ``supported``; shown in the plan otherwise).
      supported: per op, whether the Edge TPU can run it (``quantize.edgetpu_check.supported_ops``).
      refine_rounds: for ``latency``, rounds of timing the chosen stages and
        correcting the op costs by measured/estimated stage time.
      measure: callable(cuts) -> measured ms per stage (quantize.profile.stage_latencies).
    """
    check_stage_count(graph, stages)
    candidates = candidate_cuts(graph, single_tensor)
    if single_tensor and len(candidates) < stages - 1:
        raise GraphError(f"only {len(candidates)} places where a single tensor crosses; cannot make "
                         f"{stages} stages with --single-tensor-cuts (drop it to allow any cut)")
    cuts = optimal_cuts(len(graph.ops), stages, objective_cost(graph, objective, latencies, supported),
                        candidates, graph.crossing_bytes, even=objective == "params")
    if objective != "latency" or measure is None:
        return make_plan(graph, cuts, objective, latencies, supported=supported)
    costs = list(latencies)
    history, best = [], None
    for round_ in range(refine_rounds + 1):
        measured = measure(cuts)
        history.append({"cut_positions": list(cuts), "measured_ms": [round(m, 4) for m in measured]})
        if best is None or max(measured) < max(best[1]):
            best = (cuts, measured)
        if round_ == refine_rounds:
            break
        bounds = [0] + list(cuts) + [len(graph.ops)]
        for (a, b), m in zip(itertools.pairwise(bounds), measured):
            estimate = sum(costs[a:b])
            if estimate > 0:
                costs[a:b] = [c * m / estimate for c in costs[a:b]]
        cuts = optimal_cuts(len(graph.ops), stages, _prefix_cost(costs), candidates, graph.crossing_bytes)
    return make_plan(graph, best[0], objective, latencies, best[1], history, supported)


def cut_after_plan(graph, cuts, latencies=None, supported=None):
    """The Plan of cuts the user chose by name."""
    return make_plan(graph, cuts, "cut-after", latencies, supported=supported)


def support_runs(supported):
    """Maximal runs of ops that are all supported or all unsupported: [(start, end, supported)]."""
    runs = []
    for position, ok in enumerate(supported):
        if runs and runs[-1][2] == bool(ok):
            runs[-1] = (runs[-1][0], position + 1, bool(ok))
        else:
            runs.append((position, position + 1, bool(ok)))
    return runs


def isolating_plan(graph, supported, stages=None, objective="macs", latencies=None):
    """A plan where every run of unsupported ops is its own CPU stage and all other stages map fully.

    The Edge TPU compiler maps ops only up to the first one it cannot; the
    rest of that model runs on the CPU even where supported. Cutting at every
    boundary between supported and unsupported runs gives each supported run
    its own compiled stage. Extra stages (``stages`` above the number of
    runs) are placed inside the runs by ``objective``.
    Args:
      supported: per op, whether the Edge TPU can run it (compile.preflight.check.op_support).
    Raises:
      GraphError: ``stages`` is below the number of runs.
    """
    runs = support_runs(supported)
    required = [start for start, _, _ in runs[1:]]
    stages = stages or len(runs)
    if stages < len(runs):
        raise GraphError(f"isolating unsupported ops needs at least {len(runs)} stages "
                         f"({sum(not ok for *_, ok in runs)} CPU run(s) between supported ones); "
                         f"got --stages {stages}")
    check_stage_count(graph, stages)
    cuts = optimal_cuts(len(graph.ops), stages, objective_cost(graph, objective, latencies, supported),
                        candidate_cuts(graph), graph.crossing_bytes, even=objective == "params",
                        required=required)
    plan = make_plan(graph, cuts, f"isolate-{objective}", latencies, supported=supported)
    plan.targets = ["tpu" if supported[s.start] else "cpu" for s in plan.stages]
    return plan
