"""The HTTP API under a burst and under a pixel bomb, each beside its baseline in the same run.

  1. Burst: ``--requests`` concurrent POST /v1/classify against serve-api with ``--max-concurrent``
     (default 2), beside the same burst against a server that admits them all: answered, refused
     (503 + Retry-After), p50/p99 latency of the answered ones, RSS before and after, peak RSS.
  2. Pixel bomb: 4 concurrent POST /v1/jobs of a 13000x13000 RGBA PNG (under 1 MB as a file, 676 MB
     decoded): the API's peak RSS rise, beside 4 threads decoding it with Pillow the way an API
     without the header check does (a separate process, same machine).

    .venv/bin/python bench/api_burst.py --run runs/demo [--requests 50] [--max-concurrent 2]

Prints a table, then one JSON line.
"""
import argparse
import concurrent.futures
import io
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import runfolder

MIB = 2 ** 20


def _memory(pid):
    fields = {}
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) * 1024
    return fields


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Api:
    """serve-api as its own process on a free loopback port."""

    def __init__(self, run, *args):
        import httpx
        self.port, self.folder = _free_port(), tempfile.mkdtemp(prefix="api-burst-")
        self.proc = subprocess.Popen([sys.executable, "-m", "deploy", "serve-api", "--run", str(run), "--listen",
                                      f"127.0.0.1:{self.port}", "--queue", f"sqlite:{self.folder}/jobs.db",
                                      *map(str, args)], cwd=REPO, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise SystemExit("serve-api did not become ready within 60 s")

    def stop(self):
        os.killpg(self.proc.pid, signal.SIGTERM)
        self.proc.wait(20)


def _png(pixels):
    from PIL import Image
    buffer = io.BytesIO()
    Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def burst(run, image, requests, max_concurrent):
    """Figures of ``requests`` concurrent classify calls against a server with that bound."""
    import httpx
    api = Api(run, "--max-concurrent", max_concurrent)
    client = httpx.Client(limits=httpx.Limits(max_connections=requests, max_keepalive_connections=requests),
                          timeout=120)
    try:
        before = _memory(api.proc.pid)
        start_together = threading.Barrier(requests)

        def call(_):
            start_together.wait()   # every request is sent at the same moment: a burst
            start = time.perf_counter()
            response = client.post(api.url + "/v1/classify", content=image, headers={"Content-Type": "image/png"})
            return response.status_code, time.perf_counter() - start, response.headers.get("retry-after")
        with concurrent.futures.ThreadPoolExecutor(requests) as pool:
            results = list(pool.map(call, range(requests)))
        after = _memory(api.proc.pid)
    finally:
        client.close()
        api.stop()
    answered = [s for code, s, _ in results if code == 200]
    refused = [r for r in results if r[0] == 503]
    return {"max_concurrent": max_concurrent, "requests": requests, "answered": len(answered),
            "refused_503": len(refused), "refused_with_retry_after": sum(1 for r in refused if r[2]),
            "other": len(results) - len(answered) - len(refused),
            "p50_ms": round(1000 * float(np.percentile(answered, 50)), 2) if answered else None,
            "p99_ms": round(1000 * float(np.percentile(answered, 99)), 2) if answered else None,
            "rss_before_mib": round(before["VmRSS"] / MIB, 1), "rss_after_mib": round(after["VmRSS"] / MIB, 1),
            "peak_rss_mib": round(after["VmHWM"] / MIB, 1)}


def bomb_png():
    from PIL import Image
    buffer = io.BytesIO()
    Image.new("RGBA", (13000, 13000)).save(buffer, format="PNG", compress_level=9)
    return buffer.getvalue()


def bomb_through_api(run, bomb):
    import httpx
    api = Api(run)
    try:
        idle = _memory(api.proc.pid)["VmRSS"]

        def post(_):
            return httpx.post(api.url + "/v1/jobs?resize=true&convert=true", content=bomb, timeout=120,
                              headers={"Content-Type": "image/png"}).status_code
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            codes = list(pool.map(post, range(4)))
        peak = _memory(api.proc.pid)["VmHWM"]
    finally:
        api.stop()
    return {"codes": codes, "idle_rss_mib": round(idle / MIB, 1), "peak_rise_mib": round((peak - idle) / MIB, 1)}


_DECODE_WITHOUT_CHECK = """
import concurrent.futures, io, pathlib, sys
from PIL import Image
Image.MAX_IMAGE_PIXELS = None
data = pathlib.Path(sys.argv[1]).read_bytes()
def rss(field):
    return next(int(l.split()[1]) * 1024 for l in open('/proc/self/status') if l.startswith(field + ':'))
idle = rss('VmRSS')
def decode(_):
    image = Image.open(io.BytesIO(data)); image.load(); image.convert('RGB').resize((28, 28))
with concurrent.futures.ThreadPoolExecutor(4) as pool:
    list(pool.map(decode, range(4)))
print(idle, rss('VmHWM'))
"""


def bomb_without_check(bomb):
    with tempfile.NamedTemporaryFile(suffix=".png") as f:
        f.write(bomb)
        f.flush()
        out = subprocess.run([sys.executable, "-c", _DECODE_WITHOUT_CHECK, f.name], capture_output=True, text=True,
                             check=True, timeout=600).stdout.split()
    idle, peak = int(out[0]), int(out[1])
    return {"idle_rss_mib": round(idle / MIB, 1), "peak_rise_mib": round((peak - idle) / MIB, 1)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="a run folder deploy can serve (e.g. runs/demo after make demo)")
    p.add_argument("--requests", type=int, default=50)
    p.add_argument("--max-concurrent", type=int, default=2)
    p.add_argument("--skip-bomb-baseline", action="store_true", help="do not decode the bomb without the check")
    args = p.parse_args(argv)
    manifest = runfolder.load(args.run)
    with np.load(runfolder.resolve(args.run, manifest["dataset"]["test_set"])) as data:
        image = _png(data["images"][0])
    bounded = burst(args.run, image, args.requests, args.max_concurrent)
    unbounded = burst(args.run, image, args.requests, args.requests)
    bomb = bomb_png()
    through_api = bomb_through_api(args.run, bomb)
    without = None if args.skip_bomb_baseline else bomb_without_check(bomb)
    print(f"burst of {args.requests} concurrent POST /v1/classify")
    print(f"{'':28} {'answered':>9} {'503':>5} {'p50 ms':>8} {'p99 ms':>8} {'RSS before':>11} {'after':>7} {'peak':>7}")
    for name, row in ((f"--max-concurrent {args.max_concurrent}", bounded), ("every request admitted", unbounded)):
        print(f"{name:28} {row['answered']:>9} {row['refused_503']:>5} {row['p50_ms'] or '-':>8} "
              f"{row['p99_ms'] or '-':>8} {row['rss_before_mib']:>10}M {row['rss_after_mib']:>6}M "
              f"{row['peak_rss_mib']:>6}M")
    print(f"pixel bomb (13000x13000 RGBA, {len(bomb) / 1024:.0f} KiB as a file), 4 at once: peak RSS rise")
    print(f"  serve-api (header check)         {through_api['peak_rise_mib']:>8} MiB  answers {through_api['codes']}")
    if without:
        print(f"  Pillow decoding it, no check     {without['peak_rise_mib']:>8} MiB")
    print(json.dumps({"bench": "api_burst", "bounded": bounded, "unbounded": unbounded, "bomb_file_bytes": len(bomb),
                      "bomb_through_api": through_api, "bomb_without_check": without}))


if __name__ == "__main__":
    main()
