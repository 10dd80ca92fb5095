"""A chain of stage servers seen as a chain: what deploy.core.classify needs, over a ChainClient.

With it, `deploy chain` and the HTTP API classify through the network exactly as the
in-process StageChain does, including replies from an early-exit head.
"""
import time

from datasets.preprocess import normalization_of, output_kind_of

# Early exit over the network is decided by each server's --exit-threshold, not by the client.
SERVERS_DECIDE = "set by each serve-stage --exit-threshold"


class RemoteChain:
    """What deploy.core.classify needs from a chain (inputs, outputs, run, run_with_exit) over a ChainClient."""

    def __init__(self, client, manifest):
        from deploy.net import plan
        plans = plan.chain_plans(manifest)
        self.client, self.inputs, self.outputs = client, list(plans[0].receives), list(plans[0].returns)
        self.stages = {entry["index"]: entry for entry in manifest.get("stages") or []}
        self.normalization, self.output_kind = normalization_of(manifest), output_kind_of(manifest)

    def run(self, feeds, timings=None):
        return self.run_with_exit(feeds, None, timings)[0]

    def run_with_exit(self, feeds, exit_threshold=None, timings=None):
        """(outputs, exit stage or None); ``exit_threshold`` is ignored: the servers decide."""
        start = time.perf_counter()
        outputs, exit_stage = self.client.run_with_exit(feeds)
        if timings is not None:
            timings.append([time.perf_counter() - start])
        return outputs, exit_stage

    def exit_output(self, stage_index):
        """Description of the exit output a stage's server answered with."""
        entry = self.stages[stage_index]
        return next(t for t in entry["outputs"] if t["name"] == entry["exit"]["output"])
