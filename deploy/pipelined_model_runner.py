"""``from deploy.pipelined_model_runner import PipelinedModelRunner``, as the README promises; the code is in
``deploy.pipeline.pipelined_model_runner``."""
from deploy.pipeline.pipelined_model_runner import PipelinedModelRunner

__all__ = ["PipelinedModelRunner"]
