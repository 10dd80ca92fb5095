"""A FIFO queue between pipeline workers: bounded (backpressure), resizable while in use, abortable.

Like libcoral's WaitQueue: ``put`` blocks while the queue is full, ``get``
blocks while it is empty. ``abort`` wakes every waiter at once: later puts
raise ``PipelineClosed`` and gets return ``CLOSED``, so no thread stays blocked
when a pipeline is closed with work in flight.
"""
import collections
import queue
import threading
import time

CLOSED = object()   # what get() returns once the queue has been aborted


class PipelineClosed(RuntimeError):
    """The pipeline was closed (or ended) and takes no more requests."""


class WaitQueue:
    def __init__(self, maxsize=0):
        """Args: maxsize: the most items held at once; 0 or None for no limit."""
        self._items = collections.deque()
        self._max = maxsize or 0
        self._cond = threading.Condition()
        self._aborted = False
        self.high_water = 0      # the most items ever held at once (tests check the bound with it)

    def set_max(self, maxsize):
        """Changes the bound; waiting putters re-check it at once."""
        if maxsize is not None and maxsize < 0:
            raise ValueError(f"queue size must be 0 (no limit) or more, got {maxsize}")
        with self._cond:
            self._max = maxsize or 0
            self._cond.notify_all()

    @property
    def maxsize(self):
        return self._max

    def __len__(self):
        with self._cond:
            return len(self._items)

    def put(self, item, timeout=None):
        """Appends ``item``, waiting while the queue is full.

        Raises:
          queue.Full: still full after ``timeout`` seconds (0: do not wait).
          PipelineClosed: the queue was aborted.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._aborted and self._max and len(self._items) >= self._max:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise queue.Full
                self._cond.wait(remaining)
            if self._aborted:
                raise PipelineClosed("the pipeline was closed")
            self._items.append(item)
            self.high_water = max(self.high_water, len(self._items))
            self._cond.notify_all()

    def get(self, timeout=None):
        """The oldest item, waiting while the queue is empty; ``CLOSED`` once aborted.

        Raises:
          queue.Empty: still empty after ``timeout`` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._aborted and not self._items:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise queue.Empty
                self._cond.wait(remaining)
            if self._aborted:
                return CLOSED
            item = self._items.popleft()
            self._cond.notify_all()
            return item

    def abort(self):
        """Drops every item and wakes every waiter; returns the items dropped."""
        with self._cond:
            dropped = list(self._items)
            self._items.clear()
            self._aborted = True
            self._cond.notify_all()
            return dropped
