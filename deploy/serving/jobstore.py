"""Job records kept next to the queue, in the same backend (SQLite file or Redis).

Huey moves job ids from the API to the workers; it drops a task whose worker dies
mid-run. These records make every accepted job end as ``done`` or ``failed``:

  accepted -> queued -> running (lease: worker id + deadline, renewed while it runs)
           -> done (result, written once) | failed (reason)

A running job whose lease expires (its worker died) goes back to ``queued`` until it has
used ``max_attempts``, then to ``failed`` with the reason. Every change is one atomic
compare-and-set, so two workers can never both complete a job. The image bytes and
options are stored raw (bytes and JSON), never pickled; the image is dropped when the
job ends.

Both stores offer: add, mark_queued, pending, get, image, claim, renew, finish, fail, retry, expired, stale.
"""
import json
import sqlite3
import time

FIELDS = ("id", "status", "attempts", "max_attempts", "worker", "lease_until", "created", "updated",
          "options", "result", "error")


def lost_reason(attempts):
    return (f"the worker running it stopped {attempts} time(s) without finishing (lease expired); "
            "giving up after max attempts")


def _public(record):
    """A record as the API shows it: JSON fields decoded, no image."""
    out = {k: record.get(k) for k in FIELDS}
    for key in ("options", "result"):
        if isinstance(out[key], (str, bytes)) and out[key]:
            out[key] = json.loads(out[key])
    out["error"] = out["error"] or None
    for key in ("attempts", "max_attempts"):
        out[key] = int(out[key] or 0)
    for key in ("lease_until", "created", "updated"):
        out[key] = float(out[key]) if out[key] not in (None, "", b"") else None
    return out


class SqliteJobs:
    """Records in table ``serving_jobs`` of the queue's SQLite file; one short connection per call."""

    def __init__(self, path, timeout_s=10.0):
        self.path, self.timeout_s = str(path), timeout_s
        with self._db() as db:
            db.execute("create table if not exists serving_jobs (id text primary key, status text not null, "
                       "attempts integer not null default 0, max_attempts integer not null, worker text, "
                       "lease_until real, created real not null, updated real not null, options text, "
                       "result text, error text, image blob)")
            db.execute("create index if not exists serving_jobs_status on serving_jobs (status, updated)")

    def _db(self):
        conn = sqlite3.connect(self.path, timeout=self.timeout_s, isolation_level=None)
        return _Transaction(conn)

    def _update(self, sql, params):
        with self._db() as db:
            return db.execute(sql, params).rowcount == 1

    def add(self, job_id, image, options, max_attempts, status="accepted"):
        now = time.time()
        with self._db() as db:
            db.execute("insert into serving_jobs (id, status, max_attempts, created, updated, options, image) "
                       "values (?, ?, ?, ?, ?, ?, ?)",
                       (job_id, status, max_attempts, now, now, json.dumps(options), bytes(image)))

    def mark_queued(self, job_id):
        return self._update("update serving_jobs set status='queued', updated=? where id=? and status='accepted'",
                            (time.time(), job_id))

    def pending(self):
        """How many jobs wait for a worker (accepted or queued)."""
        with self._db() as db:
            return db.execute("select count(*) from serving_jobs where status in ('accepted', 'queued')").fetchone()[0]

    def get(self, job_id):
        with self._db() as db:
            db.row_factory = sqlite3.Row
            row = db.execute(f"select {', '.join(FIELDS)} from serving_jobs where id=?", (job_id,)).fetchone()
        return _public(dict(row)) if row else None

    def image(self, job_id):
        with self._db() as db:
            row = db.execute("select image from serving_jobs where id=?", (job_id,)).fetchone()
        return bytes(row[0]) if row and row[0] is not None else None

    def claim(self, job_id, worker, lease_s):
        now = time.time()
        return self._update("update serving_jobs set status='running', attempts=attempts+1, worker=?, "
                            "lease_until=?, updated=? where id=? and status in ('accepted', 'queued')",
                            (worker, now + lease_s, now, job_id))

    def renew(self, job_id, worker, lease_s):
        now = time.time()
        return self._update("update serving_jobs set lease_until=?, updated=? "
                            "where id=? and status='running' and worker=?", (now + lease_s, now, job_id, worker))

    def finish(self, job_id, worker, result):
        return self._update("update serving_jobs set status='done', result=?, error=null, image=null, lease_until=null, "
                            "updated=? where id=? and status='running' and worker=?",
                            (json.dumps(result), time.time(), job_id, worker))

    def fail(self, job_id, worker, reason):
        return self._update("update serving_jobs set status='failed', error=?, image=null, lease_until=null, "
                            "updated=? where id=? and status='running' and worker=?",
                            (reason, time.time(), job_id, worker))

    def retry(self, job_id, worker=None, reason=None, now=None):
        """A running job back to queued (or failed when out of attempts). ``worker`` None: only when
        its lease has expired. Returns the new status, or None if the job was not in that state."""
        now = time.time() if now is None else now
        guard = "worker=?" if worker is not None else "lease_until<?"
        with self._db() as db:
            db.execute("begin immediate")
            row = db.execute(f"select attempts, max_attempts from serving_jobs where id=? and status='running' "
                             f"and {guard}", (job_id, worker if worker is not None else now)).fetchone()
            if not row:
                return None
            attempts, max_attempts = row
            if attempts >= max_attempts:
                error = reason or lost_reason(attempts)
                db.execute("update serving_jobs set status='failed', error=?, image=null, lease_until=null, "
                           "updated=? where id=?", (error, now, job_id))
                return "failed"
            db.execute("update serving_jobs set status='queued', worker=null, lease_until=null, error=?, "
                       "updated=? where id=?", (reason, now, job_id))
            return "queued"

    def expired(self, now=None):
        """Ids of running jobs whose lease has run out."""
        with self._db() as db:
            rows = db.execute("select id from serving_jobs where status='running' and lease_until<?",
                              (time.time() if now is None else now,)).fetchall()
        return [r[0] for r in rows]

    def stale(self, older_than_s, now=None):
        """Ids of accepted/queued jobs untouched for ``older_than_s``; their time is bumped, so each is
        returned at most once per period (the caller enqueues them again; a duplicate is a no-op)."""
        now = time.time() if now is None else now
        with self._db() as db:
            db.execute("begin immediate")
            rows = db.execute("select id from serving_jobs where status in ('accepted', 'queued') and updated<?",
                              (now - older_than_s,)).fetchall()
            db.executemany("update serving_jobs set status='queued', updated=? where id=?",
                           [(now, r[0]) for r in rows])
        return [r[0] for r in rows]


class _Transaction:
    """``with`` a connection: commits an open transaction (rolls back on error) and closes."""

    def __init__(self, conn):
        self.conn = conn

    def __enter__(self):
        return self.conn

    def __exit__(self, kind, value, trace):
        try:
            if self.conn.in_transaction:
                self.conn.execute("rollback" if kind else "commit")
        finally:
            self.conn.close()


_CAS = """
local key = KEYS[1]
local status = redis.call('hget', key, 'status')
if not status then return nil end
local op = ARGV[1]
local now = tonumber(ARGV[2])
if op == 'claim' then
  if status ~= 'accepted' and status ~= 'queued' then return nil end
  redis.call('hincrby', key, 'attempts', 1)
  redis.call('hset', key, 'status', 'running', 'worker', ARGV[3], 'lease_until', now + tonumber(ARGV[4]),
             'updated', now)
  redis.call('zrem', KEYS[2], ARGV[5])
  redis.call('zadd', KEYS[3], now + tonumber(ARGV[4]), ARGV[5])
  return 'running'
end
if op == 'queued' then
  if status ~= 'accepted' then return nil end
  redis.call('hset', key, 'status', 'queued', 'updated', now)
  return 'queued'
end
if status ~= 'running' then return nil end
local worker = redis.call('hget', key, 'worker')
if op == 'retry_expired' then
  if tonumber(redis.call('hget', key, 'lease_until')) >= now then return nil end
elseif worker ~= ARGV[3] then
  return nil
end
if op == 'renew' then
  redis.call('hset', key, 'lease_until', now + tonumber(ARGV[4]), 'updated', now)
  redis.call('zadd', KEYS[3], now + tonumber(ARGV[4]), ARGV[5])
  return 'running'
end
redis.call('zrem', KEYS[3], ARGV[5])
local final = nil
if op == 'finish' then final = 'done'; redis.call('hset', key, 'result', ARGV[4]); redis.call('hdel', key, 'error')
elseif op == 'fail' then final = 'failed'; redis.call('hset', key, 'error', ARGV[4])
else
  local attempts = tonumber(redis.call('hget', key, 'attempts'))
  if attempts >= tonumber(redis.call('hget', key, 'max_attempts')) then
    final = 'failed'; redis.call('hset', key, 'error', ARGV[6])
  else
    redis.call('hset', key, 'status', 'queued', 'updated', now, 'error', ARGV[4])
    redis.call('hdel', key, 'worker', 'lease_until')
    redis.call('zadd', KEYS[2], now, ARGV[5])
    return 'queued'
  end
end
redis.call('hset', key, 'status', final, 'updated', now)
redis.call('hdel', key, 'image', 'lease_until')
return final
"""


class RedisJobs:
    """Records as Redis hashes ``<prefix>:job:<id>``; changes are one Lua script each (atomic)."""

    def __init__(self, conn, prefix="deploy-serving"):
        self.conn, self.prefix = conn, prefix
        self.waiting, self.leases = f"{prefix}:waiting", f"{prefix}:leases"
        self._cas = conn.register_script(_CAS)

    def _key(self, job_id):
        return f"{self.prefix}:job:{job_id}"

    def _run(self, op, job_id, *args, now=None):
        now = time.time() if now is None else now
        out = self._cas(keys=[self._key(job_id), self.waiting, self.leases],
                        args=[op, repr(now), *args])
        return out.decode() if isinstance(out, bytes) else out

    def add(self, job_id, image, options, max_attempts, status="accepted"):
        now = time.time()
        with self.conn.pipeline() as pipe:
            pipe.hset(self._key(job_id), mapping={
                "id": job_id, "status": status, "attempts": 0, "max_attempts": max_attempts, "created": now,
                "updated": now, "options": json.dumps(options), "image": bytes(image)})
            pipe.zadd(self.waiting, {job_id: now})
            pipe.execute()

    def mark_queued(self, job_id):
        return self._run("queued", job_id) == "queued"

    def pending(self):
        return int(self.conn.zcard(self.waiting))

    def get(self, job_id):
        raw = self.conn.hgetall(self._key(job_id))
        if not raw:
            return None
        record = {k.decode(): v for k, v in raw.items() if k != b"image"}
        record = {k: (v.decode() if k != "result" else v) for k, v in record.items()}
        return _public(record)

    def image(self, job_id):
        return self.conn.hget(self._key(job_id), "image")

    def claim(self, job_id, worker, lease_s):
        return self._run("claim", job_id, worker, lease_s, job_id) == "running"

    def renew(self, job_id, worker, lease_s):
        return self._run("renew", job_id, worker, lease_s, job_id) == "running"

    def finish(self, job_id, worker, result):
        return self._run("finish", job_id, worker, json.dumps(result), job_id) == "done"

    def fail(self, job_id, worker, reason):
        return self._run("fail", job_id, worker, reason, job_id) == "failed"

    def retry(self, job_id, worker=None, reason=None, now=None):
        now = time.time() if now is None else now
        attempts = int(self.conn.hget(self._key(job_id), "attempts") or 0)
        op = "retry_expired" if worker is None else "retry"
        return self._run(op, job_id, worker or "", reason or "", job_id, reason or lost_reason(attempts), now=now)

    def expired(self, now=None):
        now = time.time() if now is None else now
        return [m.decode() for m in self.conn.zrangebyscore(self.leases, "-inf", f"({now!r}")]

    def stale(self, older_than_s, now=None):
        now = time.time() if now is None else now
        found = []
        for member in self.conn.zrangebyscore(self.waiting, "-inf", f"({now - older_than_s!r}"):
            job_id = member.decode()   # bump, so each comes back once per period; drop if started
            if self.conn.hget(self._key(job_id), "status") in (b"accepted", b"queued"):
                self.conn.zadd(self.waiting, {job_id: now})
                found.append(job_id)
            else:
                self.conn.zrem(self.waiting, job_id)
        return found
