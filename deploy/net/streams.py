"""What a stage server allows its callers: a bound on streams that idle ones cannot hog, requests
parsed by the server itself (garbage is the caller's fault: INVALID_ARGUMENT), short error texts.

gRPC's own ``maximum_concurrent_rpcs`` counts every call, health checks included, so twenty idle
streams locked out the health probe. Here only ``Process`` streams count against
``max_streams``; when all places are taken, the stream idle the longest (nothing in flight, no
request for ``evict_after_s``) is closed to make room, and a sweep closes any stream idle for
``idle_s``. A closed stream ends with UNAVAILABLE saying why; the client opens a new one.
"""
import logging
import threading
import time

import grpc
from google.protobuf.message import DecodeError

from deploy.net import stage_pb2
from deploy.net.codec import short

log = logging.getLogger(__name__)


def close_call(context, code, details):
    """Ends a call from any thread with ``code`` and ``details`` (``context.abort`` works only on the
    call's own thread). Uses grpcio's call object; falls back to a plain cancel (CANCELLED)."""
    try:
        from grpc._cython import cygrpc
        context._rpc_event.call.cancel(getattr(cygrpc.StatusCode, code.name.lower()), short(details))
    except (AttributeError, ImportError, TypeError):
        context.cancel()


class StreamLimit:
    """The Process streams of one stage: at most ``max_streams``, idle ones closed to make room."""

    def __init__(self, where, max_streams, idle_s=300.0, evict_after_s=1.0, clock=time.monotonic):
        self.where, self.max_streams, self.idle_s, self.evict_after_s = where, max_streams, idle_s, evict_after_s
        self.clock = clock
        self.closed_idle = 0
        self._open = set()
        self._lock = threading.Lock()

    def admit(self, stream):
        """True when ``stream`` may run (closing the longest-idle stream if that makes room)."""
        with self._lock:
            if len(self._open) >= self.max_streams:
                idle = [s for s in self._open if self._idle_for(s) >= self.evict_after_s]
                if not idle:
                    return False
                victim = max(idle, key=self._idle_for)
                self._open.discard(victim)
                self._close(victim, f"{self.where} closed this stream, idle for {self._idle_for(victim):.1f} s, "
                                    f"to serve a new one ({self.max_streams} streams at most, --max-streams); "
                                    "open a new stream")
            self._open.add(stream)
            return True

    def leave(self, stream):
        with self._lock:
            self._open.discard(stream)

    def sweep(self):
        """Closes streams idle for ``idle_s``; returns how many."""
        with self._lock:
            stale = [s for s in self._open if self._idle_for(s) >= self.idle_s]
            for stream in stale:
                self._open.discard(stream)
                self._close(stream, f"{self.where} closed this stream after {self.idle_s:g} s without a "
                                    "request (--stream-idle-s); open a new stream")
        return len(stale)

    def run_sweeper(self, stop, every_s=None):
        """Sweeps until ``stop`` is set (a daemon thread of the server)."""
        every_s = every_s or max(0.05, min(1.0, self.idle_s / 4.0))
        while not stop.wait(every_s):
            self.sweep()

    def _idle_for(self, stream):
        return 0.0 if stream.busy() else self.clock() - stream.last_active

    def _close(self, stream, reason):
        self.closed_idle += 1
        log.warning("%s (peer %s)", reason, stream.peer())
        close_call(stream.context, grpc.StatusCode.UNAVAILABLE, reason)


class Unparseable(ValueError):
    """Bytes that are not the message the method takes; the caller gets INVALID_ARGUMENT."""


def parse(kind, data, where, context):
    try:
        return kind.FromString(data)
    except DecodeError as exc:
        log.warning("%s: %d bytes from %s are not a %s (%s)", where, len(data), context.peer(), kind.__name__, exc)
        raise Unparseable(f"{where}: the {len(data)} bytes sent are not a {kind.__name__} message; send what "
                          "deploy.net.client sends (see deploy/net/stage.proto)") from None


def stage_handler(servicer, service_name):
    """The Stage service's handler: requests arrive as bytes and are parsed here, so a malformed message
    is refused with INVALID_ARGUMENT (and logged with its peer), not gRPC's INTERNAL."""
    where = servicer.where

    def unary(method, kind):
        def handle(data, context):
            try:
                request = parse(kind, data, where, context)
            except Unparseable as exc:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            return method(request, context)
        return handle

    def process(data_iterator, context):
        requests = (parse(stage_pb2.StageRequest, data, where, context) for data in data_iterator)
        yield from servicer.Process(requests, context)

    serialize = stage_pb2.StageReply.SerializeToString
    return grpc.method_handlers_generic_handler(service_name, {
        "Process": grpc.stream_stream_rpc_method_handler(process, response_serializer=serialize),
        "Run": grpc.unary_unary_rpc_method_handler(unary(servicer.Run, stage_pb2.StageRequest),
                                                   response_serializer=serialize),
        "Describe": grpc.unary_unary_rpc_method_handler(
            unary(servicer.Describe, stage_pb2.DescribeRequest),
            response_serializer=stage_pb2.StageInfo.SerializeToString),
    })
