"""Stage servers as separate processes (``launch_local``): a killed middle stage, its restart, overload,
shutdown, and 10 000 requests with none lost, duplicated or reordered."""
import signal
import threading
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from deploy.core.open import open_chain
from deploy.net import channels, codec, stage_pb2
from deploy.net.client import ChainCallError, ChainClient
from deploy.net.launch import StageProcessOptions, launch_local
from tests.net_helpers import random_feeds, rss_kib


@pytest.fixture(scope="module")
def local(tiny_run):
    return open_chain(tiny_run, "cpu")[1]


def _endless(feeds):
    while True:
        yield from feeds


def test_killing_the_middle_stage_fails_fast_and_its_restart_serves_again(tiny_run, local, tmp_path):
    with launch_local(tiny_run, base_port=0, options=StageProcessOptions(log_dir=tmp_path)) as chain, \
            ChainClient(chain.addresses) as client:
        others = [chain.processes[0].pid, chain.processes[2].pid]
        results, killed_at = client.stream_results(_endless(random_feeds(local, 50)), timeout_s=30), None
        with pytest.raises(ChainCallError) as caught:
            for count, _ in enumerate(results):
                if count == 300:
                    killed_at = time.monotonic()
                    chain.kill(1)
        waited = time.monotonic() - killed_at
        assert waited < 2.0
        assert caught.value.code == grpc.StatusCode.UNAVAILABLE
        assert f"stage 1 at {chain.addresses[1]} (hop from stage 0) is unavailable" in caught.value.details
        with pytest.raises(ChainCallError, match="stage 1 at .* is unavailable"):   # still down: fails, fast
            client.run(random_feeds(local, 1)[0], timeout_s=2)

        chain.start(1)
        feed, deadline = random_feeds(local, 1)[0], time.monotonic() + 10
        while True:
            try:
                outputs = client.run(feed, timeout_s=2)
                break
            except ChainCallError:
                assert time.monotonic() < deadline, "the chain did not serve again within 10 s of the restart"
                time.sleep(0.1)
        assert outputs.keys() == local.run(feed).keys()
        assert [chain.processes[0].pid, chain.processes[2].pid] == others
        assert all(p.poll() is None for p in chain.processes)
        assert len(list(client.stream(random_feeds(local, 200)))) == 200


def test_a_frozen_middle_stage_is_noticed_by_keepalive_and_serves_again_when_it_wakes(tiny_run, local, tmp_path):
    """SIGSTOP: the process neither answers nor closes its connections, like a machine cut off."""
    with launch_local(tiny_run, base_port=0, options=StageProcessOptions(log_dir=tmp_path)) as chain, \
            ChainClient(chain.addresses) as client:
        frozen_at = None
        with pytest.raises(ChainCallError) as caught:
            for count, _ in enumerate(client.stream(_endless(random_feeds(local, 50)), timeout_s=60)):
                if count == 200:
                    chain.processes[1].send_signal(signal.SIGSTOP)
                    frozen_at = time.monotonic()
        waited = time.monotonic() - frozen_at
        chain.processes[1].send_signal(signal.SIGCONT)
        assert waited < 6.0
        assert caught.value.code == grpc.StatusCode.UNAVAILABLE and "stage 1 at" in caught.value.details
        feed, deadline = random_feeds(local, 1)[0], time.monotonic() + 10
        while True:
            try:
                assert client.run(feed, timeout_s=2).keys() == local.run(feed).keys()
                break
            except ChainCallError:
                assert time.monotonic() < deadline, "the chain did not serve again within 10 s of SIGCONT"
                time.sleep(0.1)


def test_overload_is_refused_with_resource_exhausted_and_memory_stays_flat(tiny_run, local, tmp_path):
    slow_last = {2: ["--add-latency-ms", "5"]}      # stage 0 reads fast; the work piles up behind it
    with launch_local(tiny_run, base_port=0, options=StageProcessOptions(
            extra_args=["--max-in-flight", "4"], stage_args=slow_last, log_dir=tmp_path)) as chain:
        stub = channels.stage_stub(channels.open_channel(chain.addresses[0]))
        requests = [stage_pb2.StageRequest(request_id=i, tensors=codec.encode(f))
                    for i, f in enumerate(random_feeds(local, 2000))]

        def burst():
            return list(stub.Process(iter(requests), timeout=60))

        burst()                                    # warm up: allocator pools, gRPC buffers
        before = rss_kib(chain.processes[0].pid)
        replies = burst()
        after = rss_kib(chain.processes[0].pid)
    exhausted = grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    refused = sum(r.code == exhausted for r in replies)
    assert len(replies) == 2000 and sorted(r.request_id for r in replies) == list(range(2000))
    assert refused > 1000 and {r.code for r in replies} == {0, exhausted}
    print(f"stage 0 RSS {before} KiB before, {after} KiB after 2000 requests ({refused} refused)")
    assert after - before < 20 * 1024, f"stage 0 grew from {before} to {after} KiB under overload"


def test_sigterm_turns_health_not_serving_then_the_server_exits_cleanly(tiny_run, tmp_path):
    chain = launch_local(tiny_run, base_port=0, options=StageProcessOptions(log_dir=tmp_path))
    try:
        health = health_pb2_grpc.HealthStub(channels.open_channel(chain.addresses[2]))
        assert health.Check(health_pb2.HealthCheckRequest(), timeout=5).status == \
            health_pb2.HealthCheckResponse.SERVING
        chain.processes[2].send_signal(signal.SIGTERM)
        seen, deadline = set(), time.monotonic() + 5
        while chain.processes[2].poll() is None and time.monotonic() < deadline:
            try:
                seen.add(health.Check(health_pb2.HealthCheckRequest(), timeout=1).status)
            except grpc.RpcError:
                pass
            time.sleep(0.05)
        assert health_pb2.HealthCheckResponse.NOT_SERVING in seen
        assert chain.processes[2].wait(timeout=10) == 0
    finally:
        codes = chain.stop()
    assert codes == [0, 0, 0]


@pytest.mark.slow
def test_ten_thousand_streamed_requests_none_lost_duplicated_or_reordered(tiny_run, local, tmp_path):
    feeds = random_feeds(local, 10_000, seed=3)
    with launch_local(tiny_run, base_port=0, options=StageProcessOptions(log_dir=tmp_path)) as chain, \
            ChainClient(chain.addresses) as client:
        start = time.perf_counter()
        results = list(client.stream_results(feeds, timeout_s=300))
        seconds = time.perf_counter() - start
        processed = [client.describe(a).processed for a in chain.addresses]
    ids = [r.request_id for r in results]
    assert len(results) == 10_000 and ids == sorted(set(ids)) and len(set(ids)) == 10_000
    assert processed == [10_000] * 3
    name = local.outputs[0]["name"]
    mismatched = [i for i, (r, f) in enumerate(zip(results, feeds))
                  if r.outputs[name].tobytes() != local.run(f)[name].tobytes()]
    assert mismatched == []
    print(f"10000 requests through 3 stage processes in {seconds:.1f} s ({10_000 / seconds:.0f}/s)")


def test_concurrent_run_calls_from_threads_each_get_their_own_answer(tiny_run, local, tmp_path):
    feeds = random_feeds(local, 60, seed=5)
    expected = [local.run(f) for f in feeds]
    with launch_local(tiny_run, base_port=0, options=StageProcessOptions(log_dir=tmp_path)) as chain, \
            ChainClient(chain.addresses[0]) as client:
        got = [None] * len(feeds)

        def work(start):
            for i in range(start, len(feeds), 4):
                got[i] = client.run(feeds[i])

        threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert all(g.keys() == e.keys() and all(g[k].tobytes() == e[k].tobytes() for k in g)
               for g, e in zip(got, expected))


def test_a_stage_that_cannot_start_on_port_zero_fails_the_launch_with_its_log(tiny_run, tmp_path):
    """Stages start last first on OS-given ports; a bad option for stage 0 stops the launch with that
    stage's log, and the stages already running are stopped, not left behind."""
    from deploy.net.launch import LaunchError, LocalChain
    started = []
    real_spawn = LocalChain.spawn

    def spawn(self, index):
        real_spawn(self, index)
        started.append(self.processes[index])

    options = StageProcessOptions(log_dir=tmp_path, stage_args={0: ["--max-in-flight", "0"]})
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(LocalChain, "spawn", spawn)
        with pytest.raises(LaunchError, match=r"stage 0 did not start serving(.|\n)*max-in-flight"):
            launch_local(tiny_run, base_port=0, options=options, timeout_s=60)
    assert len(started) == 3 and all(p.poll() is not None for p in started)
    assert not list(tmp_path.glob("*.port")), "a port file outlived its stage"
