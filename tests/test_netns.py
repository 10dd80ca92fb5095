"""Each stage server in its own network namespace (its own host, as on three Pis), joined by veth pairs on a
bridge in a private subnet; the client runs in the root namespace. The chain's predictions must equal the
in-process chain's byte for byte. Needs root and `ip netns`; everything made here is removed afterwards,
also when the test fails."""
import contextlib
import ipaddress
import os
import shutil
import subprocess
import sys
import time
import uuid

import numpy as np
import pytest

from tests.conftest import REPO, skip_unless_strict

STAGE_PORT = 50071


def _ip(*args, check=True):
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def netns_unavailable():
    """Why this machine cannot run the test, or None."""
    if os.geteuid() != 0:
        return "needs root to create network namespaces (run the tests as root, e.g. in CI's container)"
    if shutil.which("ip") is None:
        return "the `ip` tool (iproute2) is not installed"
    probe = f"cstprobe{uuid.uuid4().hex[:6]}"
    made = _ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"`ip netns add` failed: {made.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    return None


def _free_subnet():
    """A /24 in 10.0.0.0/8 that no interface here uses."""
    used = _ip("-4", "-o", "addr").stdout
    for third in range(200, 250):
        second = int(uuid.uuid4().int % 200) + 20
        net = ipaddress.ip_network(f"10.{second}.{third}.0/24")
        if f"10.{second}.{third}." not in used:
            return net
    raise RuntimeError("no free 10.x.y.0/24 subnet found")


class Hosts:
    """Network namespaces on one bridge: ``addresses[k]`` is host k's address; the root namespace has .1."""

    def __init__(self, count):
        self.tag = uuid.uuid4().hex[:6]
        self.bridge = f"cbr{self.tag}"
        self.names = [f"cst{self.tag}h{k}" for k in range(count)]
        self.subnet = _free_subnet()
        hosts = list(self.subnet.hosts())
        self.gateway, self.addresses = str(hosts[0]), [str(hosts[10 + k]) for k in range(count)]
        self._veths = []

    def __enter__(self):
        try:
            _ip("link", "add", self.bridge, "type", "bridge")
            _ip("addr", "add", f"{self.gateway}/{self.subnet.prefixlen}", "dev", self.bridge)
            _ip("link", "set", self.bridge, "up")
            for k, (name, address) in enumerate(zip(self.names, self.addresses)):
                outside, inside = f"cv{self.tag}{k}", f"cp{self.tag}{k}"
                _ip("netns", "add", name)
                _ip("link", "add", outside, "type", "veth", "peer", "name", inside)
                self._veths.append(outside)
                _ip("link", "set", outside, "master", self.bridge, "up")
                _ip("link", "set", inside, "netns", name)
                _ip("-n", name, "link", "set", "lo", "up")
                _ip("-n", name, "link", "set", inside, "name", "eth0")
                _ip("-n", name, "addr", "add", f"{address}/{self.subnet.prefixlen}", "dev", "eth0")
                _ip("-n", name, "link", "set", "eth0", "up")
                _ip("-n", name, "route", "add", "default", "via", self.gateway)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc):
        for name in self.names:
            _ip("netns", "del", name, check=False)           # also removes the veth ends inside
        for veth in self._veths:
            _ip("link", "del", veth, check=False)
        _ip("link", "del", self.bridge, check=False)

    def start(self, k, args, log):
        """Starts ``python args`` in host k's namespace, output to ``log``."""
        command = ["ip", "netns", "exec", self.names[k], sys.executable, *args]
        return subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _stop(processes):
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_serving(address, processes, logs, timeout_s=60.0):
    """Waits until the standard gRPC health service at ``address`` says SERVING."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    deadline = time.monotonic() + timeout_s
    while True:
        for process, log in zip(processes, logs):
            if process.poll() is not None:
                raise AssertionError(f"a stage server exited ({process.returncode}):\n{_read(log)}")
        with grpc.insecure_channel(address) as channel:
            try:
                reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1.0)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{address} not SERVING after {timeout_s:.0f} s:\n" +
                                 "\n".join(_read(log) for log in logs))
        time.sleep(0.2)


def _read(log):
    with open(log.name) as f:
        return f.read()[-3000:]


@contextlib.contextmanager
def stage_servers(hosts, run, stage_count, tmp_path):
    """Stage k serves on host k's address and forwards to host k+1's; yields the 'addr:port' list."""
    addresses = [f"{a}:{STAGE_PORT}" for a in hosts.addresses]
    processes, logs = [], []
    with contextlib.ExitStack() as files:
        try:
            for k in range(stage_count):
                args = ["-m", "deploy", "serve-stage", "--run", str(run), "--stage", str(k),
                        "--listen", addresses[k]]
                if k + 1 < stage_count:
                    args += ["--next", addresses[k + 1]]
                logs.append(files.enter_context(open(tmp_path / f"stage{k}.log", "w")))
                processes.append(hosts.start(k, args, logs[-1]))
            for address in addresses:
                _wait_serving(address, processes, logs)
            yield addresses
        finally:
            _stop(processes)


@pytest.fixture
def three_hosts():
    reason = netns_unavailable()
    if reason:
        skip_unless_strict(reason)
    with Hosts(3) as hosts:
        yield hosts
    leftover = [n for n in hosts.names if n in _ip("netns", "list").stdout]
    assert not leftover, f"namespaces left behind: {leftover}"


_LISTEN_ONCE = """
import socket, sys
server = socket.create_server((sys.argv[1], int(sys.argv[2])))
print("listening", flush=True)
connection, peer = server.accept()
connection.sendall(peer[0].encode())
"""

_CONNECT = """
import socket, sys
try:
    print(socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3).recv(64).decode())
except OSError as exc:
    print(type(exc).__name__)
"""


def _in(hosts, k, code, *args):
    command = ["ip", "netns", "exec", hosts.names[k], sys.executable, "-c", code, *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=20, check=False).stdout.strip()


def test_hosts_are_separate(three_hosts):
    """The harness itself: each namespace holds only its own address and its own loopback, and reaches the
    others across the bridge (the peer address a server sees is the other namespace's)."""
    hosts = three_hosts
    for k, name in enumerate(hosts.names):
        own = _ip("-n", name, "-4", "-o", "addr").stdout
        assert hosts.addresses[k] in own
        assert all(a not in own for j, a in enumerate(hosts.addresses) if j != k)
    server = subprocess.Popen(["ip", "netns", "exec", hosts.names[2], sys.executable, "-c", _LISTEN_ONCE,
                               hosts.addresses[2], str(STAGE_PORT)], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout.readline().strip() == "listening"
        assert _in(hosts, 0, _CONNECT, "127.0.0.1", STAGE_PORT) == "ConnectionRefusedError"
        assert _in(hosts, 0, _CONNECT, hosts.addresses[2], STAGE_PORT) == hosts.addresses[0]
    finally:
        _stop([server])


@pytest.mark.slow
def test_chain_across_namespaces_equals_in_process_chain(three_hosts, tiny_run, tmp_path):
    pytest.importorskip("grpc")
    client_module = pytest.importorskip("deploy.net.client", reason="deploy.net (the gRPC stage servers) "
                                        "is not in this tree yet")
    import runfolder
    from deploy.core.chain import StageChain
    from deploy.core.stages import load_stages
    from deploy.core.verify import image_feed
    manifest = runfolder.load(str(tiny_run))
    local = StageChain(load_stages(str(tiny_run), manifest, devices="cpu", tpus=[]))
    with np.load(runfolder.verify_file(str(tiny_run), manifest["dataset"]["test_set"], "test set")) as data:
        images = data["images"][:24]
    feeds = [image_feed(local, image) for image in images]
    with stage_servers(three_hosts, tiny_run, len(local.stages), tmp_path) as addresses:
        assert all(not a.startswith("127.") for a in addresses)
        client = client_module.ChainClient(addresses, timeout_s=30)
        try:
            remote = [client.run(feed) for feed in feeds]
            streamed = list(client.stream(iter(feeds)))
            infos = [client.describe(address) for address in addresses]
        finally:
            client.close()
    # Every stage ran every request on its own host, and forwarded to the next host's address.
    assert [info.processed for info in infos] == [2 * len(feeds)] * len(addresses)
    assert [info.next for info in infos] == [*addresses[1:], ""]
    for feed, got, got_streamed in zip(feeds, remote, streamed):
        want = local.run(feed)
        assert set(got) == set(want)
        for name, array in want.items():
            assert got[name].dtype == array.dtype and got[name].shape == array.shape
            assert got[name].tobytes() == array.tobytes()
            assert got_streamed[name].tobytes() == array.tobytes()
