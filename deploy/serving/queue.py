"""The persistent job queue: huey carries job ids to workers; job records (deploy.serving.jobstore)
make sure none is lost.

  queue = open_queue("sqlite:/path/jobs.db")          # or "redis://127.0.0.1:6379/0"
  job_id = queue.submit(image_bytes, {"resize": False})   # API side: 202 + id
  queue.get(job_id)                                     # status, attempts, result or error
  queue.run_worker(make_upstream, workers=2)            # worker side (blocks; Ctrl-C stops)

Huey pickles a task's arguments: the only argument is the job id this module made (a uuid
string). Network data (image, options) goes into the record as raw bytes and JSON.
A reaper thread in each worker process hands expired leases back to the queue (or marks the
job failed after ``max_attempts``) and re-sends jobs that waited too long unclaimed (a
duplicate message is a no-op: claiming is atomic).
"""
import logging
import os
import socket
import threading
import uuid

from deploy.serving.jobstore import RedisJobs, SqliteJobs

LOG = logging.getLogger("deploy.serving")
TASK_NAME = "deploy_serving_job"


class QueueError(ValueError):
    """The queue address is not understood, or its backend cannot be reached."""


def open_queue(url, max_attempts=3, lease_s=30.0):
    """A JobQueue for ``sqlite:PATH`` (embedded, the default) or ``redis://host:port/db``.

    Raises:
      QueueError: for any other form, naming the accepted ones.
    """
    try:
        import huey
    except ImportError as exc:
        raise QueueError("the job queue needs huey: pip install huey") from exc
    name = "deploy_serving"
    if url.startswith("sqlite:"):
        path = url[len("sqlite:"):]
        if not path:
            raise QueueError("sqlite: needs a file path, e.g. sqlite:runs/demo/jobs.db")
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        backend = huey.SqliteHuey(name, filename=path, results=False)
        jobs = SqliteJobs(path)
    elif url.startswith(("redis://", "rediss://", "unix://")):
        try:
            backend = huey.RedisHuey(name, url=url, results=False)
            backend.storage.conn.ping()
        except Exception as exc:   # the redis client's own errors: connection refused, auth, ...
            raise QueueError(f"cannot reach the Redis queue at {url}: {exc}") from exc
        jobs = RedisJobs(backend.storage.conn)
    else:
        raise QueueError(f"queue {url!r} is not understood; use sqlite:PATH or redis://host:port/db")
    return JobQueue(url, backend, jobs, max_attempts, lease_s)


class JobQueue:
    """Submit jobs and read their state (API side); run them (worker side)."""

    def __init__(self, url, backend, jobs, max_attempts, lease_s):
        self.url, self.huey, self.jobs = url, backend, jobs
        self.max_attempts, self.lease_s = max_attempts, lease_s
        self._local = threading.local()
        self._make_upstream = None
        self.task = backend.task(name=TASK_NAME)(self._execute)

    def submit(self, image_bytes, options):
        """Stores the job, then enqueues its id; returns the id. The record exists before the message,
        so a crash in between leaves an ``accepted`` job that the reaper sends later."""
        job_id = uuid.uuid4().hex
        self.jobs.add(job_id, image_bytes, options, self.max_attempts)
        self.task(job_id)
        self.jobs.mark_queued(job_id)
        return job_id

    def get(self, job_id):
        """The job's record (no image), or None."""
        return self.jobs.get(job_id)

    # ------------------------------------------------------------------ worker side
    def _upstream(self):
        upstream = getattr(self._local, "upstream", None)
        if upstream is None:
            upstream = self._local.upstream = self._make_upstream().load()
        return upstream

    def _execute(self, job_id):
        """The huey task: claim, run with a renewed lease, write the result once."""
        worker = f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"
        if not self.jobs.claim(job_id, worker, self.lease_s):
            return   # already running, done or failed: a duplicate message
        record = self.jobs.get(job_id)
        stop = threading.Event()
        beat = threading.Thread(target=self._heartbeat, args=(job_id, worker, stop), daemon=True)
        beat.start()
        try:
            from datasets import ImageError
            options = record["options"] or {}
            try:
                result = self._upstream().classify(self.jobs.image(job_id) or b"",
                                                   resize=bool(options.get("resize")),
                                                   convert=bool(options.get("convert")))
            except ImageError as exc:
                self.jobs.fail(job_id, worker, f"bad image: {exc}")
                return
            except Exception as exc:   # anything else may be passing (device, network): retry
                LOG.exception("job %s failed on attempt %s", job_id, record["attempts"])
                self.jobs.retry(job_id, worker, f"attempt {record['attempts']}: {type(exc).__name__}: {exc}")
                if self.jobs.get(job_id)["status"] == "queued":
                    self.task(job_id)
                return
            if not self.jobs.finish(job_id, worker, result):
                LOG.warning("job %s: lease lost before finishing; result dropped", job_id)
        finally:
            stop.set()

    def _heartbeat(self, job_id, worker, stop):
        while not stop.wait(self.lease_s / 3.0):
            self.jobs.renew(job_id, worker, self.lease_s)

    def reap(self, stale_s=None):
        """Expired leases back to the queue (or failed); long-waiting jobs re-sent. Returns the ids sent."""
        sent = []
        for job_id in self.jobs.expired():
            if self.jobs.retry(job_id) == "queued":
                LOG.warning("job %s: its worker stopped mid-run; queued again", job_id)
                self.task(job_id)
                sent.append(job_id)
        for job_id in self.jobs.stale(stale_s if stale_s is not None else 3 * self.lease_s):
            self.task(job_id)
            sent.append(job_id)
        return sent

    def _reaper(self, stop, interval_s):
        while not stop.wait(interval_s):
            try:
                self.reap()
            except Exception:   # a passing backend error must not stop the reaper
                LOG.exception("reaper")

    def run_worker(self, make_upstream, workers=1, reap_interval_s=None):
        """Runs huey's consumer with ``workers`` threads, each with its own upstream (an interpreter is not
        thread-safe; tflite releases the GIL while it runs), plus the reaper. Blocks until stopped."""
        self._make_upstream = make_upstream
        make_upstream().load()   # once now, to fail early with a clear error; each thread loads its own
        stop = threading.Event()
        interval = reap_interval_s if reap_interval_s is not None else max(0.2, self.lease_s / 4.0)
        self.reap()
        reaper = threading.Thread(target=self._reaper, args=(stop, interval), daemon=True)
        reaper.start()
        consumer = self.huey.create_consumer(workers=workers, worker_type="thread", periodic=False,
                                             initial_delay=0.05, backoff=1.5, max_delay=0.5)
        try:
            consumer.run()
        finally:
            stop.set()
