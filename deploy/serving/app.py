"""The HTTP serving API (FastAPI): synchronous classify with a concurrency bound, and queued jobs.

  POST /v1/classify?resize=false&convert=false   image as the body (image/png, image/jpeg, ...,
        application/octet-stream) or multipart/form-data field "image"; 200 top classes;
        503 + Retry-After when ``max_concurrent`` classifications are already running.
  POST /v1/jobs (same input)   202 {"id", "status", "url"}: stored, then run by a worker;
        503 + Retry-After when ``max_queued`` jobs already wait.
  GET  /v1/jobs/{id}           status (queued/running/done/failed), attempts, result or error.
  GET  /healthz                the process answers (no token needed).
  GET  /readyz                 200 once the upstream is loaded (and, for a chain, every stage server
        answers), else 503 with the reason.

Images must have the model's size and colour mode (422 says which) unless ``resize=true`` /
``convert=true`` ask the server to resize (bilinear) / convert them. Every error is JSON
``{"error": "..."}``. With a token, every /v1 call needs ``Authorization: Bearer <token>``.
"""
import contextlib
import hmac
import sys
import threading

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from datasets import ImageError
from datasets.decode_limits import DecodeBusy
from deploy.serving.limits import BodySizeLimit
from deploy.serving.upstream import UpstreamError
from runfolder import ManifestError

RAW_TYPES = ("image/", "application/octet-stream")
ACCEPTED = "an image body (Content-Type image/png, image/jpeg, ... or application/octet-stream) " \
           "or multipart/form-data with the file in field 'image'"


def error(status, message, headers=None, **extra):
    return JSONResponse({"error": message, **extra}, status_code=status, headers=headers)


class _State:
    """What the handlers share: the in-flight count is only touched on the event loop thread."""

    def __init__(self, upstream, queue, token, max_concurrent, retry_after_s):
        self.upstream, self.queue, self.token = upstream, queue, token
        self.max_concurrent, self.retry_after_s = max_concurrent, retry_after_s
        self.in_flight, self.load_error = 0, None

    def load(self):
        try:
            if not getattr(self.upstream, "ready", False):
                self.upstream.load()
        except Exception as exc:  # noqa: BLE001  (said at start-up and by every 503: the process stays up)
            self.load_error = str(exc) if isinstance(exc, (ManifestError, ValueError, RuntimeError)) else \
                f"{type(exc).__name__}: {exc}"
            print(f"error: cannot serve {getattr(self.upstream, 'run_dir', 'the model')}: {self.load_error}; "
                  "/readyz, /v1/classify and /v1/jobs answer 503 with this reason until it is fixed and "
                  "serve-api restarted", file=sys.stderr, flush=True)

    def not_ready(self):
        """Why requests cannot be served now (None once the upstream is loaded)."""
        if getattr(self.upstream, "ready", False):
            return None
        if self.load_error:
            return f"the model failed to load: {self.load_error}"
        return "the model is still loading (see /readyz)"


def create_app(upstream, queue=None, token=None, max_concurrent=2, max_body_bytes=4 * 1024 * 1024,
               retry_after_s=1, max_queued=1000):
    """The ASGI app.

    Args:
      upstream: see deploy.serving.upstream (``load``, ``ready``, ``check``, ``classify``);
        loaded on a background thread at startup unless already ``ready``.
      queue: a deploy.serving.queue.JobQueue, or None (then /v1/jobs answers 503).
      token: required bearer token for /v1 (None: no token).
      max_concurrent: classifications running at once; more get 503 + Retry-After.
      max_body_bytes: larger request bodies get 413 before they are read.
      max_queued: jobs waiting for a worker; more get 503 + Retry-After (the stored images stay bounded).
    """
    if max_concurrent < 1:
        raise ValueError(f"max_concurrent must be at least 1, got {max_concurrent}")
    state = _State(upstream, queue, token, max_concurrent, retry_after_s)

    def busy(message):
        return error(503, message, headers={"Retry-After": str(retry_after_s)})

    @contextlib.asynccontextmanager
    async def lifespan(app):
        threading.Thread(target=state.load, name="load-upstream", daemon=True).start()
        yield

    app = FastAPI(title="Edge TPU stage chain serving API", lifespan=lifespan)
    app.add_middleware(BodySizeLimit, max_body_bytes=max_body_bytes)
    app.state.serving = state

    @app.exception_handler(RequestValidationError)
    async def bad_parameters(request, exc):
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        return error(422, f"bad request parameters: {problems} (resize and convert take true or false)")

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz():
        problem = hasattr(upstream, "problem") and getattr(upstream, "ready", False) and \
            await run_in_threadpool(upstream.problem)
        if problem:
            return error(503, f"not ready: {problem}", ready=False)
        reason = state.not_ready()
        if reason is None:
            return {"ready": True, "expects": upstream.expected(), "in_flight": state.in_flight,
                    "max_concurrent": max_concurrent}
        return error(503, f"not ready: {reason}", ready=False)

    @app.post("/v1/classify")
    async def classify(request: Request, resize: bool = False, convert: bool = False):
        refused = _refuse(request, state)
        if refused:
            return refused
        if state.in_flight >= max_concurrent:
            return busy(f"busy: {max_concurrent} classification(s) already running; retry later "
                        "or submit a job to POST /v1/jobs")
        state.in_flight += 1
        try:
            image = await _image(request)
            if isinstance(image, JSONResponse):
                return image
            return await run_in_threadpool(upstream.classify, image, resize, convert)
        except ImageError as exc:
            return _bad_image(exc, upstream)
        except DecodeBusy as exc:
            return busy(str(exc))
        except UpstreamError as exc:
            return error(502, str(exc), headers={"Retry-After": str(retry_after_s)})
        finally:
            state.in_flight -= 1

    @app.post("/v1/jobs", status_code=202)
    async def submit(request: Request, resize: bool = False, convert: bool = False):
        refused = _refuse(request, state)
        if refused:
            return refused
        if queue is None:
            return error(503, "no job queue is configured on this server; start it with --queue")
        waiting = await run_in_threadpool(queue.jobs.pending)
        if waiting >= max_queued:
            return busy(f"busy: {waiting} jobs already wait for a worker (limit {max_queued}); retry later")
        image = await _image(request)
        if isinstance(image, JSONResponse):
            return image
        try:   # refuse an image that can never succeed now, not after it waited in the queue
            await run_in_threadpool(upstream.check, image, resize, convert)
        except ImageError as exc:
            return _bad_image(exc, upstream)
        except DecodeBusy as exc:
            return busy(str(exc))
        job_id = await run_in_threadpool(queue.submit, image, {"resize": resize, "convert": convert})
        return JSONResponse({"id": job_id, "status": "queued", "url": f"/v1/jobs/{job_id}"}, status_code=202)

    @app.get("/v1/jobs/{job_id}")
    async def job(request: Request, job_id: str):
        refused = _refuse(request, state)
        if refused:
            return refused
        if queue is None:
            return error(503, "no job queue is configured on this server; start it with --queue")
        record = await run_in_threadpool(queue.get, job_id)
        if record is None:
            return error(404, f"no job {job_id!r}; use the id POST /v1/jobs returned")
        return record

    return app


def _refuse(request, state):
    """401 when a token is set and the request lacks it; 503 while the upstream is not loaded."""
    if state.token:
        given = request.headers.get("authorization", "")
        scheme, _, value = given.partition(" ")
        if not given:
            return error(401, "missing token: send the header 'Authorization: Bearer <token>'",
                         headers={"WWW-Authenticate": "Bearer"})
        if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), state.token.encode()):
            return error(401, "wrong token: send 'Authorization: Bearer <token>' with the server's token",
                         headers={"WWW-Authenticate": "Bearer"})
    reason = state.not_ready() if request.method == "POST" else None
    if reason:   # a job that can never run is not accepted either
        return error(503, f"not ready: {reason}", headers={"Retry-After": str(state.retry_after_s)})
    return None


async def _image(request):
    """The uploaded image bytes, or a JSONResponse saying what is wrong with the request."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        form = await request.form()
        upload = form.get("image")
        if upload is None or isinstance(upload, str):
            return error(422, f"multipart upload without a file in field 'image' (fields: {list(form)}); "
                              "send the image as -F image=@file.png")
        data = await upload.read()
    elif kind.startswith(RAW_TYPES):
        data = await request.body()
    else:
        return error(415, f"unsupported Content-Type {kind or '(none)'!r}; send {ACCEPTED}")
    if not data:
        return error(400, f"empty body: send {ACCEPTED}")
    return data


def _bad_image(exc, upstream):
    return error(422, str(exc), expects=upstream.expected(),
                 hint="pass ?resize=true and/or ?convert=true to let the server resize/convert the image")
