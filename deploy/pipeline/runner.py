"""Run a chain's stages at the same time: one worker thread per stage, joined by bounded queues.

A chain run one stage after another keeps every device but one idle. Here stage
k works on request n while stage k+1 works on request n-1, as in Coral's
PipelinedModelRunner. Tensors go from stage to stage by name, exactly as in
``deploy.core.chain.StageChain`` (whose wiring check is reused), and a tensor made
two stages earlier travels along until the last stage that reads it.

    runner = PipelinedRunner(chain, queue_size=2)
    for result in runner.stream(feeds):          # a producer thread pushes for you
        use(result.request_id, result.outputs)

or, from two threads, ``runner.push(feed, request_id)`` ... ``runner.push(None)``
(end of stream) and ``runner.pop()`` until it returns None.

Guarantees: results come out in the order requests went in (one worker per
stage, FIFO queues), each with the caller's request id; a stage that raises
fails only that request (``pop`` raises ``RequestFailed`` for it, the others go
on); ``push`` blocks while the pipeline is full, so memory stays bounded; and
``close`` stops the workers even with requests in flight. The tflite runtimes
release the GIL inside ``invoke()``, so stages on CPU cores or Edge TPUs overlap.
"""
import collections
import itertools
import queue
import threading
import time

import numpy as np

from deploy.core import fallback
from deploy.core.chain import StageChain, check_feed
from deploy.core.exits import exit_taken
from deploy.pipeline import replicas
from deploy.pipeline.waitqueue import CLOSED, PipelineClosed, WaitQueue

__all__ = ["PipelineClosed", "PipelinedRunner", "RequestFailed", "Result"]

Result = collections.namedtuple("Result", "request_id outputs stage_seconds latency_seconds error exit_stage",
                                defaults=(None,))
Result.__doc__ = """One request's outcome.

request_id: the caller's id (or the counter value given by ``push``);
outputs: {output name: array}, None when a stage failed;
stage_seconds: seconds each stage spent on it (stages after a failure are absent);
latency_seconds: from ``push`` to the end of the last stage;
error: None, or the RequestFailed for this request;
exit_stage: with ``exit_threshold``, the stage whose early exit was taken (outputs: {its exit
  output: logits}; later stages pass the request on without running), else None."""

_END = object()   # end of stream, travels through every queue behind the last request


class RequestFailed(RuntimeError):
    """A stage raised while working on one request; the other requests are unaffected."""

    def __init__(self, request_id, stage_index, cause):
        super().__init__(f"request {request_id!r} failed in stage {stage_index}: "
                         f"{type(cause).__name__}: {cause}")
        self.request_id = request_id
        self.stage_index = stage_index
        self.cause = cause


class _Item:
    __slots__ = ("done", "exit_stage", "failure", "pushed", "request_id", "seconds", "values")

    def __init__(self, request_id, values, pushed):
        self.request_id, self.values, self.pushed = request_id, values, pushed
        self.failure, self.seconds, self.done, self.exit_stage = None, [], None, None


class PipelinedRunner:
    """The stages of a ``StageChain``, each on its own thread."""

    def __init__(self, chain, queue_size=2, input_queue_size=None, output_queue_size=None,
                 run_stage=None, exit_threshold=None, copies=None):
        """Starts one worker per stage.

        Args:
          chain: a ``StageChain`` (its wiring is already checked), or a list of
            stages to build one from.
          queue_size: bound of each queue between two stages (0: no bound).
          input_queue_size, output_queue_size: bounds of the queue before the
            first stage and after the last (default: ``queue_size``; 0: none).
            With no consumer popping, ``push`` blocks once ``capacity``
            requests are in the pipeline: pop from another thread or use
            ``stream``.
          run_stage: callable(stage, values) -> {name: array}; default: set the
            stage interpreter's inputs by name, invoke, read its outputs.
          exit_threshold: take a stage's early exit (``chain.exits``) at this top
            probability, as ``StageChain.run_with_exit`` does (None: never).
          copies: {stage position: [more Stage objects of that stage]}: those copies (on other
            Edge TPUs, or CPU interpreters) work on that stage's requests at the same time, and its
            results still leave in input order (``deploy.pipeline.replicas``).
        """
        self.exit_threshold = exit_threshold
        self.chain = chain if isinstance(chain, StageChain) else StageChain(chain)
        stages = self.chain.stages
        sizes = [queue_size if input_queue_size is None else input_queue_size]
        sizes += [queue_size] * (len(stages) - 1)
        sizes += [queue_size if output_queue_size is None else output_queue_size]
        for size in sizes:
            if size is None or size < 0:
                raise ValueError(f"queue sizes must be 0 (no limit) or more, got {size}")
        self._queues = [WaitQueue(size) for size in sizes]
        self._run_stage = run_stage or fallback.run_stage
        self._copies = replicas.check_copies(self.chain, copies)
        self._inner_queues = []       # queues of replicated stages, aborted by close()
        self._helpers = []            # their forwarding threads, joined by close()
        self._output_names = [t["name"] for t in self.chain.outputs]
        self._keep = self._kept_after_each_stage()
        self._next_id = 0
        self._push_lock = threading.Lock()
        self._lock = threading.Lock()
        self._pushed = self._popped = 0
        self.max_in_flight = 0       # the most requests ever inside at once
        self.first_failure = None    # (position in the chain, exception) of the first stage error, if any
        self._ended = self._closed = self._drained = False
        self._threads = [threading.Thread(target=self._work, args=(k,), daemon=True,
                                          name=f"pipeline-stage-{stages[k].index}")
                         for k in range(len(stages))]
        for thread in self._threads:
            thread.start()

    # ------------------------------------------------------------ public

    @property
    def capacity(self):
        """Requests the pipeline holds before ``push`` blocks (None: no limit)."""
        if not all(q.maxsize for q in self._queues):
            return None
        inside = sum(len(extra) + 2 for extra in self._copies.values())   # one per copy, the order thread
        return sum(q.maxsize for q in self._queues) + len(self._threads) + inside

    @property
    def in_flight(self):
        """Requests pushed and not yet popped."""
        return self._pushed - self._popped

    def set_input_queue_size(self, size):
        self._queues[0].set_max(size)

    def set_output_queue_size(self, size):
        self._queues[-1].set_max(size)

    def push(self, feeds, request_id=None, timeout=None):
        """Queues one request; ``None`` (or an empty dict) ends the stream.

        Args:
          feeds: {input name: array} of the chain's inputs, already quantized;
            copied, so the caller may reuse its arrays at once.
          request_id: returned with the result (default: 0, 1, 2, ...).
          timeout: seconds to wait while the pipeline is full (None: wait).
        Returns:
          The request id.
        Raises:
          ChainError: an input is missing or has the wrong dtype or shape.
          PipelineClosed: the stream was ended, or the runner closed.
          queue.Full: still full after ``timeout``.
        """
        self._check_open()
        if feeds:
            check_feed(feeds, self.chain.inputs, "pipeline")
        # One push at a time: automatic ids follow the order of entry, and a refused push uses none.
        if not self._push_lock.acquire(timeout=-1 if timeout is None else timeout):
            raise queue.Full
        try:
            self._check_open()
            if not feeds:
                self._queues[0].put(_END, timeout)
                self._ended = True
                return None
            given = self._next_id if request_id is None else request_id
            copies = {name: np.array(value) for name, value in feeds.items()}   # the caller may reuse its buffers
            self._queues[0].put(_Item(given, copies, time.perf_counter()), timeout)
            if request_id is None:
                self._next_id += 1
        finally:
            self._push_lock.release()
        with self._lock:
            self._pushed += 1
            self.max_in_flight = max(self.max_in_flight, self._pushed - self._popped)
        return given

    def _check_open(self):
        if self._closed or self._ended:
            raise PipelineClosed("the pipeline takes no more requests: "
                                 + ("it was closed" if self._closed else "its stream was ended by push(None)"))

    def pop(self, timeout=None):
        """The next result in input order; None once the stream has ended and everything was popped.

        Raises:
          RequestFailed: a stage raised on this request (the next pop goes on).
          queue.Empty: nothing arrived within ``timeout`` seconds.
        """
        result = self.pop_result(timeout)
        if result is not None and result.error is not None:
            raise result.error
        return result

    def pop_result(self, timeout=None):
        """Like ``pop``, but a failed request comes back as a Result with ``error`` set."""
        if self._drained:
            return None
        item = self._queues[-1].get(timeout)
        if item is _END or item is CLOSED:
            self._drained = True
            return None
        with self._lock:
            self._popped += 1
        if item.failure is not None:
            stage, exc = item.failure
            error = RequestFailed(item.request_id, stage, exc)
            error.__cause__ = exc
            return Result(item.request_id, None, item.seconds, item.done - item.pushed, error)
        if item.exit_stage is not None:
            return Result(item.request_id, item.values, item.seconds, item.done - item.pushed, None, item.exit_stage)
        outputs = {name: item.values[name] for name in self._output_names}
        return Result(item.request_id, outputs, item.seconds, item.done - item.pushed, None)

    def __iter__(self):
        """Results until the stream ends (a failed request raises RequestFailed; iterate again to go on)."""
        while (result := self.pop()) is not None:
            yield result

    def stream(self, feeds, request_ids=None, errors="raise"):
        """Pushes ``feeds`` from a producer thread and yields their results in order, then ends.

        Args:
          feeds: iterable of feed dicts.
          request_ids: optional iterable of ids, one per feed.
          errors: "raise" (a failed request raises RequestFailed and the runner
            is closed) or "yield" (failed requests come as Results with ``error``).
        """
        if errors not in ("raise", "yield"):
            raise ValueError(f"errors must be 'raise' or 'yield', got {errors!r}")
        problem = []

        def produce():
            try:
                ids = iter(request_ids) if request_ids is not None else itertools.repeat(None)
                for feed, request_id in zip(feeds, ids):
                    self.push(feed, request_id)
                self.push(None)
            except PipelineClosed:
                pass
            except BaseException as exc:  # noqa: BLE001  (any producer error is re-raised by the consumer)
                problem.append(exc)
                try:
                    self.push(None)
                except PipelineClosed:
                    pass

        producer = threading.Thread(target=produce, daemon=True, name="pipeline-producer")
        producer.start()
        try:
            while (result := self.pop_result()) is not None:
                if result.error is not None and errors == "raise":
                    raise result.error
                yield result
            producer.join()
            if problem:
                raise problem[0]
        finally:
            if producer.is_alive() or not self._drained:
                self.close()
                producer.join()

    def join(self):
        """Waits for the workers to finish after ``push(None)``; results stay to be popped.

        With a bounded output queue the last stage waits for room, so pop from
        another thread, or join only when the output queue can hold the rest.
        """
        if not self._ended and not self._closed:
            raise RuntimeError("join() waits for the end of the stream: call push(None) first")
        for thread in self._threads + self._helpers:
            thread.join()

    def close(self):
        """Stops now, dropping requests still inside; returns how many were dropped. Idempotent."""
        if self._closed:
            return 0
        self._closed = True
        for q in self._queues + self._inner_queues:
            q.abort()
        for thread in self._threads + self._helpers:
            thread.join()
        with self._lock:
            dropped, self._popped = self._pushed - self._popped, self._pushed
        return dropped

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ------------------------------------------------------------ workers

    def _register(self, queues, thread):
        self._inner_queues += queues
        self._helpers.append(thread)

    def _kept_after_each_stage(self):
        """For stage k, the tensor names any later stage (or the chain's outputs) still reads."""
        keep, needed = [], set(self._output_names)
        for stage in reversed(self.chain.stages):
            keep.append(frozenset(needed))
            needed |= {t["name"] for t in stage.inputs}
        return keep[::-1]

    def _exit_taken(self, k, values):
        """The exit output name when stage k (not the last) ends at a confident exit head, else None."""
        entry = getattr(self.chain, "exits", {}).get(self.chain.stages[k].index)
        if entry is None or self.exit_threshold is None or k == len(self.chain.stages) - 1:
            return None
        return exit_taken(entry, values, self.exit_threshold)

    def _process(self, k, stage, item):
        """Runs stage position ``k`` (on ``stage``: the stage or one of its copies) on one request."""
        if item is not _END and item.failure is None and item.exit_stage is None:
            start = time.perf_counter()
            try:
                produced = self._run_stage(stage, item.values)
                values = {**item.values, **produced}
                taken = self._exit_taken(k, values)
                if taken:
                    item.values, item.exit_stage = {taken: values[taken]}, stage.index
                else:
                    item.values = {name: v for name, v in values.items() if name in self._keep[k]}
            except Exception as exc:  # noqa: BLE001  (this request fails; the worker goes on)
                item.failure, item.values = (stage.index, exc), None
                if self.first_failure is None:
                    self.first_failure = (k, exc)
            item.seconds.append(time.perf_counter() - start)
        if item is not _END and k == len(self.chain.stages) - 1:
            item.done = time.perf_counter()
        return item

    def _work(self, k):
        stage, source, sink = self.chain.stages[k], self._queues[k], self._queues[k + 1]
        if self._copies.get(k):
            return replicas.work_replicated(source, sink, [stage, *self._copies[k]],
                                            lambda copy, item: self._process(k, copy, item), _END, self._register)
        while True:
            item = source.get()
            if item is CLOSED:
                return
            try:
                sink.put(self._process(k, stage, item))
            except PipelineClosed:
                return
            if item is _END:
                return

