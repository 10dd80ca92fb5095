"""The HTTP serving API: same answer as `python -m deploy --image`, readiness, the concurrency bound
(503 + Retry-After, flat memory), the token, the body size limit and bad input of every kind."""
import os
import pathlib
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

import runfolder
from deploy.serving.app import create_app
from deploy.serving.upstream import TEST_DELAY_ENV, LocalUpstream
from tests.conftest import REPO, png_bytes, run_cli
from tests.waiting import wait_until


# ---------------------------------------------------------------- helpers (also used by test_serving_jobs)
def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def held_out_png(run, index=0):
    """(PNG bytes, pixels) of the run's held-out test image number ``index``."""
    record = runfolder.load(run)["dataset"]["test_set"]
    with np.load(run / record["path"]) as data:
        pixels = data["images"][index]
    return png_bytes(pixels), pixels


class ServerProcess:
    """`python -m deploy serve-api` (or worker) as a real process on a loopback port."""

    def __init__(self, command, run, *args, env=None):
        self.port = free_port()
        full_env = dict(os.environ)
        full_env.update(env or {})
        listen = ["--listen", f"127.0.0.1:{self.port}"] if command == "serve-api" else []
        self.proc = subprocess.Popen([sys.executable, "-m", "deploy", command, "--run", str(run), *listen,
                                      *map(str, args)], cwd=REPO, env=full_env, start_new_session=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.url = f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout_s=60.0):
        def ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited {self.proc.returncode}: {self.proc.stdout.read()}")
            try:
                return httpx.get(self.url + "/readyz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False
        wait_until(ready, timeout_s, "the server to be ready")
        return self

    def rss_kb(self):
        for line in pathlib.Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")

    def kill(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self.proc.stdout.close()

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.proc.stdout.close()


def ready_client(app):
    """A TestClient (lifespan started) once /readyz says ready."""
    client = TestClient(app)
    client.__enter__()
    wait_until(lambda: client.get("/readyz").status_code == 200, 60, "the upstream to load")
    return client


# ---------------------------------------------------------------- same answer as the command line
@pytest.fixture(scope="module")
def client(tiny_run):
    c = ready_client(create_app(LocalUpstream(tiny_run), None, max_body_bytes=256 * 1024))
    yield c
    c.__exit__(None, None, None)


def _cli_top_label(run, png_path):
    result = run_cli("deploy", "--run", run, "--image", png_path)
    assert result.returncode == 0, result.stderr
    line = next(x for x in result.stdout.splitlines() if x.startswith(f"{png_path}: "))
    return line.split(": ", 1)[1].split(" (")[0]


def test_classify_gives_the_same_top_class_as_the_command_line(tiny_run, tmp_path, client):
    for index in (0, 1):
        png, _ = held_out_png(tiny_run, index)
        path = tmp_path / f"digit{index}.png"
        path.write_bytes(png)
        response = client.post("/v1/classify", content=png, headers={"Content-Type": "image/png"})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["top"][0]["label"] == _cli_top_label(tiny_run, path)
        assert len(body["top"]) == 3 and body["top"][0]["score"] >= body["top"][1]["score"]
        assert body["placement"] == ["cpu"] * 3
        # multipart upload of the same file: the same answer
        multipart = client.post("/v1/classify", files={"image": ("d.png", png, "image/png")})
        assert multipart.status_code == 200 and multipart.json()["top"] == body["top"]


def test_not_ready_until_the_upstream_is_loaded(tiny_run):
    release = threading.Event()

    class SlowLoading(LocalUpstream):
        def load(self):
            release.wait(30)
            return super().load()

    png, _ = held_out_png(tiny_run)
    with TestClient(create_app(SlowLoading(tiny_run))) as c:
        assert c.get("/healthz").json() == {"status": "ok"}
        waiting = c.get("/readyz")
        assert waiting.status_code == 503 and "loading" in waiting.json()["error"]
        early = c.post("/v1/classify", content=png, headers={"Content-Type": "image/png"})
        assert early.status_code == 503 and "Retry-After" in early.headers
        release.set()
        wait_until(lambda: c.get("/readyz").status_code == 200, 30, "ready")
        height, width, channels = held_out_png(tiny_run)[1].shape
        assert c.get("/readyz").json()["expects"] == {"width": width, "height": height,
                                                      "mode": "L" if channels == 1 else "RGB"}
        assert c.post("/v1/classify", content=png, headers={"Content-Type": "image/png"}).status_code == 200


def test_a_run_that_cannot_load_says_why_in_readyz(tmp_path):
    with TestClient(create_app(LocalUpstream(tmp_path / "missing"))) as c:
        body = wait_until(lambda: "failed" in c.get("/readyz").json().get("error", "") and c.get("/readyz").json())
        assert "failed to load" in body["error"] and body["ready"] is False
        assert c.get("/healthz").status_code == 200


# ---------------------------------------------------------------- bad input, each a clear JSON error
def _post(client, data, content_type="image/png", query=""):
    return client.post("/v1/classify" + query, content=data, headers={"Content-Type": content_type})


def test_bad_input_gets_a_clear_json_error_and_the_server_stays_up(tiny_run, client):
    png, pixels = held_out_png(tiny_run)
    height, width, channels = pixels.shape

    wrong_type = _post(client, b'{"image": 1}', "application/json")
    assert wrong_type.status_code == 415 and "application/json" in wrong_type.json()["error"]
    assert "image/png" in wrong_type.json()["error"]
    no_type = client.post("/v1/classify", content=png, headers={"Content-Type": ""})
    assert no_type.status_code == 415

    empty = _post(client, b"")
    assert empty.status_code == 400 and "empty body" in empty.json()["error"]

    corrupt = _post(client, png[:40])
    assert corrupt.status_code == 422 and "not a readable image" in corrupt.json()["error"]

    big = np.asarray(Image.fromarray(pixels[:, :, 0]).resize((width * 3, height * 3)))[:, :, None]
    wrong_size = _post(client, png_bytes(big))
    assert wrong_size.status_code == 422
    assert f"expected {width}x{height}" in wrong_size.json()["error"]
    assert wrong_size.json()["expects"]["width"] == width and "resize=true" in wrong_size.json()["hint"]

    rgb = np.repeat(pixels, 3, axis=2) if channels == 1 else pixels[:, :, :1]
    wrong_mode = _post(client, png_bytes(rgb))
    assert wrong_mode.status_code == 422 and "has mode" in wrong_mode.json()["error"]

    fixed = _post(client, png_bytes(np.repeat(big, 3, axis=2)), query="?resize=true&convert=true")
    assert fixed.status_code == 200 and len(fixed.json()["top"]) == 3

    bad_flag = _post(client, png, query="?resize=maybe")
    assert bad_flag.status_code == 422 and "query.resize" in bad_flag.json()["error"]

    no_field = client.post("/v1/classify", files={"file": ("d.png", png, "image/png")})
    assert no_field.status_code == 422 and "field 'image'" in no_field.json()["error"]

    huge = _post(client, b"\0" * (256 * 1024 + 1))
    assert huge.status_code == 413 and "262144 bytes" in huge.json()["error"]

    jobs = client.post("/v1/jobs", content=png, headers={"Content-Type": "image/png"})
    assert jobs.status_code == 503 and "--queue" in jobs.json()["error"]

    assert client.get("/healthz").status_code == 200
    assert _post(client, png).status_code == 200


# ---------------------------------------------------------------- a real uvicorn server
TOKEN = "s3cret-token"
LIMIT = 64 * 1024


@pytest.fixture(scope="module")
def server(tiny_run, tmp_path_factory):
    """serve-api with a token, max 1 classification at once, each slowed to 0.4 s (test-only hook)."""
    folder = tmp_path_factory.mktemp("serve")
    token_file = folder / "token"
    token_file.write_text(TOKEN + "\n")
    srv = ServerProcess("serve-api", tiny_run, "--token-file", token_file, "--max-concurrent", 1,
                        "--max-body-bytes", LIMIT, "--retry-after-s", 2, "--queue", f"sqlite:{folder}/jobs.db",
                        env={TEST_DELAY_ENV: "0.4"}).wait_ready()
    yield srv
    srv.stop()


AUTH = {"Authorization": f"Bearer {TOKEN}"}


def test_token_is_required_except_for_health(tiny_run, server):
    png, _ = held_out_png(tiny_run)
    headers = {"Content-Type": "image/png"}
    missing = httpx.post(server.url + "/v1/classify", content=png, headers=headers)
    assert missing.status_code == 401 and "missing token" in missing.json()["error"]
    assert missing.headers["WWW-Authenticate"] == "Bearer"
    wrong = httpx.post(server.url + "/v1/classify", content=png, headers={**headers, "Authorization": "Bearer no"})
    assert wrong.status_code == 401 and "wrong token" in wrong.json()["error"]
    assert httpx.get(server.url + "/v1/jobs/x").status_code == 401
    right = httpx.post(server.url + "/v1/classify", content=png, headers={**headers, **AUTH}, timeout=10)
    assert right.status_code == 200 and right.json()["top"]
    assert httpx.get(server.url + "/healthz").status_code == 200


def test_huge_bodies_get_413_before_being_read(server):
    start = time.perf_counter()
    declared = httpx.post(server.url + "/v1/classify", content=b"\0" * (8 * 1024 * 1024),
                          headers={"Content-Type": "image/png", **AUTH}, timeout=10)
    assert declared.status_code == 413 and str(LIMIT) in declared.json()["error"]

    def chunks():   # no Content-Length: counted as it arrives
        for _ in range(64):
            yield b"\0" * 16384

    chunked = httpx.post(server.url + "/v1/classify", content=chunks(),
                         headers={"Content-Type": "image/png", **AUTH}, timeout=10)
    assert chunked.status_code == 413 and "max_body_bytes" in chunked.json()
    assert time.perf_counter() - start < 5
    assert httpx.get(server.url + "/healthz").status_code == 200


@pytest.mark.slow
def test_overload_gets_503_with_retry_after_and_memory_stays_flat(tiny_run, server):
    png, _ = held_out_png(tiny_run)
    headers = {"Content-Type": "image/png", **AUTH}
    stop, served = threading.Event(), []

    def keep_busy():   # one slow classification after another holds the only slot
        with httpx.Client(base_url=server.url, timeout=10) as c:
            while not stop.is_set():
                served.append(c.post("/v1/classify", content=png, headers=headers).status_code)

    holder = threading.Thread(target=keep_busy)
    holder.start()
    try:
        codes, retry_after = [], set()
        with httpx.Client(base_url=server.url, timeout=10) as c:
            def burst(n):
                for _ in range(n):
                    r = c.post("/v1/classify", content=png, headers=headers)
                    codes.append(r.status_code)
                    if r.status_code == 503:
                        retry_after.add(r.headers.get("Retry-After"))
                        assert "busy" in r.json()["error"]
            time.sleep(0.2)   # the holder's first request is in
            burst(200)
            before = server.rss_kb()
            burst(2000)
            after = server.rss_kb()
    finally:
        stop.set()
        holder.join(15)
    assert codes.count(503) > 2000, f"expected mostly 503, got {codes.count(503)} of {len(codes)}"
    assert retry_after == {"2"}
    assert after - before < 10 * 1024, f"server RSS grew {after - before} kB over 2000 rejected requests"
    assert 200 in served and set(served) <= {200, 503}   # the slot kept working between rejections
    print(f"server RSS {before} kB -> {after} kB over 2000 rejected requests; {served.count(200)} served")



# ---------------------------------------------------------------- the upstream as a chain of stage servers
@pytest.mark.slow
def test_a_chain_of_stage_servers_gives_the_in_process_answer(tiny_run, client):
    from deploy.net.launch import launch_local
    from deploy.serving.upstream import ChainUpstream
    pngs = [held_out_png(tiny_run, i)[0] for i in range(3)]
    local = [_post(client, png).json()["top"] for png in pngs]
    stages = launch_local(tiny_run, base_port=0)
    try:
        with TestClient(create_app(ChainUpstream(tiny_run, stages.addresses, timeout_s=5))) as remote:
            wait_until(lambda: remote.get("/readyz").status_code == 200, 30, "ready")
            answers = [_post(remote, png).json() for png in pngs]
            assert [a["top"] for a in answers] == local
            assert answers[0]["placement"] == [f"remote:{a}" for a in stages.addresses]
            assert _post(remote, pngs[0][:30]).status_code == 422
            stages.kill(1)
            not_ready = remote.get("/readyz")
            assert not_ready.status_code == 503 and stages.addresses[1] in not_ready.json()["error"]
            broken = _post(remote, pngs[0])
            assert broken.status_code == 502 and "stage chain" in broken.json()["error"]
            assert remote.get("/healthz").status_code == 200
    finally:
        stages.stop()

