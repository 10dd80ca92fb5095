"""Stage servers in the deploy-only environment (tflite-runtime, numpy<2, no TensorFlow): the generated
gRPC code imports there and the network chain equals that environment's in-process chain byte for byte.

Runs when ``DEPLOY_ONLY_PYTHON`` names that environment's python (``make test`` sets it), as
tests/test_deploy_only_env.py does; under CI it must.
"""
import os
import subprocess

import numpy as np
import pytest

from deploy.net.client import ChainClient
from deploy.net.launch import StageProcessOptions, launch_local
from tests.conftest import REPO

REFERENCE = """
import sys, numpy as np
from deploy.core.open import open_chain
_, chain = open_chain(sys.argv[1], "cpu")
feeds = np.load(sys.argv[2])
name = chain.outputs[0]["name"]
out = np.stack([chain.run({chain.inputs[0]["name"]: f})[name] for f in feeds])
np.save(sys.argv[3], out)
"""


@pytest.fixture(scope="module")
def pi_python():
    path = os.environ.get("DEPLOY_ONLY_PYTHON")
    if not path:
        if os.environ.get("CI"):
            pytest.fail("DEPLOY_ONLY_PYTHON is not set; CI must test the deploy-only environment")
        pytest.skip("DEPLOY_ONLY_PYTHON is not set (e.g. .venv-pi/bin/python)")
    return path


def test_the_chain_served_from_the_deploy_only_environment_is_exact(tiny_run, pi_python, tmp_path):
    from deploy.core.open import open_chain
    spec = open_chain(tiny_run, "cpu")[1].inputs[0]
    feeds = np.random.default_rng(4).integers(0, 256, [20, *spec["shape"]], dtype=np.uint8)
    np.save(tmp_path / "feeds.npy", feeds)
    done = subprocess.run([pi_python, "-c", REFERENCE, str(tiny_run), str(tmp_path / "feeds.npy"),
                           str(tmp_path / "expected.npy")], cwd=REPO, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    expected = np.load(tmp_path / "expected.npy")
    processes = StageProcessOptions(python=pi_python, log_dir=tmp_path)
    with launch_local(tiny_run, base_port=0, options=processes) as chain, \
            ChainClient(chain.addresses) as client:
        got = [client.run({spec["name"]: f}) for f in feeds]
    assert all(g[next(iter(g))].tobytes() == e.tobytes() for g, e in zip(got, expected))
