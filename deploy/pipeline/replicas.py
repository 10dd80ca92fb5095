"""Copies of a slow stage working at the same time inside a pipeline, results kept in input order.

With more Edge TPUs than stages, the spare ones can each hold a copy of the slowest stage (data
parallel inside the pipeline). One thread per replicated stage takes its requests in order and hands
each to a free copy; a second thread waits for them in that same order and passes them on, so the
next stage sees exactly the order a single copy would give. At most one request per copy is inside.

``plan_copies`` chooses which stages get the spare devices from per-stage times (estimated or
measured): each spare goes to the stage that is slowest once divided among its copies.
"""
import concurrent.futures
import threading

from deploy.core import edgetpu
from deploy.core.devices import tpu_names
from deploy.core.stages import StageError, load_stages
from deploy.pipeline.waitqueue import CLOSED, PipelineClosed, WaitQueue


def check_copies(chain, copies):
    """{stage position: [Stage]} with every copy checked to take and make the same tensors."""
    copies = {int(k): list(v) for k, v in (copies or {}).items() if v}
    for k, extra in copies.items():
        if not 0 <= k < len(chain.stages):
            raise StageError(f"copies for stage position {k}: the chain has stages 0 to {len(chain.stages) - 1}")
        stage = chain.stages[k]
        names = ({t["name"] for t in stage.inputs}, {t["name"] for t in stage.outputs})
        for copy in extra:
            if ({t["name"] for t in copy.inputs}, {t["name"] for t in copy.outputs}) != names:
                raise StageError(f"a copy of stage {stage.index} ({copy.path}) takes or makes other tensors; "
                                 "copies must be the same stage file")
    return copies


def plan_copies(stage_ms, devices):
    """How many copies each stage gets (at least 1) when ``devices`` >= len(stage_ms) run them:
    each spare device goes to the stage with the largest time per copy."""
    counts = [1] * len(stage_ms)
    for _ in range(max(0, devices - len(stage_ms))):
        slowest = max(range(len(stage_ms)), key=lambda k: stage_ms[k] / counts[k])
        counts[slowest] += 1
    return counts


def parse_copies(text, stage_count):
    """{position: total copies} from "1:3,2:2" (stage 1 three times, stage 2 twice)."""
    counts = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        position, _, count = part.partition(":")
        if not (position.isdigit() and count.isdigit() and int(count) >= 1):
            raise StageError(f"--replicas {text!r}: give STAGE:COPIES pairs, e.g. 1:3,2:2, or 'auto'")
        if int(position) >= stage_count:
            raise StageError(f"--replicas {text!r}: the run has stages 0 to {stage_count - 1}")
        counts[int(position)] = int(count)
    return counts


def spare_tpus(chain, tpus=None):
    """Names of the Edge TPUs found that no stage of ``chain`` runs on."""
    used = {s.placement.split(":", 1)[1] for s in chain.stages if s.placement.startswith("edgetpu:")}
    found = edgetpu.list_edge_tpus() if tpus is None else tpus
    return [name for name in tpu_names(found) if name not in used]


def stage_times(manifest, chain):
    """Per stage the time to divide among copies: the Edge TPU estimate for a stage on a TPU, the
    measured CPU latency (deploy --eval) for one on the CPU when there is one, else the estimate."""
    estimates = ((manifest.get("split") or {}).get("balance") or {}).get("stage_edgetpu_ms_estimated") or []
    measured = {s["index"]: s.get("latency_ms_median") for s in ((manifest.get("deploy") or {}).get("eval") or {})
                .get("stages", [])}
    times = []
    for k, stage in enumerate(chain.stages):
        estimate = estimates[k] if k < len(estimates) else None
        cpu = measured.get(stage.index) if not stage.placement.startswith("edgetpu") else None
        times.append(cpu or estimate or 1.0)
    return times


def load_copies(run_dir, manifest, counts, runtime, spare=()):
    """{position: [LoadedStage]}: ``counts[position] - 1`` more copies of each stage, each on the next
    spare Edge TPU (compiled stages only), else on the CPU. ``runtime``: a ``deploy.core.open.Runtime``."""
    spare, copies = list(spare), {}
    for k, total in sorted(counts.items()):
        entry = manifest["stages"][k]
        for _ in range(total - 1):
            device = spare.pop(0) if spare and entry.get("compiled") else "cpu"
            one = dict(manifest, stages=[entry])
            copies.setdefault(k, []).extend(load_stages(run_dir, one, device, runtime.threads, runtime.tpus,
                                                        runtime.xnnpack, invoke_timeout=runtime.invoke_timeout))
    return copies


def work_replicated(source, sink, stages, process, end, register):
    """A replicated stage's worker: requests from ``source`` to ``sink`` in order, each run by
    ``process(stage, item)`` on a free one of ``stages`` (the stage, then its copies). ``end`` is the
    end-of-stream marker; ``register(queues, thread)`` lets the runner abort and join what it makes."""
    free, order = WaitQueue(), WaitQueue(len(stages))
    for stage in stages:
        free.put(stage)
    pool = concurrent.futures.ThreadPoolExecutor(len(stages), thread_name_prefix=f"stage-{stages[0].index}-copy")
    forwarder = threading.Thread(target=_forward, args=(order, sink, end), daemon=True,
                                 name=f"stage-{stages[0].index}-order")
    register([free, order], forwarder)
    forwarder.start()

    def run(stage, item):
        try:
            return process(stage, item)
        finally:
            try:
                free.put(stage)
            except PipelineClosed:
                pass

    try:
        while True:
            item = source.get()
            if item is end:
                order.put(_done(item))   # the order thread passes it on after every request before it
                pool.shutdown(wait=True)
                return
            stage = CLOSED if item is CLOSED else free.get()
            if stage is CLOSED:
                break
            order.put(pool.submit(run, stage, item))
    except PipelineClosed:
        pass
    order.abort()   # closed: the order thread stops too
    free.abort()
    pool.shutdown(wait=True)


def _done(item):
    future = concurrent.futures.Future()
    future.set_result(item)
    return future


def _forward(order, sink, end):
    while True:
        future = order.get()
        if future is CLOSED:
            return
        item = future.result()
        try:
            sink.put(item)
        except PipelineClosed:
            return
        if item is end:
            return
