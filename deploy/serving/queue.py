"""The persistent job queue: job records (deploy.serving.jobstore) in SQLite or Redis, and the workers.

  queue = open_queue("sqlite:/path/jobs.db")              # or "redis://127.0.0.1:6379/0"
  job_id = queue.submit(image_bytes, {"resize": False})   # API side: 202 + id
  queue.get(job_id)                                       # status, attempts, result or error
  queue.run_worker(make_upstream, workers=2)              # worker side (blocks until SIGTERM/Ctrl-C)

The records are the queue: a worker thread takes the oldest queued record itself
(``claim_next``), so there is no second message channel to keep in step with them and
nothing that carries code. Only raw image bytes and JSON are stored; nothing read from
the store is unpickled (a message queue library such as huey pickles by default, and
whoever can write its storage then runs code in the worker). A reaper thread hands
expired leases (a worker died mid-job) back to the queue, or fails the job after
``max_attempts``.
"""
import logging
import os
import signal
import socket
import threading
import uuid

from deploy.serving.jobstore import (
    MalformedRecord,
    RedisJobs,
    SqliteJobs,
    checked_options,
)
from runfolder.errors import UserError

LOG = logging.getLogger("deploy.serving")
POLL_S = (0.02, 0.5)   # an idle worker thread looks for work this often: first, then backing off to


class QueueError(UserError, ValueError):
    """The queue address is not understood, or its backend cannot be reached."""


def open_queue(url, max_attempts=3, lease_s=30.0):
    """A JobQueue for ``sqlite:PATH`` (embedded, the default) or ``redis://host:port/db``.

    Raises:
      QueueError: for any other form, naming the accepted ones, or when Redis does not answer.
    """
    if url.startswith("sqlite:"):
        path = url[len("sqlite:"):]
        if not path:
            raise QueueError("sqlite: needs a file path, e.g. sqlite:runs/demo/jobs.db")
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        jobs = SqliteJobs(path)
    elif url.startswith(("redis://", "rediss://", "unix://")):
        try:
            import redis
        except ImportError as exc:
            raise QueueError("a Redis queue needs the redis client: pip install redis") from exc
        try:
            conn = redis.Redis.from_url(url)
            conn.ping()
        except Exception as exc:   # the redis client's own errors: connection refused, auth, ...
            raise QueueError(f"cannot reach the Redis queue at {url}: {exc}") from exc
        jobs = RedisJobs(conn)
    else:
        raise QueueError(f"queue {url!r} is not understood; use sqlite:PATH or redis://host:port/db")
    return JobQueue(url, jobs, max_attempts, lease_s)


class JobQueue:
    """Submit jobs and read their state (API side); run them (worker side)."""

    def __init__(self, url, jobs, max_attempts, lease_s):
        self.url, self.jobs = url, jobs
        self.max_attempts, self.lease_s = max_attempts, lease_s

    def submit(self, image_bytes, options):
        """Stores the job as queued; returns its id."""
        job_id = uuid.uuid4().hex
        self.jobs.add(job_id, image_bytes, options, self.max_attempts)
        return job_id

    def get(self, job_id):
        """The job's record (no image), or None."""
        return self.jobs.get(job_id)

    # ------------------------------------------------------------------ worker side
    def run_one(self, upstream, worker):
        """Claims the oldest queued job and runs it on ``upstream``; returns its id, or None if none waits."""
        job_id = self.jobs.claim_next(worker, self.lease_s)
        if job_id is None:
            return None
        stop = threading.Event()
        beat = threading.Thread(target=self._heartbeat, args=(job_id, worker, stop), daemon=True)
        beat.start()
        try:
            self._execute(upstream, job_id, worker)
        finally:
            stop.set()
        return job_id

    def _execute(self, upstream, job_id, worker):
        from datasets import ImageError
        record = self.jobs.get(job_id)
        try:
            options = checked_options(record)
            result = upstream.classify(self.jobs.image(job_id) or b"", resize=bool(options.get("resize")),
                                       convert=bool(options.get("convert")))
        except MalformedRecord as exc:
            LOG.warning("job %s refused: %s", job_id, exc)
            self.jobs.fail(job_id, worker, f"refused: {exc}")
            return
        except ImageError as exc:
            self.jobs.fail(job_id, worker, f"bad image: {exc}")
            return
        except Exception as exc:   # anything else may be passing (device, network): retry
            LOG.warning("job %s failed on attempt %s: %s: %s", job_id, record["attempts"], type(exc).__name__, exc)
            self.jobs.retry(job_id, worker, f"attempt {record['attempts']}: {type(exc).__name__}: {exc}")
            return
        if not self.jobs.finish(job_id, worker, result):
            LOG.warning("job %s: lease lost before finishing; result dropped", job_id)

    def _heartbeat(self, job_id, worker, stop):
        while not stop.wait(self.lease_s / 3.0):
            self.jobs.renew(job_id, worker, self.lease_s)

    def reap(self):
        """Expired leases back to the queue (or failed after max attempts). Returns the ids requeued."""
        requeued = []
        for job_id in self.jobs.expired():
            if self.jobs.retry(job_id) == "queued":
                LOG.warning("job %s: its worker stopped mid-run; queued again", job_id)
                requeued.append(job_id)
        return requeued

    def _work(self, make_upstream, stop):
        """One worker thread: its own upstream (an interpreter is not thread-safe), then jobs until ``stop``."""
        worker = f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"
        upstream = make_upstream().load()
        wait = POLL_S[0]
        while not stop.is_set():
            try:
                found = self.run_one(upstream, worker)
            except Exception:   # a passing backend error (Redis restarting, SQLite locked) must not end the thread
                LOG.exception("worker %s: reading the queue failed; trying again", worker)
                found = None
            wait = POLL_S[0] if found else min(POLL_S[1], wait * 1.5)
            if not found:
                stop.wait(wait)

    def _reaper(self, stop, interval_s):
        while not stop.wait(interval_s):
            try:
                self.reap()
            except Exception:   # a passing backend error must not stop the reaper
                LOG.exception("reaper")

    def run_worker(self, make_upstream, workers=1, stop=None, reap_interval_s=None):
        """Runs ``workers`` threads, each with its own upstream (tflite releases the GIL while it runs), and
        the reaper, until ``stop`` is set (or SIGTERM/SIGINT when called on the main thread); a job being run
        then finishes first."""
        make_upstream().load()   # once now, to fail early with a clear error; each thread loads its own
        stop = stop or threading.Event()
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: stop.set())
        self.reap()
        interval = reap_interval_s if reap_interval_s is not None else max(0.2, self.lease_s / 4.0)
        threads = [threading.Thread(target=self._reaper, args=(stop, interval), daemon=True, name="reaper")]
        threads += [threading.Thread(target=self._work, args=(make_upstream, stop), name=f"worker-{k}")
                    for k in range(workers)]
        for thread in threads:
            thread.start()
        while not stop.wait(0.5):
            if not any(t.is_alive() for t in threads[1:]):
                raise RuntimeError("every worker thread stopped; see the log above")
        for thread in threads[1:]:
            thread.join()
