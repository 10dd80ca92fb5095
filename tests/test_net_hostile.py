"""Stage servers against hostile or careless callers, on loopback: idle streams cannot lock anyone out,
long error texts keep their status, garbage bytes are the caller's error, a slow hop is named."""
import logging
import queue
import threading
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from deploy.core.chain import run_interpreter
from deploy.core.open import open_chain
from deploy.net import channels, stage_pb2
from deploy.net.client import ChainCallError, ChainClient
from tests.net_helpers import addresses, random_feeds, serve_chain, stop_all
from tests.waiting import wait_until


@pytest.fixture(scope="module")
def local(tiny_run):
    return open_chain(tiny_run, "cpu")[1]


def _health(address, timeout_s=2.0):
    channel = channels.open_channel(address)
    try:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=timeout_s)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    finally:
        channel.close()


class IdleStream:
    """A Process stream opened and left without a request, as a careless or hostile client does."""

    def __init__(self, address):
        self.channel = channels.open_channel(address)
        self.requests = queue.SimpleQueue()
        self.call = channels.stage_stub(self.channel).Process(iter(self.requests.get, None))
        self.ended = queue.SimpleQueue()
        threading.Thread(target=self._wait, daemon=True).start()

    def _wait(self):
        try:
            for _ in self.call:
                pass
            self.ended.put(("OK", ""))
        except grpc.RpcError as exc:
            self.ended.put((exc.code().name, exc.details()))

    def close(self):
        self.requests.put(None)
        self.call.cancel()
        self.channel.close()


def test_twenty_idle_streams_lock_nobody_out(tiny_run, local):
    servers = serve_chain(tiny_run)   # --max-streams 16, as by default
    first = addresses(servers)[0]
    idle = [IdleStream(first) for _ in range(20)]
    try:
        time.sleep(1.2)   # idle for longer than a stream may be before it is closed to make room
        assert _health(first) == "SERVING", "the health service always answers"
        feed = random_feeds(local, 5)
        with ChainClient(addresses(servers)) as client:
            expected = [local.run(f) for f in feed]
            assert all(client.run(f)[k].tobytes() == e[k].tobytes() for f, e in zip(feed, expected) for k in e)
            streamed = list(client.stream(feed))
        assert [s[k].tobytes() for s in streamed for k in s] == [e[k].tobytes() for e in expected for k in e]
        ended = [s.ended.get_nowait() for s in idle if not s.ended.empty()]
        refused = [e for e in ended if e[0] == "RESOURCE_EXHAUSTED"]
        closed = [e for e in ended if e[0] == "UNAVAILABLE" and "closed this stream, idle for" in e[1]]
        assert len(refused) <= 4, "only streams 17-20 can be refused (while the first 16 were open under a second)"
        assert len(closed) >= 1, "an idle stream was closed to make room for the new stream"
        assert len(refused) + len(closed) == len(ended), ended
    finally:
        for stream in idle:
            stream.close()
        stop_all(servers)


def test_busy_streams_are_not_evicted_and_past_the_bound_new_ones_are_refused(tiny_run, local):
    servers = serve_chain(tiny_run, max_streams=2)
    feeds = random_feeds(local, 4)
    stop, counts = threading.Event(), [0, 0]

    def paced():
        while not stop.is_set():
            yield feeds[0]
            time.sleep(0.05)

    def busy(k):
        with ChainClient(addresses(servers)) as client:
            for _ in client.stream(paced(), timeout_s=30):
                counts[k] += 1
    threads = [threading.Thread(target=busy, args=(k,), daemon=True) for k in (0, 1)]
    try:
        for thread in threads:
            thread.start()
        wait_until(lambda: min(counts) >= 3, 30, "both busy streams answering")
        with ChainClient(addresses(servers)) as client, pytest.raises(ChainCallError) as caught:
            list(client.stream(feeds, timeout_s=5))
        assert caught.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "already serves 2 busy streams (--max-streams)" in caught.value.details
        assert _health(addresses(servers)[0]) == "SERVING"
        with ChainClient(addresses(servers)) as client:
            assert client.run(feeds[1]), "unary calls do not count against the stream bound"
        seen = list(counts)
        wait_until(lambda: all(now > then for now, then in zip(counts, seen)), 30, "both busy streams still running")
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)
        stop_all(servers)


def test_a_stream_idle_past_its_limit_is_closed_saying_why(tiny_run, local):
    servers = serve_chain(tiny_run, stream_idle_s=0.5)
    try:
        stream = IdleStream(addresses(servers)[0])
        code, text = stream.ended.get(timeout=10)
        stream.close()
        assert code == "UNAVAILABLE" and "closed this stream after 0.5 s without a request (--stream-idle-s)" in text
        with ChainClient(addresses(servers)) as client:
            assert len(list(client.stream(random_feeds(local, 3)))) == 3
    finally:
        stop_all(servers)


@pytest.fixture(scope="module")
def served(tiny_run):
    servers = serve_chain(tiny_run, per_stage={1: {"delay_s": 0.5}})
    yield servers
    stop_all(servers)


def test_long_error_texts_keep_their_status(served, local):
    stub = channels.stage_stub(channels.open_channel(addresses(served)[0]))
    name = local.inputs[0]["name"]
    cases = [stage_pb2.Tensor(name=name, dtype="uint8", shape=[1] * 8000, data=b"\0"),
             stage_pb2.Tensor(name="n" * 60_000, dtype="uint8", shape=[1], data=b"\0"),
             stage_pb2.Tensor(name=name, dtype="d" * 30_000, shape=[1], data=b"\0")]
    for tensor in cases:
        with pytest.raises(grpc.RpcError) as caught:
            stub.Run(stage_pb2.StageRequest(request_id=1, tensors=[tensor]), timeout=5)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()[:200]
        assert len(caught.value.details()) < 1200 and caught.value.details().startswith("stage 0: ")
        replies = list(stub.Process(iter([stage_pb2.StageRequest(request_id=2, tensors=[tensor])]), timeout=5))
        assert replies[0].code == grpc.StatusCode.INVALID_ARGUMENT.value[0] and len(replies[0].error) < 1200


def test_garbage_bytes_are_invalid_argument_and_logged_with_the_peer(served, local, caplog):
    channel = channels.open_channel(addresses(served)[0])
    garbage = b"\xff\xff\xff\xff garbage"
    with caplog.at_level(logging.WARNING, logger="deploy.net.streams"):
        for method in ("Run", "Describe"):
            with pytest.raises(grpc.RpcError) as caught:
                channel.unary_unary(f"/coralstages.v1.Stage/{method}")(garbage, timeout=5)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "are not a" in caught.value.details() and "stage.proto" in caught.value.details()
        with pytest.raises(grpc.RpcError) as caught:
            list(channel.stream_stream("/coralstages.v1.Stage/Process")(iter([garbage]), timeout=5))
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    logged = [r.getMessage() for r in caplog.records]
    assert len([m for m in logged if "bytes from ipv4:127.0.0.1:" in m]) == 3, logged
    with ChainClient(addresses(served)) as client:
        assert client.run(random_feeds(local, 1)[0])


def test_a_deadline_passing_at_a_later_stage_names_that_stage(served, local):
    with ChainClient(addresses(served)) as client, pytest.raises(ChainCallError) as caught:
        client.run(random_feeds(local, 1)[0], timeout_s=0.25)
    assert caught.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert caught.value.details.startswith("stage 1 at 127.0.0.1:"), caught.value.details
    crossing = run_interpreter(local.stages[0].interpreter, random_feeds(local, 1)[0])
    with ChainClient(addresses(served)[1:]) as client, pytest.raises(ChainCallError) as caught:
        client.run(crossing, timeout_s=0.25)   # straight to the slow stage
    assert caught.value.details.startswith(f"stage at {addresses(served)[1]} did not answer within 0.25 s")


@pytest.mark.parametrize("stage", [0, 2], ids=["forwarding stage", "last stage"])
def test_a_fault_of_the_stage_itself_fails_the_stream_loudly_and_the_stage_serves_on(tiny_run, local, caplog,
                                                                                      stage):
    """A bug in a stage (here: its request handling raises on the third request) must not end a stream as
    if the caller had finished: the caller gets an error, the log a traceback, the next stream its answers."""
    servers = serve_chain(tiny_run)
    servicer = servers[stage].servicer
    real_take, seen = servicer._take, []

    def faulty_take(request, stream):
        seen.append(request.request_id)
        if len(seen) == 3:
            raise RuntimeError("a bug in the stage")
        return real_take(request, stream)

    servicer._take = faulty_take
    feeds = random_feeds(local, 6)
    try:
        with ChainClient(addresses(servers)) as client, pytest.raises(ChainCallError) as caught:
            list(client.stream(feeds, timeout_s=20))
        assert caught.value.code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), caught.value.code
        assert any("a bug in the stage" in (r.exc_text or r.getMessage()) for r in caplog.records), \
            [r.getMessage() for r in caplog.records]
        servicer._take = real_take
        with ChainClient(addresses(servers)) as client:
            streamed = list(client.stream(feeds, timeout_s=20))
        expected = [local.run(f) for f in feeds]
        assert [s[k].tobytes() for s in streamed for k in s] == [e[k].tobytes() for e in expected for k in e]
    finally:
        stop_all(servers)
