"""A drop-in for pycoral's ``pycoral.pipeline.pipelined_model_runner.PipelinedModelRunner``.

Google's pycoral stops at Python 3.9; code written for it runs unchanged on
modern Python with any tflite runtime by changing one import:

    from deploy.pipeline.pipelined_model_runner import PipelinedModelRunner

Semantics follow pycoral 2.0 (the last release) and libcoral's C++ runner:
  * ``PipelinedModelRunner(interpreters)``: interpreters with tensors allocated;
    interpreter i's inputs must be inputs of interpreter 0 or outputs of earlier
    ones, by tensor name, else ``ValueError('Interpreter i can not get its input
    tensors')``.
  * ``push({name: array})`` queues a request (non-blocking unless an input queue
    size was set); the arrays' bytes are what counts, so an image without the
    batch axis is fine, as in pycoral. ``push({})`` ends the stream: it returns
    when every request pushed before it has been computed. A further push
    raises ``RuntimeError('Pipeline was turned off before.')``.
  * ``pop()`` blocks for the next result, a dict {output name: array} of the
    last interpreter's outputs in input order; None once the stream has ended
    and everything was popped.
  * An interpreter error stops the pipeline: the next ``pop()`` raises
    ``RuntimeError('Segment K runner error: ...')``, and so does every ``push``
    after it.
  * ``set_input_queue_size`` / ``set_output_queue_size`` (unlimited by default;
    the queues between segments hold one request, as in libcoral), and
    ``interpreters()``.
pycoral 1.0 took a list of arrays in ``push`` and returned a list from ``pop``;
that form was dropped in 2.0 and is refused here with the fix in the message.
"""
import numpy as np

from deploy.core.chain import StageChain
from deploy.pipeline.runner import PipelinedRunner
from deploy.core.tensors import describe_details
from deploy.pipeline.waitqueue import PipelineClosed

_TURNED_OFF = "Pipeline was turned off before."


class _Segment:
    """What StageChain needs to know of one interpreter."""

    def __init__(self, index, interpreter):
        self.index, self.name, self.interpreter = index, f"segment_{index}", interpreter
        self.inputs = describe_details(interpreter.get_input_details())
        self.outputs = describe_details(interpreter.get_output_details())


def _names(details):
    return {d["name"] for d in details}


class PipelinedModelRunner:
    """Runs model segments (one interpreter each) in a pipeline, one thread per segment."""

    def __init__(self, interpreters):
        """Args: interpreters: list of tflite Interpreters, one per segment, in order.

        Raises:
          ValueError: no interpreters, or one whose inputs no earlier one produces.
        """
        self._runner = None
        if not interpreters:
            raise ValueError("At least one interpreter expected")
        available = _names(interpreters[0].get_input_details())
        for index, interpreter in enumerate(interpreters):
            if not _names(interpreter.get_input_details()) <= available:
                raise ValueError(f"Interpreter {index} can not get its input tensors")
            available |= _names(interpreter.get_output_details())
        self._interpreters = list(interpreters)
        first = interpreters[0].get_input_details()
        self._input_details = {d["name"]: d for d in first}
        self._output_shapes = {d["name"]: tuple(d["shape"]) for d in interpreters[-1].get_output_details()}
        chain = StageChain([_Segment(i, it) for i, it in enumerate(interpreters)],
                           input_names=[d["name"] for d in first])
        self._runner = PipelinedRunner(chain, queue_size=1, input_queue_size=0, output_queue_size=0)
        self._error = None

    def __del__(self):
        runner = getattr(self, "_runner", None)
        if runner is not None:
            runner.close()

    def set_input_queue_size(self, size):
        """Sets the most requests waiting for the first segment; ``push`` blocks beyond it."""
        self._runner.set_input_queue_size(size)

    def set_output_queue_size(self, size):
        """Sets the most results waiting to be popped; the pipeline stalls beyond it."""
        self._runner.set_output_queue_size(size)

    def interpreters(self):
        """The interpreters this runner was built from."""
        return self._interpreters

    def push(self, input_tensors):
        """Pushes one request {input name: numpy array}; an empty dict ends the stream.

        Raises:
          ValueError: wrong number of inputs, not numpy arrays, wrong dtype or size.
          TypeError: a list (pycoral 1.0's form).
          RuntimeError: after the end of the stream, or after an interpreter error.
        """
        self._raise_if_failed()
        if isinstance(input_tensors, (list, tuple)) and input_tensors:
            raise TypeError("push() takes a dict {input tensor name: numpy array}, as pycoral 2.0 does; "
                            "got a list (pycoral 1.0's form): pass dict(zip(names, arrays)) with names from "
                            "interpreters()[0].get_input_details()")
        if not input_tensors:
            try:
                self._runner.push(None)
            except PipelineClosed:
                raise RuntimeError(_TURNED_OFF) from None
            self._runner.join()
            return
        if len(input_tensors) != len(self._input_details):
            raise ValueError(f"Expected input of length {len(self._input_details)}, but got {len(input_tensors)}")
        feeds = {}
        for name, tensor in input_tensors.items():
            if name not in self._input_details:
                raise ValueError(f"Unknown input tensor '{name}'; the inputs are {sorted(self._input_details)}")
            detail = self._input_details[name]
            if not isinstance(tensor, np.ndarray) or tensor.dtype != detail["dtype"]:
                raise ValueError(f"Input should be a list of numpy array of type {detail['dtype']}")
            shape = tuple(int(s) for s in detail["shape"])
            if tensor.size != int(np.prod(shape)):
                raise ValueError(f"Input '{name}' has {tensor.size} values (shape {tensor.shape}); "
                                 f"the model takes {int(np.prod(shape))} (shape {shape})")
            feeds[name] = tensor.reshape(shape)          # PipelinedRunner.push copies it
        try:
            self._runner.push(feeds)
        except PipelineClosed:
            raise RuntimeError(_TURNED_OFF) from None

    def pop(self):
        """The next result {output name: numpy array}, in push order; None after the end of the stream.

        Raises:
          RuntimeError: an interpreter failed ('Segment K runner error: ...'); the
            pipeline is then shut down and later pops return None.
        """
        if self._error is not None:      # already reported and shut down: nothing more comes
            return None
        result = self._runner.pop_result()
        self._raise_if_failed()
        if result is None:
            return None
        return {name: value.reshape(self._output_shapes[name]) for name, value in result.outputs.items()}

    def _raise_if_failed(self):
        if self._error is None and self._runner.first_failure is not None:
            segment, exc = self._runner.first_failure
            self._error = f"Segment {segment} runner error: {' '.join(str(exc).split())}"
            self._runner.close()
        if self._error is not None:
            raise RuntimeError(self._error)
