"""The state of one call a stage server serves (its replies, its requests inside, its link on) and the
stage's interpreter that runs them one at a time."""
import queue
import threading
import time

from deploy.core.fallback import run_stage

END = object()   # no more replies on this call


class Worker:
    """The stage's interpreter, one request at a time (an interpreter is not thread-safe).

    A request runs on the thread that read it, under a lock: one thread hand-off
    less per hop than a worker thread with a queue, and requests of one stream
    still run in the order they were read."""

    def __init__(self, stage, delay_s):
        self.stage, self.delay_s, self.processed = stage, delay_s, 0
        self._lock = threading.Lock()

    def submit(self, values, alive, done):
        with self._lock:
            if not alive():
                outputs, failure = None, None      # the caller has gone (cancelled, deadline passed): skip
            else:
                try:
                    if self.delay_s:
                        time.sleep(self.delay_s)
                    outputs, failure = run_stage(self.stage, values), None
                    self.processed += 1
                except Exception as exc:  # noqa: BLE001  (this request fails; the stage goes on)
                    outputs, failure = None, exc
        done(outputs, failure)


class Call:
    """One upstream call: its replies, its requests inside this server, its link to the next stage."""

    def __init__(self, servicer, context, unary=False):
        self.servicer, self.context, self.unary = servicer, context, unary
        self.replies = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._inside = set()
        self._reading = True
        self.link = None
        self.failure = None                      # why the caller's stream is refused (garbage), or None
        self.fault = None                        # this stage's own failure on the stream (a bug), or None
        self.last_active = time.monotonic()

    def alive(self):
        return self.context.is_active() and self.context.time_remaining() > 0

    def busy(self):
        return bool(self._inside)

    def peer(self):
        return self.context.peer()

    def admit(self, request_id):
        with self._lock:
            self.last_active = time.monotonic()
            if request_id in self._inside:
                return False
            self._inside.add(request_id)
            return True

    def finish(self, reply):
        """Sends a reply of an admitted request upstream and frees its place."""
        with self._lock:
            if reply.request_id not in self._inside:
                return
            self._inside.discard(reply.request_id)
            self.servicer.slots.release()
            self.last_active = time.monotonic()
            ended = not self._reading and not self._inside
        self.replies.put(reply)
        if ended:
            self._end()

    def reject(self, reply):
        self.replies.put(reply)

    def done_reading(self):
        with self._lock:
            self._reading = False
            ended = not self._inside
        if ended:
            self._end()

    def cancel(self):
        if self.link is not None:
            self.link.cancel()
        self.replies.put(END)

    def forward(self, request):
        """Sends a request on to the next stage; a broken link (the next stage died) is replaced."""
        if self.link is None or not self.link.send(request):
            self.link = self.servicer.open_link(self, request)

    def _end(self):
        if self.link is not None:
            self.link.close()
        self.replies.put(END)


def ready(replies):
    """A reply already queued, or None."""
    try:
        return replies.get_nowait()
    except queue.Empty:
        return None
