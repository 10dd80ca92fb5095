"""``--profile-cuts``: Edge TPU cuts refined by compiling the stages they make with the real compiler.

The estimate guesses what each stage streams (parameters beyond ~7 MiB) and which ops land on the CPU
(the pre-flight rule). libcoral's ``partition_with_profiling`` refines cuts by timing segments on N
real Edge TPUs; this refines them by the compiler's own figures, which need no TPU: each stage of the
best plan is compiled, and its cost is redone with the off-chip bytes from the compiler's output and
the ops its ``_edgetpu.tflite`` kept on the CPU (at their measured CPU time). The plan is then chosen
again with those costs, the ranges not compiled yet estimated with the cache size the compiler's
figures show; it stops when every stage of the best plan has been compiled (the plan is optimal with
its own stages known exactly) or after ``rounds`` rounds, keeping the best plan whose stages were all
compiled.
"""
import dataclasses
import pathlib
import statistics
import tempfile

from compile.compiler import CompilerFlags, CompilerMissing, compile_options, find_compiler, run_compiler, tail
from compile.compiler_log import parse_compiler_output
from compile.preflight.placement import compiled_placement
from quantize.costs import parameter_table
from quantize.partition import candidate_cuts, objective_link, optimal_cuts
from quantize.split import extract_stage
from tflitegraph import edgetpu_latency, schema as fb
from tflitegraph.graph import GraphError

INFINITE = float("inf")


@dataclasses.dataclass(frozen=True)
class CompiledCuts:
    """How to refine: the compiler (None: edgetpu_compiler on PATH), seconds per compile, rounds at most."""
    compiler: str = None
    timeout: float = 180.0
    rounds: int = 4


def find(options):
    """The compiler's path, or a GraphError saying what --profile-cuts needs."""
    try:
        return find_compiler(options.compiler)
    except CompilerMissing as exc:
        raise GraphError(f"--profile-cuts compiles candidate stages with edgetpu_compiler: {exc}. Install it, "
                         "pass --compiler PATH, or drop --profile-cuts (the cuts then rest on the estimate "
                         "alone; `python -m compile` still records the compiler's figures per stage)") from exc


def compile_range(graph, start, end, compiler, out_dir, timeout=180.0):
    """Compiles ops [start, end) as one stage; returns what the compiler reported of it:
    {"off_chip_bytes", "on_chip_bytes", "cpu_positions", "compile_ms"} or {"refused": message}."""
    stage = pathlib.Path(out_dir) / f"ops_{start}_{end}.tflite"
    stage.write_bytes(fb.model_to_bytes(extract_stage(graph, start, end)[0]))
    run = run_compiler(compiler, [*compile_options(out_dir, CompilerFlags(timeout=timeout)), stage.name],
                       cwd=out_dir, timeout=timeout + 5)
    report = parse_compiler_output(run.stdout)
    compiled = stage.with_name(stage.stem + "_edgetpu.tflite")
    if run.timed_out or run.returncode != 0 or not compiled.is_file():
        return {"refused": tail(run.stdout + run.stderr, 4) or f"exit status {run.returncode}"}
    placement = compiled_placement(str(stage), str(compiled))
    return {"off_chip_bytes": int(report["off_chip_memory_bytes"] or 0),
            "on_chip_bytes": int(report["on_chip_memory_bytes"] or 0),
            "cpu_positions": [start + p["index"] for p in placement if p["placement"] == "cpu"],
            "compile_ms": report["compile_time_ms"]}


def compiled_estimate(graph, start, end, facts, link, latencies):
    """The estimate record of ops [start, end) with the compiler's figures ``facts`` (compile_range)."""
    cpu = set(facts["cpu_positions"])
    features = edgetpu_latency.stage_features(graph, start, end, set(range(start, end)) - cpu)
    features["streamed_bytes"] = facts["off_chip_bytes"]
    cpu_ms = float(sum(latencies[p] for p in cpu)) if cpu else 0.0
    return dict(edgetpu_latency.estimate_record(features, link, cpu_ms), streamed_from="compiler")


def observed_cache(graph, known):
    """The parameter bytes one Edge TPU caches as the compiler reported it (median over the compiled
    stages that stream: their Edge TPU parameters minus what streams); None when none streams."""
    seen = []
    for (i, j), facts in known.items():
        if facts.get("off_chip_bytes"):
            tpu = set(range(i, j)) - set(facts["cpu_positions"])
            seen.append(edgetpu_latency.stage_features(graph, i, j, tpu)["parameter_bytes"] - facts["off_chip_bytes"])
    return int(statistics.median(seen)) if seen else None


def refine_cuts(graph, stages, objective, supported, latencies, options=CompiledCuts(), progress=print):
    """(cuts, estimates, history): the best cuts into ``stages`` for ``objective`` ("edgetpu:<link>")
    once the chosen stages' costs are the compiler's; ``estimates`` per stage, ``history`` per round
    {"cut_positions", "stage_ms_estimated", "stage_ms_compiled"}. ``latencies``: CPU ms of every op
    (``quantize.profile.op_latencies``), for what the compiler leaves on the CPU.
    Raises:
      GraphError: no compiler, or every plan has a stage the compiler refuses."""
    compiler, link = find(options), objective_link(objective)
    placed = edgetpu_latency.placed_tables(graph, supported, latencies) if not all(supported) else None
    table, known = parameter_table(graph), {}
    guess = edgetpu_latency.range_cost(graph, table, link, placed)

    def cost(i, j):
        facts = known.get((i, j))
        if facts is None:
            return guess(i, j)
        return INFINITE if "refused" in facts else compiled_estimate(graph, i, j, facts, link, latencies)["ms"]

    candidates, history, best = candidate_cuts(graph), [], None
    with tempfile.TemporaryDirectory(prefix="profile_cuts_") as work:
        for round_ in range(1, options.rounds + 1):
            cuts = optimal_cuts(len(graph.ops), stages, cost, candidates, graph.crossing_bytes)
            ranges = list(zip([0, *cuts], [*cuts, len(graph.ops)]))
            fresh = [r for r in ranges if r not in known]
            if not fresh:
                break   # the best plan, with its own stages' figures known
            progress(f"--profile-cuts round {round_}: compiling {len(fresh)} stage(s) of cuts {cuts}")
            for i, j in fresh:
                known[(i, j)] = compile_range(graph, i, j, compiler, work, options.timeout)
                if "refused" in known[(i, j)]:
                    progress(f"  ops {i}-{j - 1}: the compiler refused them ({known[(i, j)]['refused']})")
            compiled = [None if "refused" in known[r] else round(cost(*r), 4) for r in ranges]
            history.append({"cut_positions": list(cuts), "stage_ms_compiled": compiled,
                            "stage_ms_estimated": [round(guess(i, j), 4) for i, j in ranges]})
            if None not in compiled and (best is None or max(compiled) < best[0]):
                best = (max(compiled), cuts)
            cache = observed_cache(graph, known)
            if cache is not None:   # what the compiler caches, for the ranges not compiled yet
                guess = edgetpu_latency.range_cost(graph, table, link, placed, cache)
        else:
            progress(f"--profile-cuts: stopped after {options.rounds} rounds; keeping the best cuts whose stages "
                     "were all compiled")
        if fresh or best is None:
            if best is None:
                i, j = next(r for r in known if "refused" in known[r])
                raise GraphError(f"the compiler refused ops {i}-{j - 1} in every plan it was shown: "
                                 f"{known[(i, j)]['refused']}. Run `python -m compile check` on the model")
            cuts = best[1]
        ranges = list(zip([0, *cuts], [*cuts, len(graph.ops)]))
        estimates = [compiled_estimate(graph, i, j, known[(i, j)], link, latencies) for i, j in ranges]
    return cuts, estimates, history
