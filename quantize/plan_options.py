"""How a model is cut into stages, as one value: the CLI builds it, ``plan_split`` reads it,
the manifest records the profiling part of it. Standard library only."""
import dataclasses

from quantize import DEFAULT_STAGES


@dataclasses.dataclass(frozen=True)
class PlanOptions:
    """What to cut and how.

    ``stages`` None: ``DEFAULT_STAGES``, or with ``isolate_unsupported`` as few as that takes.
    ``cut_after``: tensor or Keras layer names to cut after (then ``stages`` is not used).
    ``balance``: what the cuts even out (``quantize.partition.OBJECTIVES``); ``link``: the Edge TPU's
    link (usb3, usb2, pcie) that ``balance="edgetpu"`` and the stage estimates assume.
    ``single_tensor``: only cut where exactly one tensor crosses.
    ``profile``: time each op on the CPU even when ``balance`` is not latency (for the latency column);
    ``runs``, ``threads`` and ``xnnpack`` say how.
    ``profile_cuts``: refine edgetpu cuts by compiling their stages with ``compiler`` (None: on PATH),
    ``profile_rounds`` rounds at most (``quantize.compiled_cuts``).
    """
    stages: int = None
    cut_after: tuple = ()
    balance: str = "macs"
    single_tensor: bool = False
    isolate_unsupported: bool = False
    profile: bool = False
    runs: int = 30
    threads: int = 1
    xnnpack: bool = True
    link: str = "usb3"
    profile_cuts: bool = False
    compiler: str = None
    profile_rounds: int = 4

    def objective(self):
        """The partitioner's objective: ``balance``, with the link for edgetpu ("edgetpu:usb2")."""
        return f"edgetpu:{self.link}" if self.balance == "edgetpu" else self.balance

    def stage_count(self):
        """The stages to balance over when ``stages`` is not given."""
        return self.stages or DEFAULT_STAGES

    def __post_init__(self):
        object.__setattr__(self, "cut_after", tuple(self.cut_after or ()))

    def times_ops(self):
        """True when planning profiles every op on the CPU."""
        return self.balance == "latency" and not self.cut_after or self.profile or self.profile_cuts

    def profile_record(self):
        """How the ops were timed, for the manifest's ``split.balance.profile``."""
        return {"runs": self.runs, "threads": self.threads, "kernels": "xnnpack" if self.xnnpack else "builtin"}
