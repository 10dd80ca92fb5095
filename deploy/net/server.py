"""A gRPC server running one stage of a run folder and forwarding to the next stage.

Each request is checked against the stage's manifest entry (``codec.decode``;
INVALID_ARGUMENT otherwise), admitted only while fewer than ``max_in_flight``
requests are inside this server (RESOURCE_EXHAUSTED otherwise, so memory stays
bounded), run one at a time on the stage's interpreter (stages overlap across
servers, as PipelinedRunner's stage threads do in one process), then forwarded on
a stream to the next stage, whose reply comes back up unchanged. The last stage, or a stage whose exit head is confident
(``--exit-threshold``), replies itself. A caller's deadline is passed on to the
next stage, and a request whose caller has gone is dropped before it runs.
The standard health service says SERVING once the stage is loaded and
NOT_SERVING from the moment shutdown begins.
"""
import concurrent.futures
import dataclasses
import logging
import threading

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

import runfolder
from deploy.core.exits import check_exit_threshold, exit_taken
from deploy.net import channels, codec, plan, stage_pb2, stage_pb2_grpc
from deploy.net.calls import END as _END
from deploy.net.calls import Call as _Stream
from deploy.net.calls import Worker as _Worker
from deploy.net.calls import ready as _ready
from deploy.net.links import Link, OneShot, error_reply
from deploy.net.streams import StreamLimit, Unparseable, stage_handler
from deploy.core.stages import DEFAULT_INVOKE_TIMEOUT, load_stages
from runfolder.errors import OptionError

SERVICE_NAME = "coralstages.v1.Stage"
_CODES = {code.value[0]: code for code in grpc.StatusCode}

log = logging.getLogger(__name__)


def load_stage(run_dir, manifest, index, options):
    """The LoadedStage of stage ``index`` only (``load_stages`` on a view of the manifest with that
    stage), where and how a ServeOptions says."""
    entry = plan.stage_plan(manifest, index, run_dir).entry
    return load_stages(run_dir, dict(manifest, stages=[entry]), options.devices, options.num_threads,
                       xnnpack=options.xnnpack, fallback=options.fallback,
                       invoke_timeout=options.invoke_timeout)[0]


def request_bytes(specs):
    return sum(codec.numpy_dtype(s["dtype"]).itemsize * max(1, _count(s["shape"])) for s in specs)


def _count(shape):
    total = 1
    for size in shape:
        total *= int(size)
    return total


class StageServicer(stage_pb2_grpc.StageServicer):
    """The Stage service of one loaded stage: Process (stream), Run (one request), Describe."""

    def __init__(self, stage, stage_plan, next_address, options, max_message_bytes, streams):
        """``options``: the ServeOptions it runs with (tls, max_in_flight, exit_threshold, delay_s are read);
        ``max_message_bytes``: the request limit worked out from them; ``streams``: its StreamLimit."""
        self.stage, self.plan, self.next_address = stage, stage_plan, next_address
        self.max_in_flight, self.exit_threshold = options.max_in_flight, options.exit_threshold
        self.max_message_bytes = max_message_bytes
        self.slots = threading.BoundedSemaphore(options.max_in_flight)
        self.where = f"stage {stage_plan.index}"
        self.streams = streams
        self.worker = _Worker(stage, options.delay_s)
        self._expected = codec.Expected(stage_plan.receives)       # worked out once, not per request
        self._sends = [t["name"] for t in stage_plan.sends]
        self._returns = [t["name"] for t in stage_plan.returns]
        self._stub = None
        if next_address:
            self._stub = channels.stage_stub(channels.open_channel(next_address, options.tls))

    def open_link(self, stream, first):
        hop = f"stage {self.plan.index + 1} at {self.next_address} (hop from stage {self.plan.index})"
        remaining = stream.context.time_remaining()   # huge when the caller set no deadline
        kind = OneShot if stream.unary else Link
        return kind(self._stub, hop, _hop_deadline(remaining), stream.finish, first)

    # ------------------------------------------------------------ RPCs

    def Process(self, request_iterator, context):
        stream = _Stream(self, context)
        if not self.streams.admit(stream):
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                          f"{self.where} already serves {self.streams.max_streams} busy streams (--max-streams); "
                          "retry later, or send on a stream you have open")
        context.add_callback(stream.cancel)
        try:
            yield from self._replies(request_iterator, stream)
        finally:
            self.streams.leave(stream)
        if stream.fault:
            context.abort(grpc.StatusCode.INTERNAL, stream.fault)
        if stream.failure:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, stream.failure)

    def _replies(self, request_iterator, stream):
        if self.plan.is_last or self._stub is None:
            yield from self._answer_here(request_iterator, stream)
            return
        # Every request gets one reply; at most this many replies wait for a caller that does not read them
        # (refusals are instant), then reading stops and HTTP/2 flow control holds the caller back.
        unread = threading.Semaphore(2 * self.max_in_flight)
        threading.Thread(target=self._read, args=(request_iterator, stream, unread), daemon=True,
                         name=f"{self.where}-reader").start()
        while (reply := stream.replies.get()) is not _END:
            yield reply
            unread.release()

    def Run(self, request, context):
        stream = _Stream(self, context, unary=True)
        context.add_callback(stream.cancel)
        self._take(request, stream)
        stream.done_reading()
        reply = stream.replies.get()
        if reply is _END:
            context.abort(grpc.StatusCode.CANCELLED, f"{self.where}: the call ended before a reply")
        if reply.code:
            context.abort(_CODES.get(reply.code, grpc.StatusCode.UNKNOWN), reply.error)
        return reply

    def Describe(self, request, context):
        def spec(t):
            return stage_pb2.TensorSpec(name=t["name"], dtype=t["dtype"], shape=t["shape"])
        return stage_pb2.StageInfo(
            stage=self.plan.index, stages=self.plan.stages, takes=[spec(t) for t in self.plan.receives],
            returns=[spec(t) for t in self.plan.returns], placement=self.stage.placement,
            next=self.next_address or "", max_in_flight=self.max_in_flight, processed=self.worker.processed,
            max_message_bytes=self.max_message_bytes or 0)

    # ------------------------------------------------------------ requests

    def _answer_here(self, request_iterator, stream):
        """The replies of a stage that forwards nothing, made on the RPC's own thread.

        Every request is answered before the next is read (nothing waits on a next
        stage), so no reader thread is needed: one thread hand-off less per request.
        A caller that does not read its replies holds this thread in gRPC's send,
        so reading stops, as with the reader thread's bound."""
        requests = iter(request_iterator)
        while True:
            try:
                request = next(requests)
            except (StopIteration, grpc.RpcError):   # the caller is done sending, or went away
                break
            try:
                self._take(request, stream)
            except Unparseable as exc:
                stream.failure = str(exc)
                break
            while (reply := _ready(stream.replies)) is not None:
                if reply is _END:
                    return
                yield reply
        stream.done_reading()
        while (reply := stream.replies.get()) is not _END:
            yield reply

    def _read(self, request_iterator, stream, unread):
        """The reader thread of a forwarding stage. The caller going away ends the stream quietly; garbage
        ends it with INVALID_ARGUMENT; a fault of this stage's own ends it with INTERNAL and a traceback
        in the log (a bug must not end a stream silently)."""
        try:
            for request in request_iterator:
                while not unread.acquire(timeout=0.5):
                    if not stream.alive():
                        return
                self._take(request, stream)
        except Unparseable as exc:
            stream.failure = str(exc)
        except grpc.RpcError:   # the caller went away
            pass
        except Exception as exc:  # noqa: BLE001  (this thread's end: logged and sent, not swallowed)
            log.exception("%s: reading a stream failed", self.where)
            stream.fault = f"{self.where} failed on this stream ({type(exc).__name__}: {exc}); see its log"
        finally:
            stream.done_reading()

    def _take(self, request, stream):
        request_id = request.request_id
        try:
            values = self._expected.decode(request.tensors, self.where)
        except codec.TensorMismatch as exc:
            stream.reject(error_reply(request_id, grpc.StatusCode.INVALID_ARGUMENT, str(exc)))
            return
        if not self.slots.acquire(blocking=False):
            stream.reject(error_reply(
                request_id, grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{self.where} already holds {self.max_in_flight} requests (--max-in-flight); "
                "send fewer at once or retry later"))
            return
        if not stream.admit(request_id):
            self.slots.release()
            stream.reject(error_reply(request_id, grpc.StatusCode.INVALID_ARGUMENT,
                                      f"{self.where}: request id {request_id} is already in flight on this stream"))
            return
        self.worker.submit(values, stream.alive,
                           lambda outputs, exc: self._after_run(stream, request_id, values, outputs, exc))

    def _after_run(self, stream, request_id, received, outputs, exc):
        if outputs is None:
            code, message = grpc.StatusCode.DEADLINE_EXCEEDED, f"{self.where}: the caller's deadline passed"
            if exc is not None:
                code, message = grpc.StatusCode.INTERNAL, f"{self.where} failed: {type(exc).__name__}: {exc}"
            stream.finish(error_reply(request_id, code, message))
            return
        exit_name = exit_taken(self.plan.entry, outputs, self.exit_threshold)
        if exit_name is not None:
            stream.finish(stage_pb2.StageReply(request_id=request_id, exit_stage=self.plan.index,
                                               tensors=codec.encode(outputs, [exit_name])))
            return
        values = {**received, **outputs}
        if self.plan.is_last or self._stub is None:
            stream.finish(stage_pb2.StageReply(request_id=request_id, exit_stage=-1,
                                               tensors=codec.encode(values, self._returns)))
            return
        if not stream.alive():
            stream.finish(error_reply(request_id, grpc.StatusCode.DEADLINE_EXCEEDED,
                                      f"{self.where}: the caller's deadline passed"))
            return
        stream.forward(stage_pb2.StageRequest(request_id=request_id, tensors=codec.encode(values, self._sends)))


def _hop_deadline(remaining):
    """The next hop's deadline: the caller's, less a margin for the reply to come back, so a hop that is
    too slow is reported by name (stage K ... DEADLINE_EXCEEDED) before the caller's own deadline."""
    if remaining >= 1e6:          # the caller set no deadline
        return None
    return max(0.001, remaining - min(0.05, remaining * 0.2))


class StageServer:
    """A started server: ``port``, ``health``, ``begin_shutdown()``, ``stop(grace)``."""

    def __init__(self, server, servicer, health_servicer, port, stop_sweeper=None):
        self.server, self.servicer, self.health, self.port = server, servicer, health_servicer, port
        self._stop_sweeper = stop_sweeper or threading.Event()

    def begin_shutdown(self):
        """NOT_SERVING from now on; requests still arrive until ``stop``."""
        self.health.enter_graceful_shutdown()

    def stop(self, grace=5.0):
        """Stops taking calls, lets calls in flight finish for ``grace`` seconds, then cancels them.

        Returns True when gRPC confirmed the shutdown. Its confirmation is awaited for a bounded
        time only: in rare runs grpcio never sets it (every thread idle), and a stage must not
        hang its caller on the way out.
        """
        self.begin_shutdown()
        self._stop_sweeper.set()
        done = self.server.stop(grace).wait(grace + 2.0)
        if not done:
            log.warning("%s: gRPC did not confirm the shutdown within %.1f s; going on", self.servicer.where,
                        grace + 2.0)
        return done

    def wait(self):
        self.server.wait_for_termination()


@dataclasses.dataclass(frozen=True)
class ServeOptions:
    """How one stage server runs and what it bounds (``python -m deploy serve-stage``'s options).

    tls: a ``tls.TlsFiles`` for mutual TLS, or None for plain traffic.
    max_in_flight: requests held at once; more get RESOURCE_EXHAUSTED.
    exit_threshold: early-exit confidence (None: off).
    devices, num_threads, xnnpack: where and how the stage's interpreter runs (``deploy.core.stages``);
      fallback: move it to its CPU file if its Edge TPU fails (``deploy.core.fallback``); invoke_timeout:
      seconds an Edge TPU invoke may take before that counts as a failure (0: no limit).
    delay_s: extra seconds before each run (rehearses a slow device).
    max_message_bytes: largest request accepted (default: 4x the expected request + 64 KiB).
    max_streams: Process streams served at once; the longest-idle one is closed to make room for a
      new one, and RESOURCE_EXHAUSTED only when every stream is busy. Run, Describe and the
      health service have threads of their own and always answer.
    stream_idle_s: a stream without a request for this long is closed (UNAVAILABLE, saying why).
    """
    tls: object = None
    max_in_flight: int = 32
    exit_threshold: float = None
    devices: str = None
    num_threads: int = None
    xnnpack: bool = True
    fallback: bool = False
    invoke_timeout: float = DEFAULT_INVOKE_TIMEOUT
    delay_s: float = 0.0
    max_message_bytes: int = None
    max_streams: int = 16
    stream_idle_s: float = 300.0


def serve(run_dir, index, listen="127.0.0.1:0", next_address=None, options=ServeOptions()):
    """Loads stage ``index`` of a run folder and serves it; returns a StageServer (already SERVING).

    Args:
      listen: HOST:PORT to bind (port 0: any free port; see ``StageServer.port``).
      next_address: HOST:PORT of the next stage (required unless this is the last stage).
      options: a ServeOptions.
    Raises:
      ValueError: bad stage index, missing --next, bad address.
      runfolder.ManifestError: the run folder or a stage file is wrong.
    """
    tls, max_in_flight, exit_threshold = options.tls, options.max_in_flight, options.exit_threshold
    max_streams, stream_idle_s = options.max_streams, options.stream_idle_s
    manifest = runfolder.load(run_dir)
    check_exit_threshold(manifest, exit_threshold)
    stage_plan = plan.stage_plan(manifest, index, run_dir)
    if next_address is None and not stage_plan.is_last:
        raise OptionError(f"stage {index} is not the last of {stage_plan.stages}: pass --next HOST:PORT "
                         f"of stage {index + 1}")
    if next_address:
        channels.split_hosts(next_address)
    if max_in_flight < 1:
        raise OptionError(f"--max-in-flight must be 1 or more, got {max_in_flight}")
    if max_streams < 1 or stream_idle_s <= 0:
        raise OptionError(f"--max-streams must be 1 or more and --stream-idle-s above 0, got {max_streams} and "
                         f"{stream_idle_s}")
    stage = load_stage(run_dir, manifest, index, options)
    limit = options.max_message_bytes or 4 * request_bytes(stage_plan.receives) + 64 * 1024
    streams = StreamLimit(f"stage {index}", max_streams, stream_idle_s)
    servicer = StageServicer(stage, stage_plan, next_address, options, limit, streams)
    # A thread for every stream and every admitted Run, and 4 more, so health checks never wait for one.
    # No maximum_concurrent_rpcs: it counts health checks too, and idle streams then locked them out.
    server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=max_streams + max_in_flight + 4,
                                                               thread_name_prefix=f"stage-{index}-rpc"),
                         options=[("grpc.max_receive_message_length", limit),
                                  ("grpc.max_send_message_length", channels.DEFAULT_MAX_MESSAGE_BYTES),
                                  ("grpc.max_connection_idle_ms", int(stream_idle_s * 1000)),
                                  *channels.SERVER_KEEPALIVE_OPTIONS])
    server.add_generic_rpc_handlers((stage_handler(servicer, SERVICE_NAME),))
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    try:
        port = server.add_secure_port(listen, tls.server_credentials()) if tls else server.add_insecure_port(listen)
    except RuntimeError:
        port = 0
    if not port:
        raise OptionError(f"cannot listen on {listen}: the address is in use or not on this machine")
    server.start()
    stop_sweeper = threading.Event()
    threading.Thread(target=streams.run_sweeper, args=(stop_sweeper,), daemon=True, name=f"stage-{index}-idle").start()
    for name in ("", SERVICE_NAME):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return StageServer(server, servicer, health_servicer, port, stop_sweeper)
