"""Run stages one after another, handing raw int8/uint8 tensors between them by name.

Like Coral's pipeline runner, stage k's inputs are matched to earlier stages'
outputs (or to the chain's inputs) by tensor name; this is checked once, when
the chain is built. A tensor produced two stages earlier is simply kept until
a later stage asks for it.
"""
import time

import numpy as np

from deploy.core.exits import exit_taken
from deploy.core.fallback import run_stage
from deploy.core.tensors import numpy_dtype, run_interpreter  # noqa: F401  (run_interpreter: public here too)
from runfolder.errors import UserError


class ChainError(UserError, ValueError):
    """The stages do not fit together, or an input does not fit the chain."""


def check_feed(feeds, described, where):
    """Checks arrays against tensor descriptions (name, shape, dtype).

    Raises:
      ChainError: naming the tensor, what was given and what is expected.
    """
    for tensor in described:
        name = tensor["name"]
        if name not in feeds:
            raise ChainError(f"{where}: input '{name}' is missing; given: {', '.join(feeds) or 'nothing'}")
        value = np.asarray(feeds[name])
        expected = numpy_dtype(tensor["dtype"])
        if value.dtype != expected:
            raise ChainError(f"{where}: input '{name}' has dtype {value.dtype}, expected {expected} "
                             "(quantize float inputs with the tensor's scale and zero point first)")
        if list(value.shape) != list(tensor["shape"]):
            raise ChainError(f"{where}: input '{name}' has shape {list(value.shape)}, "
                             f"expected {list(tensor['shape'])}")


class StageChain:
    """Stages run in order on one thread; see deploy.core.stages.load_stages for loading."""

    def __init__(self, stages, output_names=None, input_names=None, exits=None, normalization=None,
                 output_kind=None):
        """Checks that every stage input is a model input or an earlier stage's output.

        Args:
          stages: LoadedStage objects (anything with ``index``, ``inputs``,
            ``outputs`` and ``interpreter``).
          output_names: the model's outputs; default: the last stage's outputs.
          input_names: the model's inputs; default: the first stage's inputs.
            A later stage may read a model input directly (e.g. a second input
            that joins the graph late).
          exits: {stage index: stage manifest entry} of stages ending at an
            early-exit head (``deploy.core.exits.stage_exits``); used by ``run_with_exit``.
          normalization: (mean, std) of the model input (``datasets.normalization_of``); None: [0, 1].
          output_kind: "probabilities" or "logits" (``datasets.preprocess.output_kind_of``); None: as the
            output's quantization says (``deploy.core.tensors.class_scores``).
        """
        self.exits = dict(exits or {})
        self.normalization, self.output_kind = normalization, output_kind
        if not stages:
            raise ChainError("the chain has no stages")
        self.stages = list(stages)
        allowed = set(input_names) if input_names else {t["name"] for t in self.stages[0].inputs}
        available, self.inputs = set(), []
        for stage in self.stages:
            for tensor in stage.inputs:
                if tensor["name"] in available:
                    continue
                if tensor["name"] not in allowed:
                    raise ChainError(
                        f"stage {stage.index} needs tensor '{tensor['name']}', which no earlier stage "
                        "produces; the stage files do not belong together (re-run `python -m quantize`)")
                self.inputs.append(tensor)
                available.add(tensor["name"])
            available.update(t["name"] for t in stage.outputs)
        names = output_names or [t["name"] for t in self.stages[-1].outputs]
        described = {t["name"]: t for s in self.stages for t in s.outputs}
        missing = [n for n in names if n not in described]
        if missing:
            raise ChainError(f"model outputs {missing} are produced by no stage")
        self.outputs = [described[n] for n in names]

    def run(self, feeds, timings=None):
        """Runs all stages on one sample.

        Args:
          feeds: {input name: array} of the chain's inputs, already quantized.
          timings: optional list; per-stage seconds are appended as a list.
        Returns:
          {output name: array}.
        """
        check_feed(feeds, self.inputs, "chain")
        values = dict(feeds)
        spent = []
        for stage in self.stages:
            start = time.perf_counter()
            values.update(run_stage(stage, values))
            spent.append(time.perf_counter() - start)
        if timings is not None:
            timings.append(spent)
        return {t["name"]: values[t["name"]] for t in self.outputs}

    def run_with_exit(self, feeds, exit_threshold=None, timings=None):
        """Runs stages until an exit head is confident enough (seed 001), skipping the rest.

        Args:
          exit_threshold: None runs every stage (as ``run``); else the top softmax
            probability at which a stage's exit is taken.
          timings: optional list; per-stage seconds are appended, 0.0 for skipped stages.
        Returns:
          (outputs, exit_stage): ``run``'s outputs and None when no exit was taken,
          else ({exit output name: logits array}, index of the stage whose exit was taken).
        """
        check_feed(feeds, self.inputs, "chain")
        values = dict(feeds)
        spent = [0.0] * len(self.stages)
        taken = None
        for k, stage in enumerate(self.stages):
            start = time.perf_counter()
            values.update(run_stage(stage, values))
            spent[k] = time.perf_counter() - start
            entry = self.exits.get(stage.index)
            if entry is not None and k < len(self.stages) - 1:
                taken = exit_taken(entry, values, exit_threshold)
                if taken:
                    break
        if timings is not None:
            timings.append(spent)
        if taken:
            return {taken: values[taken]}, stage.index
        return {t["name"]: values[t["name"]] for t in self.outputs}, None

    def exit_output(self, stage_index):
        """Description (name, scale, zero point, ...) of the exit output of a stage."""
        name = self.exits[stage_index]["exit"]["output"]
        stage = next(s for s in self.stages if s.index == stage_index)
        return next(t for t in stage.outputs if t["name"] == name)
