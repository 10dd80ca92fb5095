"""Send inputs through a chain of stage servers and get the chain's outputs back.

    with ChainClient("10.0.0.1:50051") as chain:          # the first stage (or all: "h1:p,h2:p,h3:p")
        outputs = chain.run({"input": pixels_uint8})
        for outputs in chain.stream(many_feeds):          # results in input order
            ...

A ChainClient may be shared by threads: ``run`` calls are independent, and each
``stream`` has its own call. Errors raise ``ChainCallError`` with the gRPC
status code and a message naming the stage (and hop) that failed.
"""
import collections
import contextlib
import itertools
import queue
import threading

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from deploy.net import channels, stage_pb2
from deploy.net.codec import encode

ChainResult = collections.namedtuple("ChainResult", "request_id outputs exit_stage")
ChainResult.__doc__ = "One request's outcome: outputs {name: array}; exit_stage None, or the stage that exited early."

_CODES = {code.value[0]: code for code in grpc.StatusCode}
_DONE = object()


class ChainCallError(RuntimeError):
    """A request failed in the chain: ``code`` (grpc.StatusCode), ``details`` (what and where)."""

    def __init__(self, code, details, request_id=None):
        super().__init__(f"{code.name}: {details}")
        self.code, self.details, self.request_id = code, details, request_id


def _from_rpc_error(exc, address, timeout_s=None):
    details = exc.details() or ""
    if exc.code() == grpc.StatusCode.UNAVAILABLE and "stage" not in details:
        details = f"stage at {address} is unavailable: {details}"
    elif exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED and not details.startswith("stage"):
        # each stage gives its next hop a little less time, so a slow later stage is named in a reply
        # before this deadline: when it passes here, the first stage itself did not answer in time
        within = f" within {timeout_s:g} s" if timeout_s else ""
        details = f"stage at {address} did not answer{within} (the deadline passed there): {details}"
    return ChainCallError(exc.code(), details)


def _outputs(reply):
    return {t.name: np.frombuffer(t.data, dtype=t.dtype).reshape(tuple(t.shape)) for t in reply.tensors}


def _result(reply):
    if reply.code:
        raise ChainCallError(_CODES.get(reply.code, grpc.StatusCode.UNKNOWN), reply.error, reply.request_id)
    return ChainResult(reply.request_id, _outputs(reply), None if reply.exit_stage < 0 else reply.exit_stage)


class ChainClient:
    def __init__(self, hosts, tls=None, timeout_s=10.0, window=None):
        """Opens a channel to the first stage (connections are made on first use).

        Args:
          hosts: "host:port" of the first stage, or all stages as a comma list or a list
            (then ``describe`` and ``health`` cover each).
          tls: a ``deploy.net.tls.TlsFiles`` for mutual TLS (None: plain).
          timeout_s: deadline of each ``run`` call, passed on stage to stage (None: none).
          window: requests a ``stream`` keeps in flight (default: the smallest --max-in-flight of the
            stages given, read with ``describe``).
        """
        self.addresses = channels.split_hosts(hosts)
        self.tls, self.timeout_s, self._window = tls, timeout_s, window
        self._channels = {}
        self._ids = itertools.count()
        self._lock = threading.Lock()
        self._stub = channels.stage_stub(self._channel(self.addresses[0]))

    def _channel(self, address):
        with self._lock:
            if address not in self._channels:
                self._channels[address] = channels.open_channel(address, self.tls)
            return self._channels[address]

    def _next_id(self):
        with self._lock:
            return next(self._ids)

    def run(self, feeds, timeout_s=None):
        """The chain's outputs {name: array} for one input {name: array} (quantized, as the manifest says)."""
        return self.run_with_exit(feeds, timeout_s)[0]

    def run_with_exit(self, feeds, timeout_s=None):
        """(outputs, exit_stage): exit_stage is None, or the stage whose exit head answered."""
        request = stage_pb2.StageRequest(request_id=self._next_id(), tensors=_encode(feeds))
        try:
            reply = self._stub.Run(request, timeout=timeout_s or self.timeout_s)
        except grpc.RpcError as exc:
            raise _from_rpc_error(exc, self.addresses[0], timeout_s or self.timeout_s) from None
        result = _result(reply)
        return result.outputs, result.exit_stage

    def stream(self, feeds, timeout_s=None):
        """Outputs for each feed, in order (raises ChainCallError at the first failed request)."""
        for result in self.stream_results(feeds, timeout_s):
            yield result.outputs

    def stream_results(self, feeds, timeout_s=None):
        """ChainResults for an iterable of feeds, in input order, over one bidirectional stream.

        At most ``window`` requests are in flight; ``timeout_s`` (default: none)
        is the deadline of the whole stream.
        """
        requests, order = queue.SimpleQueue(), queue.SimpleQueue()
        room = _Window(self._window or self._default_window(), order, requests)
        failure = []

        def produce():
            try:
                for feed in feeds:
                    request_id = self._next_id()
                    if not room.send(request_id, stage_pb2.StageRequest(request_id=request_id, tensors=_encode(feed))):
                        break
            except Exception as exc:  # noqa: BLE001  (handed to the consumer)
                failure.append(exc)
            room.end()

        call = self._stub.Process(iter(requests.get, _DONE), timeout=timeout_s)
        producer = threading.Thread(target=produce, daemon=True, name="chain-client-producer")
        producer.start()
        early = {}
        try:
            replies = iter(call)
            while (expected := order.get()) is not _DONE:
                while expected not in early:
                    reply = next(replies, None)
                    if reply is None:
                        raise ChainCallError(grpc.StatusCode.INTERNAL,
                                             f"stage at {self.addresses[0]} ended the stream early")
                    # ids rise along a stream, so one below the expected one was answered already
                    if reply.request_id in early or reply.request_id < expected:
                        raise ChainCallError(grpc.StatusCode.INTERNAL,
                                             f"request {reply.request_id} was answered twice", reply.request_id)
                    early[reply.request_id] = reply
                yield _result(early.pop(expected))
                room.release()
            if failure:
                raise failure[0]
        except grpc.RpcError as exc:
            raise _from_rpc_error(exc, self.addresses[0], timeout_s) from None
        finally:
            room.close()
            call.cancel()
            producer.join(timeout=5)

    def _default_window(self):
        """The smallest --max-in-flight of the first stage and of the later ones this client can reach."""
        bounds = [self.describe(self.addresses[0]).max_in_flight]
        for address in self.addresses[1:]:
            with contextlib.suppress(ChainCallError):     # later stages may be reachable only by stage 0
                bounds.append(self.describe(address, timeout_s=1.0).max_in_flight)
        return min(bounds) or 8

    def describe(self, address=None, timeout_s=None):
        """StageInfo of one stage (default: the first): what it takes, returns, where it runs, its bounds."""
        stub = channels.stage_stub(self._channel(address or self.addresses[0]))
        try:
            return stub.Describe(stage_pb2.DescribeRequest(), timeout=timeout_s or self.timeout_s)
        except grpc.RpcError as exc:
            raise _from_rpc_error(exc, address or self.addresses[0]) from None

    def health(self, service=""):
        """{address: "SERVING" | "NOT_SERVING" | "UNAVAILABLE: ..."} for every address given."""
        states = {}
        for address in self.addresses:
            stub = health_pb2_grpc.HealthStub(self._channel(address))
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=self.timeout_s)
                states[address] = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
            except grpc.RpcError as exc:
                states[address] = f"{exc.code().name}: {exc.details()}"
        return states

    def close(self):
        with self._lock:
            for channel in self._channels.values():
                channel.close()
            self._channels.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class _Window:
    """At most ``size`` requests of a stream in flight; the producer runs one feed ahead.

    A request the producer prepared while the window was full is sent by the
    consumer as soon as a reply frees a place: one thread wake-up less on the
    path of each request than waking the producer to send it."""

    def __init__(self, size, order, requests):
        self._free, self._order, self._requests = size, order, requests
        self._waiting, self._closed = None, False
        self._cond = threading.Condition(threading.Lock())

    def _put(self, request_id, request):
        self._order.put(request_id)
        self._requests.put(request)

    def send(self, request_id, request):
        """Sends now, or waits until a place frees and the consumer sends it; False once closed."""
        with self._cond:
            if self._closed:
                return False
            if self._free:
                self._free -= 1
                self._put(request_id, request)
                return True
            self._waiting = (request_id, request)
            while self._waiting is not None and not self._closed:
                self._cond.wait()
            return self._waiting is None

    def release(self):
        """A reply has been handed out: send the waiting request, or keep the place free."""
        with self._cond:
            if self._waiting is not None:
                self._put(*self._waiting)
                self._waiting = None
                self._cond.notify()
            else:
                self._free += 1

    def end(self):
        """No more requests (the feeds ran out or failed)."""
        with self._cond:
            self._requests.put(_DONE)
            self._order.put(_DONE)

    def close(self):
        """The consumer has stopped: a waiting request is dropped and the producer stops."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()


def _encode(feeds):
    return encode({name: np.asarray(value) for name, value in feeds.items()})
