"""What the serving API and the workers classify with: image bytes in, top classes out.

An upstream has ``load()`` (slow: opens the model; the API is not ready until it returns),
``check(image_bytes, resize, convert)`` (decodes and checks the image, raises ImageError),
optionally ``problem()`` (None, or why it cannot answer now: /readyz shows it)
and ``classify(image_bytes, resize=False, convert=False) -> {"top": [{"class", "label",
"score"}...], "placement": [...], "ms": ...}``.

``LocalUpstream`` runs the run folder's stage chain in this process, exactly as
``python -m deploy --image`` does; ``ChainUpstream`` sends the quantized input to a chain of
stage servers (``deploy.net.client.ChainClient``) and reads the scores the same way.
"""
import os
import threading
import time

import numpy as np

from datasets import ImageError, load_image  # noqa: F401  (ImageError: part of this module's API)
from datasets.decode_limits import DecodeLimits
from datasets.labels import labels_of


class UpstreamError(RuntimeError):
    """The upstream could not answer (e.g. a stage server is down); the API answers 502 with this."""


TEST_DELAY_ENV = "DEPLOY_SERVING_TEST_DELAY_S"   # test-only: seconds each classify sleeps


def test_delay_s():
    """The test-only slow-down (seconds) from the environment; 0 when unset."""
    return float(os.environ.get(TEST_DELAY_ENV) or 0.0)


def top_classes(scores, names, top_k):
    """[{"class", "label", "score"}] of the top_k scores, best first."""
    order = np.argsort(-scores)[:top_k]
    return [{"class": int(i), "label": names[i] if names and i < len(names) else str(int(i)),
             "score": float(scores[i])} for i in order]


class _RunModel:
    """What both upstreams read from the run folder: input spec, class names, input/output tensors."""

    def __init__(self, run_dir, top_k, delay_s, limits):
        self.run_dir, self.top_k = str(run_dir), top_k
        self.limits = limits or DecodeLimits()
        self.delay_s = test_delay_s() if delay_s is None else delay_s
        self.ready = False
        self.spec = self.names = None

    def check(self, image_bytes, resize=False, convert=False):
        """uint8 pixels of the model's input size; raises ImageError saying what is expected, or
        DecodeBusy when other requests hold the decoding budget."""
        if self.spec is None:
            raise RuntimeError("the upstream is not loaded yet; call load() first")
        return load_image(bytes(image_bytes), self.spec, resize=resize, convert=convert,
                          max_pixels=self.limits.max_pixels, budget=self.limits.budget)

    def expected(self):
        """The image the model takes, in words (for error messages and /readyz)."""
        if self.spec is None:
            return None
        return {"width": self.spec.width, "height": self.spec.height, "mode": self.spec.mode}

    def _result(self, scores, placement, start):
        if self.delay_s:
            time.sleep(self.delay_s)
        return {"top": top_classes(scores, self.names, self.top_k), "placement": placement,
                "ms": round((time.perf_counter() - start) * 1000.0, 3)}


class LocalUpstream(_RunModel):
    """The run folder's stages in this process (Edge TPUs where compiled and present, else CPU).

    One chain per upstream; calls are serialised by a lock because an interpreter is not
    thread-safe. Give each worker thread its own LocalUpstream to run them in parallel.
    """

    def __init__(self, run_dir, devices=None, num_threads=None, top_k=3, delay_s=None, limits=None, fallback=False,
                 invoke_timeout=None):
        super().__init__(run_dir, top_k, delay_s, limits)
        self.devices, self.num_threads, self.fallback = devices, num_threads, fallback
        self.invoke_timeout = invoke_timeout   # None: the default (deploy.core.stages.DEFAULT_INVOKE_TIMEOUT)
        self.chain = None
        self._lock = threading.Lock()

    def load(self):
        from deploy.core.open import input_spec, open_chain
        from deploy.core.stages import DEFAULT_INVOKE_TIMEOUT
        timeout = DEFAULT_INVOKE_TIMEOUT if self.invoke_timeout is None else self.invoke_timeout
        manifest, chain = open_chain(self.run_dir, self.devices, self.num_threads, fallback=self.fallback,
                                     invoke_timeout=timeout)
        self.spec = input_spec(manifest, chain)
        self.names = labels_of(manifest)
        self.chain, self.ready = chain, True
        return self

    def classify(self, image_bytes, resize=False, convert=False):
        from deploy.core.classify import scores
        start = time.perf_counter()
        pixels = self.check(image_bytes, resize, convert)
        with self._lock:
            values = scores(self.chain, pixels)[0]
        return self._result(values, [s.placement for s in self.chain.stages], start)


class ChainUpstream(_RunModel):
    """Stage servers at ``hosts`` (host:port, in stage order), reached with deploy.net's ChainClient.

    The run folder gives the input spec, class names and the input/output tensors'
    quantization, so the result equals LocalUpstream's for the same stages.
    """

    def __init__(self, run_dir, hosts, tls=None, timeout_s=10.0, top_k=3, delay_s=None, limits=None):
        super().__init__(run_dir, top_k, delay_s, limits)
        self.hosts, self.tls, self.timeout_s = list(hosts), tls, timeout_s
        self.client = self.remote = self.input = None

    def load(self):
        import runfolder
        from deploy.core.open import input_spec
        try:
            from deploy.net.client import ChainClient
            from deploy.net.remote_chain import RemoteChain
        except ImportError as exc:
            raise RuntimeError(f"--chain needs deploy.net (the stage servers' client): {exc}") from exc
        manifest = runfolder.load(self.run_dir)
        stages = runfolder.require(manifest, "stages", self.run_dir, "serve-api --chain")
        split = manifest.get("split") or {}
        self.input = (split.get("model_inputs") or stages[0]["inputs"])[0]
        self.spec = input_spec(manifest, _Inputs([self.input]))
        self.names = labels_of(manifest)
        self.client = ChainClient(self.hosts, tls=self.tls, timeout_s=self.timeout_s)
        self.remote = RemoteChain(self.client, manifest)
        self.ready = True
        return self

    def problem(self):
        """None when every stage server answers SERVING, else which do not (for /readyz)."""
        bad = {a: s for a, s in self.client.health().items() if s != "SERVING"}
        return f"stage servers not serving: {bad}" if bad else None

    def classify(self, image_bytes, resize=False, convert=False):
        from deploy.core.classify import scores
        from deploy.net.client import ChainCallError
        from deploy.net.remote_chain import SERVERS_DECIDE
        start = time.perf_counter()
        pixels = self.check(image_bytes, resize, convert)
        try:
            values, exit_stage = scores(self.remote, pixels, SERVERS_DECIDE)
        except ChainCallError as exc:
            raise UpstreamError(f"the stage chain at {','.join(self.hosts)} failed: {exc}") from exc
        result = self._result(values, [f"remote:{h}" for h in self.hosts], start)
        result["exit_stage"] = exit_stage
        return result


class _Inputs:
    """Just enough of a chain for deploy.core.open.input_spec (its ``inputs``)."""

    def __init__(self, inputs):
        self.inputs = inputs
