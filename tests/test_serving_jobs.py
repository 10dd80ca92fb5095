"""The job queue: records change state once (SQLite and a real redis-server), jobs survive an API
restart, a worker SIGKILLed mid-job (retried, or failed after max attempts), never lost, never done twice."""
import ast
import itertools
import os
import pickle
import shutil
import sqlite3
import subprocess
import threading
import time

import httpx
import numpy as np
import pytest

from deploy.serving.app import create_app
from deploy.serving.queue import QueueError, open_queue
from deploy.serving.upstream import TEST_DELAY_ENV, LocalUpstream
from tests.conftest import REPO, png_bytes, skip_unless_strict
from tests.test_serving_api import (
    ServerProcess,
    free_port,
    held_out_png,
    ready_client,
)
from tests.waiting import wait_until


@pytest.fixture(scope="module")
def redis_url():
    """A real redis-server on a free loopback port, nothing saved to disk."""
    if not shutil.which("redis-server"):
        skip_unless_strict("redis-server is not installed (apt-get install redis-server); the Redis queue is untested")
    port = free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--daemonize", "no"], stdout=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"

    def up():
        try:
            open_queue(url)
            return True
        except QueueError:
            return False
    wait_until(up, 15, "redis-server")
    yield url
    proc.terminate()
    proc.wait(10)


_REDIS_DBS = itertools.count(1)


@pytest.fixture(params=["sqlite", "redis"])
def queue_url(request, tmp_path):
    """A fresh queue: a new SQLite file, or an emptied database of the test's redis-server."""
    if request.param == "sqlite":
        return f"sqlite:{tmp_path}/jobs.db"
    url = request.getfixturevalue("redis_url").replace("/0", f"/{next(_REDIS_DBS) % 16}")
    open_queue(url).jobs.conn.flushdb()
    return url


def test_job_records_change_state_once(queue_url):
    jobs = open_queue(queue_url).jobs
    jobs.add("a", b"image", {"resize": True}, max_attempts=2)
    assert jobs.get("a")["status"] == "queued" and jobs.get("a")["options"] == {"resize": True}
    assert jobs.image("a") == b"image" and jobs.pending() == 1
    assert jobs.claim_next("w1", 30) == "a" and jobs.claim_next("w2", 30) is None, "a job is taken once"
    assert not jobs.renew("a", "w2", 30) and jobs.renew("a", "w1", 30)
    assert not jobs.finish("a", "w2", {"top": []}) and not jobs.fail("a", "w2", "no")
    assert jobs.finish("a", "w1", {"top": [1]})
    assert not jobs.finish("a", "w1", {"top": [2]}), "a result is written once"
    done = jobs.get("a")
    assert done["status"] == "done" and done["result"] == {"top": [1]} and done["attempts"] == 1
    assert jobs.image("a") is None, "the image is dropped when the job ends"

    jobs.add("b", b"image", {}, max_attempts=2)
    assert jobs.claim_next("w1", 0.5) == "b"
    now = time.time()
    assert jobs.expired(now) == [] and jobs.retry("b", now=now) is None, "lease still valid"
    assert jobs.expired(now + 1) == ["b"]
    assert jobs.retry("b", now=now + 1) == "queued" and jobs.retry("b", now=now + 1) is None
    assert not jobs.finish("b", "w1", {"top": []}), "the lost worker cannot finish it any more"
    assert jobs.claim_next("w2", 0.5) == "b" and jobs.retry("b", now=now + 2) == "failed"
    failed = jobs.get("b")
    assert failed["status"] == "failed" and failed["attempts"] == 2 and "lease expired" in failed["error"]

    jobs.add("d", b"image", {}, max_attempts=2)   # a failing attempt (e.g. a stage server down) is retried
    assert jobs.claim_next("w1", 30) == "d" and jobs.retry("d", "w2", "boom") is None
    assert jobs.retry("d", "w1", "attempt 1: boom") == "queued" and jobs.get("d")["error"] == "attempt 1: boom"
    assert jobs.claim_next("w2", 30) == "d" and jobs.finish("d", "w2", {"top": []})
    assert jobs.get("d")["error"] is None and jobs.get("d")["attempts"] == 2
    assert jobs.get("missing") is None


def test_jobs_are_taken_oldest_first_by_one_worker_each(queue_url):
    jobs = open_queue(queue_url).jobs
    for name in "cab":
        jobs.add(name, b"i", {}, max_attempts=1)
    assert [jobs.claim_next("w", 30) for _ in range(4)] == ["c", "a", "b", None]
    for name in "xyz":
        jobs.add(name, b"i", {}, max_attempts=1)
    taken = []
    threads = [threading.Thread(target=lambda: taken.append(jobs.claim_next("w", 30))) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(t for t in taken if t) == ["x", "y", "z"] and taken.count(None) == 3


def test_a_bad_queue_address_is_a_clear_error():
    with pytest.raises(QueueError, match="sqlite:PATH or redis://"):
        open_queue("postgres://x")
    with pytest.raises(QueueError, match="cannot reach the Redis queue"):
        open_queue(f"redis://127.0.0.1:{free_port()}/0")


def _submit(client, png, query=""):
    response = client.post("/v1/jobs" + query, content=png, headers={"Content-Type": "image/png"})
    assert response.status_code == 202, response.text
    return response.json()["id"]


def _status(queue_url, job_id):
    return open_queue(queue_url).get(job_id)


@pytest.mark.slow
def test_jobs_survive_an_api_restart_and_give_the_classify_answer(tiny_run, queue_url):
    pngs = [held_out_png(tiny_run, i)[0] for i in range(3)]
    client = ready_client(create_app(LocalUpstream(tiny_run), open_queue(queue_url)))
    ids = [_submit(client, png) for png in pngs]
    expected = [client.post("/v1/classify", content=png, headers={"Content-Type": "image/png"}).json()["top"]
                for png in pngs]
    bad = client.post("/v1/jobs?resize=false", content=held_out_png(tiny_run)[0][:50],
                      headers={"Content-Type": "image/png"})
    assert bad.status_code == 422 and "not a readable image" in bad.json()["error"]
    assert client.get("/v1/jobs/nope").status_code == 404
    client.__exit__(None, None, None)   # the API goes away with no worker running

    restarted = ready_client(create_app(LocalUpstream(tiny_run), open_queue(queue_url)))
    assert [restarted.get(f"/v1/jobs/{i}").json()["status"] for i in ids] == ["queued"] * 3
    worker = ServerProcess("worker", tiny_run, "--queue", queue_url, "--workers", 2)
    try:
        records = wait_until(lambda: (r := [restarted.get(f"/v1/jobs/{i}").json() for i in ids]) and
                             all(x["status"] == "done" for x in r) and r, 60, "the jobs to be done")
    finally:
        worker.stop()
        restarted.__exit__(None, None, None)
    assert [r["result"]["top"] for r in records] == expected
    assert all(r["attempts"] == 1 and r["error"] is None for r in records)


@pytest.mark.slow
def test_a_job_whose_worker_is_killed_is_retried_or_failed_never_lost(tiny_run, queue_url):
    png = held_out_png(tiny_run)[0]
    retried = open_queue(queue_url, max_attempts=2).submit(png, {})
    given_up = open_queue(queue_url, max_attempts=1).submit(png, {})
    slow = {TEST_DELAY_ENV: "30"}   # killed long before; the rescuer runs without it
    workers = [ServerProcess("worker", tiny_run, "--queue", queue_url, "--lease-s", 1, env=slow) for _ in (0, 1)]
    try:
        running = wait_until(lambda: (r := [_status(queue_url, i) for i in (retried, given_up)]) and
                             all(x["status"] == "running" for x in r) and r, 60, "both jobs to run")
        time.sleep(1.5)   # longer than the lease: the heartbeat keeps it, nobody else takes the job
        still = [_status(queue_url, i) for i in (retried, given_up)]
        assert [(s["status"], s["worker"], s["attempts"]) for s in still] == \
            [("running", r["worker"], 1) for r in running]
        for worker in workers:
            worker.kill()   # SIGKILL mid-job
    finally:
        for worker in workers:
            worker.kill()
    rescuer = ServerProcess("worker", tiny_run, "--queue", queue_url, "--lease-s", 1)
    try:
        done = wait_until(lambda: (r := _status(queue_url, retried))["status"] == "done" and r, 60, "the retry")
        failed = wait_until(lambda: (r := _status(queue_url, given_up))["status"] == "failed" and r, 30, "failure")
    finally:
        rescuer.stop()
    assert done["attempts"] == 2 and done["result"]["top"] and str(rescuer.proc.pid) in done["worker"]
    assert failed["attempts"] == 1 and "lease expired" in failed["error"] and failed["result"] is None


def test_bad_job_input_gets_a_clear_json_error_and_the_queue_is_bounded(tiny_run, tmp_path):
    png, pixels = held_out_png(tiny_run)
    queue = open_queue(f"sqlite:{tmp_path}/jobs.db")
    client = ready_client(create_app(LocalUpstream(tiny_run), queue, max_body_bytes=32 * 1024, max_queued=2))
    try:
        def post(data, kind="image/png", query=""):
            return client.post("/v1/jobs" + query, content=data, headers={"Content-Type": kind})
        assert post(png, "text/plain").status_code == 415
        assert post(b"").json()["error"].startswith("empty body")
        assert post(b"\0" * (32 * 1024 + 1)).status_code == 413
        corrupt = post(b"GIF89a" + png[6:60])
        assert corrupt.status_code == 422 and "not a readable image" in corrupt.json()["error"]
        big = np.pad(pixels, ((0, 4), (0, 4), (0, 0)))
        wrong_size = post(png_bytes(big))
        assert wrong_size.status_code == 422 and "expected" in wrong_size.json()["error"]
        assert queue.jobs.pending() == 0, "refused input is not stored"
        assert post(png_bytes(big), query="?resize=true").status_code == 202
        assert post(png).status_code == 202
        full = post(png)
        assert full.status_code == 503 and "limit 2" in full.json()["error"] and full.headers["Retry-After"]
        assert client.get("/v1/jobs/" + "x" * 300).status_code == 404
    finally:
        client.__exit__(None, None, None)


def test_serve_api_takes_jobs_over_http(tiny_run, tmp_path):
    url = f"sqlite:{tmp_path}/jobs.db"
    server = ServerProcess("serve-api", tiny_run, "--queue", url).wait_ready()
    try:
        response = httpx.post(server.url + "/v1/jobs", content=held_out_png(tiny_run)[0],
                              headers={"Content-Type": "image/png"})
        assert response.status_code == 202
        job = httpx.get(server.url + response.json()["url"]).json()
        assert job["status"] == "queued" and job["id"] == response.json()["id"]
    finally:
        server.stop()
    assert _status(url, job["id"])["status"] == "queued", "stays queued after the API stops"



class _Payload:
    """What an attacker plants: unpickling it runs a shell command that leaves a file behind."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _plant(queue_url, marker):
    """Pickle payloads where a pickling queue would read them, and in every field of a job record."""
    bomb = pickle.dumps(_Payload(marker))
    queue = open_queue(queue_url)
    if queue_url.startswith("sqlite:"):
        path = queue_url[len("sqlite:"):]
        with sqlite3.connect(path) as db:   # huey's own table layout, as the attacker used it
            db.execute("create table if not exists task (id integer primary key, queue text, data blob, "
                       "priority real not null default 0)")
            db.execute("insert into task (queue, data) values (?, ?)", ("deploy_serving", bomb))
            db.execute("insert into serving_jobs (id, status, attempts, max_attempts, created, updated, options, "
                       "result, image) values ('planted', 'queued', 0, 1, 0, 0, ?, ?, ?)", (bomb, bomb, bomb))
            db.execute("insert into serving_jobs (id, status, attempts, max_attempts, created, updated, options, "
                       "image) values ('planted-2', 'queued', ?, ?, 0, 0, '{\"resize\": true}', ?)",
                       (bomb, bomb, bomb))
    else:
        conn = queue.jobs.conn
        conn.lpush("huey.redis.deploy_serving", bomb)   # where huey's RedisHuey keeps its messages
        conn.hset("deploy-serving:job:planted", mapping={"id": "planted", "status": "queued", "attempts": 0,
                                                         "max_attempts": 1, "options": bomb, "result": bomb,
                                                         "image": bomb})
        conn.hset("deploy-serving:job:planted-2", mapping={"id": "planted-2", "status": "queued", "attempts": bomb,
                                                           "max_attempts": bomb, "options": "{}", "image": bomb})
        conn.zadd("deploy-serving:waiting", {"planted": 0, "planted-2": 0})
    return queue


@pytest.mark.slow
def test_pickles_planted_in_the_queue_are_refused_and_never_run(tiny_run, queue_url, tmp_path):
    marker = tmp_path / "pwned"
    queue = _plant(queue_url, marker)
    good = queue.submit(held_out_png(tiny_run)[0], {})
    worker = ServerProcess("worker", tiny_run, "--queue", queue_url)
    try:
        wait_until(lambda: _status(queue_url, good)["status"] == "done", 60, "the real job to be done")
        planted = [_status(queue_url, name) for name in ("planted", "planted-2")]
        assert worker.proc.poll() is None, "the worker keeps serving"
    finally:
        worker.stop()
    assert not marker.exists(), "a pickle read from the queue was executed"
    assert all(p["status"] == "failed" for p in planted), planted
    assert "refused" in planted[0]["error"] and "options is not" in planted[0]["error"]
    assert planted[0]["result"] is None and queue.jobs.image("planted") is None
    assert not marker.exists()


def test_nothing_in_the_serving_code_can_unpickle():
    """No module of deploy/ imports pickle, marshal, shelve or dill, directly or by huey's serializer."""
    forbidden = {"pickle", "cPickle", "marshal", "shelve", "dill", "huey", "jsonpickle"}
    found = []
    for path in (REPO / "deploy").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            found += [f"{path.relative_to(REPO)}: {n}" for n in names if n.split(".")[0] in forbidden]
    assert found == []
