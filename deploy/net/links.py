"""One upstream stream's link to the next stage: a request stream out, replies back, failures named.

Requests are queued (never blocking the stage's worker) onto a ``Process``
stream to the next stage; a reader thread hands each reply back. When the hop
fails (the next stage died, the deadline passed) every request still waiting on
it gets an error reply naming the hop, and the link is marked broken so the
next request opens a new stream: a restarted next stage is used again without
restarting anything else.
"""
import queue
import threading

import grpc

from deploy.net import stage_pb2
from deploy.net.codec import short

_STOP = object()


def error_reply(request_id, code, message):
    """A reply carrying an error; long texts are cut (gRPC turns oversized details into RESOURCE_EXHAUSTED)."""
    return stage_pb2.StageReply(request_id=request_id, exit_stage=-1, code=code.value[0], error=short(message))


class Link:
    def __init__(self, stub, hop, timeout, on_reply, first):
        """Opens the stream with its first request (answered even when the stream fails at once).

        Args:
          stub: a StageStub of the next stage.
          hop: text naming the hop for messages, e.g. "stage 1 at 10.0.0.2:50052".
          timeout: seconds left of the upstream deadline (None: none).
          on_reply: callable(StageReply), called from the reader thread.
          first: the first StageRequest to send.
        """
        self.hop, self._on_reply = hop, on_reply
        self._requests = queue.SimpleQueue()
        self._pending = {}
        self._lock = threading.Lock()
        self.broken = False
        self._pending[first.request_id] = True
        self._requests.put(first)
        self._call = stub.Process(iter(self._requests.get, _STOP), timeout=timeout)
        threading.Thread(target=self._read, daemon=True, name=f"link to {hop}").start()

    def send(self, request):
        """Queues a request; False when the link is broken (open a new one)."""
        with self._lock:
            if self.broken:
                return False
            self._pending[request.request_id] = True
        self._requests.put(request)
        return True

    def close(self):
        """Ends the request stream; replies still due arrive, then the reader ends."""
        self._requests.put(_STOP)

    def cancel(self):
        self._call.cancel()

    def _read(self):
        code, message = grpc.StatusCode.INTERNAL, f"{self.hop} ended the stream without replying"
        try:
            for reply in self._call:
                with self._lock:
                    self._pending.pop(reply.request_id, None)
                self._on_reply(reply)
        except grpc.RpcError as exc:
            code = exc.code()
            message = f"{self.hop} failed: {code.name}: {exc.details()}"
            if code == grpc.StatusCode.UNAVAILABLE:
                message = f"{self.hop} is unavailable (stopped, restarting or unreachable): {exc.details()}"
        with self._lock:
            self.broken = True
            left, self._pending = list(self._pending), {}
        self._requests.put(_STOP)   # frees gRPC's thread that reads the request queue
        for request_id in left:
            self._on_reply(error_reply(request_id, code, message))


class OneShot:
    """A single request sent on with the next stage's unary ``Run`` (for a caller's ``Run``: no stream to set up)."""

    def __init__(self, stub, hop, timeout, on_reply, request):
        self.hop, self._on_reply, self._request_id = hop, on_reply, request.request_id
        self._future = stub.Run.future(request, timeout=timeout)
        self._future.add_done_callback(self._done)

    def send(self, request):
        return False

    def close(self):
        pass

    def cancel(self):
        self._future.cancel()

    def _done(self, future):
        try:
            reply = future.result()
        except grpc.FutureCancelledError:
            reply = error_reply(self._request_id, grpc.StatusCode.CANCELLED, f"the call to {self.hop} was cancelled")
        except grpc.RpcError as exc:
            code, details = exc.code(), exc.details()
            if code == grpc.StatusCode.UNAVAILABLE and not details.startswith("stage "):
                details = f"{self.hop} is unavailable (stopped, restarting or unreachable): {details}"
            elif not details.startswith("stage "):
                details = f"{self.hop} failed: {code.name}: {details}"
            reply = error_reply(self._request_id, code, details)
        self._on_reply(reply)
