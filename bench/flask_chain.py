"""Seed 000's Flask chain on loopback, and its callers: start the three servers of bench/seed000_flask.py (one
process each), call the first as the seed's user did, count the bytes each hop carries. Used by
bench/network_chain.py.
"""
import contextlib
import io
import os
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEED_SERVER = os.path.join(REPO, "bench", "seed000_flask.py")


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def wait_http(url, processes, logs, timeout_s):
    """Waits until ``url`` answers at all (any HTTP status); fails with the log of a server that exited."""
    import requests
    deadline = time.monotonic() + timeout_s
    while True:
        for process, log in zip(processes, logs):
            if process.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"a Flask stage server exited with {process.returncode} "
                                   f"({' '.join(process.args[2:])}); its output ends with:\n"
                                   + log.read().decode(errors="replace")[-2000:])
        try:
            requests.get(url, timeout=1)
            return
        except requests.ConnectionError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not answer within {timeout_s:.0f} s") from None
            time.sleep(0.2)


@contextlib.contextmanager
def flask_chain(kind, run, parts):
    """Starts ``parts`` servers of bench/seed000_flask.py ``kind`` chained on loopback; yields their URLs."""
    ports = free_ports(parts)
    urls = [f"http://127.0.0.1:{p}/Layer{k + 1}" for k, p in enumerate(ports)]
    processes = []
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    with contextlib.ExitStack() as files:
        logs = [files.enter_context(tempfile.TemporaryFile()) for _ in range(parts)]
        try:
            for k in range(parts):
                command = [sys.executable, SEED_SERVER, kind, "--run", run, "--part", str(k),
                           "--port", str(ports[k])]
                if k + 1 < parts:
                    command += ["--next", urls[k + 1]]
                processes.append(subprocess.Popen(command, stdout=logs[k], stderr=subprocess.STDOUT, env=env,
                                                  cwd=REPO))
            for url in urls:
                wait_http(url, processes, logs, timeout_s=180)
            yield urls
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


class BodyCounter:
    """Wraps ``requests.post`` to record each request body's and reply's bytes, hop by hop, in this process."""

    def __init__(self):
        self.sent, self.replied = [], []

    def post(self, url, **kwargs):
        import requests
        response = requests.post(url, **kwargs)
        self.sent.append(len(response.request.body or b""))
        self.replied.append(len(response.content))
        return response

    def per_hop(self, later_hops):
        """{"bytes_per_hop": [mean first hop, *later_hops], "reply_bytes": mean reply} (rounded bytes)."""
        return {"bytes_per_hop": [round(np.mean(self.sent)), *later_hops], "reply_bytes": round(np.mean(self.replied))}


def npy_bytes(array):
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def seed_client(url, counter):
    """The seed's user: uploads the image as an .npy file, gets the digit back."""
    def call(pixels):
        response = counter.post(url, files={"file": ("image.npy", npy_bytes(pixels))})
        response.raise_for_status()
        return response.json()["predictions"]
    return call


def json_client(url, chain, counter):
    """Posts the quantized input as JSON lists; returns the chain's outputs as arrays of their own dtype."""
    def call(feed):
        body = {"predictions": {name: array.tolist() for name, array in feed.items()}}
        response = counter.post(url, json=body)
        response.raise_for_status()
        got = response.json()["predictions"]
        return {t["name"]: np.asarray(got[t["name"]], dtype=t["dtype"]).reshape(t["shape"]) for t in chain.outputs}
    return call


def concurrent_throughput(function, inputs, workers):
    """Samples per second with ``workers`` callers at once (the Flask servers are threaded)."""
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(workers) as pool:
        start = time.perf_counter()
        outputs = list(pool.map(function, inputs))
        wall = time.perf_counter() - start
    return {"samples": len(inputs), "workers": workers, "throughput_per_s": len(inputs) / wall}, outputs


def received_bytes(urls):
    """The mean body bytes of the requests each server received (its ``/bytes`` counter)."""
    import requests
    return [round(requests.get(url.rsplit("/", 1)[0] + "/bytes", timeout=5).json()["received"]) for url in urls]
