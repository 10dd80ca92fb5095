"""Job records: the queue itself, in a SQLite file or in Redis. The one source of truth for a job.

  queued -> running (lease: worker id + deadline, renewed while it runs)
         -> done (result, written once) | failed (reason)

Workers take the oldest queued job with ``claim_next`` (one atomic step, so two workers
never take the same job). A running job whose lease expires (its worker died) goes back to
``queued`` until it has used ``max_attempts``, then to ``failed`` with the reason. Every
change is one atomic compare-and-set, so a job is completed once.

Only data is stored and read back: the image as raw bytes, options and results as JSON.
Nothing read from the store is ever unpickled or executed; a record that does not decode
is failed with the reason (``MalformedRecord``), and the worker goes on.

Both stores offer: add, pending, get, image, claim_next, renew, finish, fail, retry, expired.
"""
import json
import sqlite3
import time

FIELDS = ("id", "status", "attempts", "max_attempts", "worker", "lease_until", "created", "updated",
          "options", "result", "error")


def lost_reason(attempts):
    return (f"the worker running it stopped {attempts} time(s) without finishing (lease expired); "
            "giving up after max attempts")


class MalformedRecord(ValueError):
    """A stored job record does not decode as this module wrote it (tampered or foreign data)."""


def _public(record):
    """A record as the API shows it: JSON fields decoded, no image; ``malformed`` says what did not decode."""
    out = {k: record.get(k) for k in FIELDS}
    problems = []
    for key in ("options", "result"):
        value = out[key]
        if isinstance(value, bytes):
            try:
                value = value.decode("utf-8")
            except UnicodeDecodeError:
                value, out[key] = None, None
                problems.append(f"{key} is not UTF-8 text")
        if isinstance(value, str) and value:
            try:
                out[key] = json.loads(value)
            except ValueError:
                out[key] = None
                problems.append(f"{key} is not JSON")
    for key in ("id", "status", "worker", "error"):
        if isinstance(out[key], bytes):
            out[key] = out[key].decode("utf-8", "replace")
    out["error"] = out["error"] or None
    for key, kind in (("attempts", int), ("max_attempts", int), ("lease_until", float), ("created", float),
                      ("updated", float)):
        try:
            out[key] = kind(out[key]) if out[key] not in (None, "", b"") else (0 if kind is int else None)
        except (TypeError, ValueError):
            out[key] = 0 if kind is int else None
            problems.append(f"{key} is not a number")
    out["malformed"] = "; ".join(problems) or None
    return out


def checked_options(record):
    """The job's options as a dict of booleans, or MalformedRecord saying what is wrong."""
    if record["malformed"]:
        raise MalformedRecord(f"job record {record['id']!r} is malformed ({record['malformed']})")
    options = record["options"] or {}
    if not isinstance(options, dict) or not all(isinstance(v, bool) for v in options.values()):
        raise MalformedRecord(f"job record {record['id']!r} has options {str(options)[:200]!r}; "
                              "expected a JSON object of true/false values")
    return options


def _number(value):
    """An integer column as stored; 0 for anything that is not a number (a tampered row)."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


class SqliteJobs:
    """Records in table ``serving_jobs`` of the queue's SQLite file; one short connection per call."""

    def __init__(self, path, timeout_s=10.0):
        self.path, self.timeout_s = str(path), timeout_s
        with self._db() as db:
            db.execute("create table if not exists serving_jobs (id text primary key, status text not null, "
                       "attempts integer not null default 0, max_attempts integer not null, worker text, "
                       "lease_until real, created real not null, updated real not null, options text, "
                       "result text, error text, image blob)")
            db.execute("create index if not exists serving_jobs_queue on serving_jobs (status, created)")

    def _db(self):
        conn = sqlite3.connect(self.path, timeout=self.timeout_s, isolation_level=None)
        return _Transaction(conn)

    def _update(self, sql, params):
        with self._db() as db:
            return db.execute(sql, params).rowcount == 1

    def add(self, job_id, image, options, max_attempts, status="queued"):
        now = time.time()
        with self._db() as db:
            db.execute("insert into serving_jobs (id, status, max_attempts, created, updated, options, image) "
                       "values (?, ?, ?, ?, ?, ?, ?)",
                       (job_id, status, max_attempts, now, now, json.dumps(options), bytes(image)))

    def pending(self):
        """How many jobs wait for a worker."""
        with self._db() as db:
            return db.execute("select count(*) from serving_jobs where status='queued'").fetchone()[0]

    def get(self, job_id):
        with self._db() as db:
            db.row_factory = sqlite3.Row
            row = db.execute(f"select {', '.join(FIELDS)} from serving_jobs where id=?", (job_id,)).fetchone()
        return _public(dict(row)) if row else None

    def image(self, job_id):
        with self._db() as db:
            row = db.execute("select image from serving_jobs where id=?", (job_id,)).fetchone()
        if not row or row[0] is None:
            return None
        return row[0].encode("utf-8") if isinstance(row[0], str) else bytes(row[0]) if isinstance(row[0], bytes) \
            else b""

    def claim_next(self, worker, lease_s):
        """Takes the oldest queued job for ``worker`` under a lease; returns its id, or None."""
        now = time.time()
        with self._db() as db:
            db.execute("begin immediate")
            row = db.execute("select id from serving_jobs where status='queued' order by created, rowid "
                             "limit 1").fetchone()
            if row is None:
                return None
            db.execute("update serving_jobs set status='running', attempts=coalesce(attempts, 0)+1, worker=?, "
                       "lease_until=?, updated=? where id=?", (worker, now + lease_s, now, row[0]))
            return str(row[0])

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
            attempts, max_attempts = _number(row[0]), _number(row[1])
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
        return [str(r[0]) for r in rows]


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


_CLAIM_NEXT = """
-- KEYS: waiting (zset of queued ids by time), leases (zset of running ids by lease end)
-- ARGV: record key prefix, now, worker, lease seconds
local now, lease = tonumber(ARGV[2]), tonumber(ARGV[4])
for _, id in ipairs(redis.call('zrange', KEYS[1], 0, 31)) do
  local key = ARGV[1] .. id
  redis.call('zrem', KEYS[1], id)
  if redis.call('hget', key, 'status') == 'queued' then
    local attempts = tonumber(redis.call('hget', key, 'attempts') or '0')
    if attempts == nil then   -- not written by this module: fail it, never run it
      redis.call('hset', key, 'status', 'failed', 'updated', now, 'error', 'malformed record: attempts is not a number')
      redis.call('hdel', key, 'image')
    else
      redis.call('hset', key, 'status', 'running', 'attempts', attempts + 1, 'worker', ARGV[3],
                 'lease_until', now + lease, 'updated', now)
      redis.call('zadd', KEYS[2], now + lease, id)
      return id
    end
  end
end
return nil
"""

_CAS = """
-- KEYS: record, waiting, leases. ARGV: op, now, worker, value, id, give-up reason
local key = KEYS[1]
if redis.call('hget', key, 'status') ~= 'running' then return nil end
local now = tonumber(ARGV[2])
local op = ARGV[1]
if op == 'retry_expired' then
  if (tonumber(redis.call('hget', key, 'lease_until')) or 0) >= now then return nil end
elseif redis.call('hget', key, 'worker') ~= ARGV[3] then
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
  local attempts = tonumber(redis.call('hget', key, 'attempts')) or 0
  if attempts >= (tonumber(redis.call('hget', key, 'max_attempts')) or 0) then
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
    """Records as Redis hashes ``<prefix>:job:<id>``, queued ids in a sorted set by time; every change is
    one Lua script (atomic). A single Redis server (the scripts name record keys they compute)."""

    def __init__(self, conn, prefix="deploy-serving"):
        self.conn, self.prefix = conn, prefix
        self.waiting, self.leases = f"{prefix}:waiting", f"{prefix}:leases"
        self._cas = conn.register_script(_CAS)
        self._claim_next = conn.register_script(_CLAIM_NEXT)

    def _key(self, job_id):
        return f"{self.prefix}:job:{job_id}"

    def _run(self, op, job_id, *args, now=None):
        now = time.time() if now is None else now
        out = self._cas(keys=[self._key(job_id), self.waiting, self.leases],
                        args=[op, repr(now), *args])
        return out.decode() if isinstance(out, bytes) else out

    def add(self, job_id, image, options, max_attempts, status="queued"):
        now = time.time()
        with self.conn.pipeline() as pipe:
            pipe.hset(self._key(job_id), mapping={
                "id": job_id, "status": status, "attempts": 0, "max_attempts": max_attempts, "created": now,
                "updated": now, "options": json.dumps(options), "image": bytes(image)})
            pipe.zadd(self.waiting, {job_id: now})
            pipe.execute()

    def pending(self):
        return int(self.conn.zcard(self.waiting))

    def get(self, job_id):
        raw = self.conn.hgetall(self._key(job_id))
        if not raw:
            return None
        return _public({k.decode("utf-8", "replace"): v for k, v in raw.items() if k != b"image"})

    def image(self, job_id):
        return self.conn.hget(self._key(job_id), "image")

    def claim_next(self, worker, lease_s):
        out = self._claim_next(keys=[self.waiting, self.leases],
                               args=[f"{self.prefix}:job:", repr(time.time()), worker, lease_s])
        return out.decode("utf-8", "replace") if isinstance(out, bytes) else out

    def renew(self, job_id, worker, lease_s):
        return self._run("renew", job_id, worker, lease_s, job_id) == "running"

    def finish(self, job_id, worker, result):
        return self._run("finish", job_id, worker, json.dumps(result), job_id) == "done"

    def fail(self, job_id, worker, reason):
        return self._run("fail", job_id, worker, reason, job_id) == "failed"

    def retry(self, job_id, worker=None, reason=None, now=None):
        now = time.time() if now is None else now
        try:
            attempts = int(self.conn.hget(self._key(job_id), "attempts") or 0)
        except ValueError:
            attempts = 0
        op = "retry_expired" if worker is None else "retry"
        return self._run(op, job_id, worker or "", reason or "", job_id, reason or lost_reason(attempts), now=now)

    def expired(self, now=None):
        now = time.time() if now is None else now
        return [m.decode("utf-8", "replace") for m in self.conn.zrangebyscore(self.leases, "-inf", f"({now!r}")]
