"""What each stage of a served chain receives, runs and hands on, read from the run's manifest.

Stage K receives every tensor that it or a later stage reads (or that is a chain
output) and that no stage from K on produces: so a tensor made by stage 0 and
read by stage 2 travels through stage 1 untouched. The last stage returns the
chain's outputs (the split's model outputs, else its own outputs), as
``deploy.core.open.open_chain`` does in-process.
"""
import dataclasses

import runfolder
from runfolder.errors import OptionError


@dataclasses.dataclass(frozen=True)
class StagePlan:
    index: int
    stages: int
    entry: dict            # the stage's manifest entry
    receives: tuple        # tensor descriptions a request to this stage carries, in a fixed order
    sends: tuple           # what it forwards to the next stage (empty for the last)
    returns: tuple         # the chain's outputs

    @property
    def is_last(self):
        return self.index == self.stages - 1


def chain_plans(manifest, run_dir="the run folder"):
    """One StagePlan per stage of the manifest."""
    stages = runfolder.require(manifest, "stages", run_dir, "deploy serve-stage")
    split = manifest.get("split") or {}
    described = {}
    for tensor in split.get("model_inputs", []):
        described.setdefault(tensor["name"], tensor)
    for entry in stages:
        for tensor in entry["inputs"] + entry["outputs"]:
            described.setdefault(tensor["name"], tensor)
    produced = {t["name"] for e in stages for t in e["outputs"]}
    wanted = [t["name"] for t in split.get("model_outputs", [])]
    outputs = wanted if wanted and set(wanted) <= produced else [t["name"] for t in stages[-1]["outputs"]]
    returns = tuple(described[name] for name in outputs)
    receives = []
    for k in range(len(stages)):
        later = stages[k:]
        read = _unique([t["name"] for e in later for t in e["inputs"]] + outputs)
        made_later = {t["name"] for e in later for t in e["outputs"]}
        receives.append(tuple(described[name] for name in read if name not in made_later))
    return [StagePlan(k, len(stages), stages[k], receives[k], receives[k + 1] if k + 1 < len(stages) else (),
                      returns) for k in range(len(stages))]


def stage_plan(manifest, index, run_dir="the run folder"):
    """The StagePlan of stage ``index``; ValueError naming the valid range otherwise."""
    plans = chain_plans(manifest, run_dir)
    if not 0 <= index < len(plans):
        raise OptionError(f"--stage {index} does not exist: the run has stages 0 to {len(plans) - 1}")
    return plans[index]


def _unique(names):
    return list(dict.fromkeys(names))
