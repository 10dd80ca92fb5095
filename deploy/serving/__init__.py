"""Serving: an HTTP API with bounded work and a persistent job queue (seed 004).

  app.create_app(upstream, queue, token=None, max_concurrent=N, max_body_bytes=B)   FastAPI app
  upstream.LocalUpstream(run_dir) / upstream.ChainUpstream(run_dir, hosts)          what classifies
  queue.open_queue("sqlite:PATH" | "redis://host:port/db") -> JobQueue              jobs + workers
  python -m deploy serve-api ... / python -m deploy worker ...                      the commands

Needs fastapi, uvicorn and python-multipart (+ redis for a Redis queue); imported only here.
"""
