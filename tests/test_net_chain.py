"""A 3-stage chain of real gRPC stage servers on loopback (in this process): exact outputs, refusals,
deadlines, the in-flight bound, health."""
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from deploy.core.open import open_chain
from deploy.net import channels, codec, stage_pb2
from deploy.net.client import ChainCallError, ChainClient
from tests.net_helpers import addresses, random_feeds, serve_chain, stop_all


@pytest.fixture(scope="module")
def served(tiny_run):
    servers = serve_chain(tiny_run)
    yield servers
    stop_all(servers)


@pytest.fixture(scope="module")
def local(tiny_run):
    return open_chain(tiny_run, "cpu")[1]


def _same(a, b):
    return a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and a[k].tobytes() == b[k].tobytes() for k in a)


def test_outputs_equal_the_in_process_chain_byte_for_byte(served, local):
    feeds = random_feeds(local, 40)
    expected = [local.run(f) for f in feeds]
    with ChainClient(addresses(served)) as client:
        assert all(_same(client.run(f), e) for f, e in zip(feeds, expected))
        assert all(_same(got, e) for got, e in zip(client.stream(feeds), expected))
        outputs, exit_stage = client.run_with_exit(feeds[0])
        assert exit_stage is None and _same(outputs, expected[0])
        assert set(client.health().values()) == {"SERVING"}
        info = [client.describe(a) for a in client.addresses]
    assert [i.stage for i in info] == [0, 1, 2] and [i.next for i in info] == addresses(served)[1:] + [""]


def _request(local, change=None):
    tensor = codec.encode(random_feeds(local, 1)[0])[0]
    if change:
        change(tensor)
    return stage_pb2.StageRequest(request_id=7, tensors=[tensor] if tensor is not None else [])


BAD = {
    "name": (lambda t: t.__setattr__("name", "wrong"), "unexpected tensor 'wrong'"),
    "dtype": (lambda t: t.__setattr__("dtype", "int8"), "has dtype 'int8', expected 'uint8'"),
    "shape": (lambda t: t.shape.__setitem__(1, 27), r"has shape \[1, 27, 28, 1\], expected \[1, 28, 28, 1\]"),
    "truncated": (lambda t: t.__setattr__("data", t.data[:100]), "carries 100 bytes, expected 784"),
    "oversized": (lambda t: t.__setattr__("data", t.data + b"x"), "carries 785 bytes, expected 784"),
}


@pytest.mark.parametrize("what", sorted(BAD))
def test_a_mismatched_tensor_is_refused_and_the_server_serves_the_next_request(served, local, what):
    change, message = BAD[what]
    stub = channels.stage_stub(channels.open_channel(addresses(served)[0]))
    with pytest.raises(grpc.RpcError) as caught:
        stub.Run(_request(local, change), timeout=5)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details().startswith("stage 0: ")
    assert __import__("re").search(message, caught.value.details())
    # Over a stream, the bad request fails alone and the good one after it is answered.
    replies = list(stub.Process(iter([_request(local, change), _request(local)]), timeout=5))
    assert [r.code for r in replies] == [grpc.StatusCode.INVALID_ARGUMENT.value[0], 0]
    assert replies[1].tensors[0].name == local.outputs[0]["name"]


def test_an_empty_request_and_a_bad_middle_hop_request_are_refused(served, local):
    stub = channels.stage_stub(channels.open_channel(addresses(served)[0]))
    with pytest.raises(grpc.RpcError) as caught:
        stub.Run(stage_pb2.StageRequest(request_id=1), timeout=5)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "the request carries no tensors; expected 'serving_default_image:0' (uint8 [1, 28, 28, 1])" in \
        caught.value.details()
    middle = channels.stage_stub(channels.open_channel(addresses(served)[1]))
    with pytest.raises(grpc.RpcError) as caught:       # stage 1 takes stage 0's output, not the image
        middle.Run(_request(local), timeout=5)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "stage 1: unexpected tensor" in \
        caught.value.details()
    with ChainClient(addresses(served)) as client:
        assert client.run(random_feeds(local, 1)[0])


def test_a_huge_body_is_refused_by_the_size_limit(served, local):
    stub = channels.stage_stub(channels.open_channel(addresses(served)[0]))
    huge = _request(local, lambda t: t.__setattr__("data", bytes(8 * 1024 * 1024)))
    with pytest.raises(grpc.RpcError) as caught:
        stub.Run(huge, timeout=5)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "larger than max" in caught.value.details()
    assert stub.Run(_request(local), timeout=5).code == 0


def test_health_serves_the_standard_service_and_says_not_serving_once_shutdown_begins(tiny_run):
    servers = serve_chain(tiny_run)
    try:
        health = health_pb2_grpc.HealthStub(channels.open_channel(addresses(servers)[2]))
        for name in ("", "coralstages.v1.Stage"):
            status = health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5).status
            assert status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as caught:
            health.Check(health_pb2.HealthCheckRequest(service="nonsense"), timeout=5)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        servers[2].begin_shutdown()
        status = health.Check(health_pb2.HealthCheckRequest(), timeout=5).status
        assert status == health_pb2.HealthCheckResponse.NOT_SERVING
    finally:
        stop_all(servers)


def test_a_deadline_shorter_than_the_chain_fails_and_the_next_stage_never_runs_it(tiny_run, local):
    servers = serve_chain(tiny_run, per_stage={1: {"delay_s": 0.6}})
    try:
        with ChainClient(addresses(servers)) as client:
            assert client.run(random_feeds(local, 1)[0], timeout_s=5)
            before = [client.describe(a).processed for a in client.addresses]
            start = time.monotonic()
            with pytest.raises(ChainCallError) as caught:
                client.run(random_feeds(local, 1)[0], timeout_s=0.2)
            assert caught.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
            assert time.monotonic() - start < 0.5
            time.sleep(0.8)      # stage 1 finishes its sleep; the request must not reach stage 2
            after = [client.describe(a).processed for a in client.addresses]
    finally:
        stop_all(servers)
    assert after[0] == before[0] + 1 and after[2] == before[2]


def test_past_the_in_flight_bound_requests_get_resource_exhausted(tiny_run, local):
    servers = serve_chain(tiny_run, max_in_flight=4, per_stage={2: {"delay_s": 0.05}})
    try:
        stub = channels.stage_stub(channels.open_channel(addresses(servers)[0]))
        requests = [stage_pb2.StageRequest(request_id=i, tensors=codec.encode(f))
                    for i, f in enumerate(random_feeds(local, 20))]
        replies = list(stub.Process(iter(requests), timeout=20))
        codes = [grpc.StatusCode.OK.value[0], grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]]
        assert sorted(r.request_id for r in replies) == list(range(20))
        assert {r.code for r in replies} == set(codes)
        refused = [r for r in replies if r.code == codes[1]]
        assert len(refused) >= 10 and "stage 0 already holds 4 requests (--max-in-flight)" in refused[0].error
        # A client keeping within the bound (its window is read from Describe) loses nothing.
        with ChainClient(addresses(servers)[0]) as client:
            assert len(list(client.stream(random_feeds(local, 30)))) == 30
    finally:
        stop_all(servers)
