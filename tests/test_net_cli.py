"""The command lines: launch, chain (--eval, --image), serve-stage's refusals."""
import re
import signal
import socket
import subprocess
import sys

import numpy as np
import pytest

from deploy.core.classify import evaluate
from deploy.core.open import load_test_set, open_chain
from tests.conftest import REPO, png_bytes, run_cli


@pytest.fixture(scope="module")
def launched(tiny_run):
    """``python -m deploy launch`` on free ports; yields (process, addresses)."""
    process = subprocess.Popen([sys.executable, "-m", "deploy", "launch", "--run", str(tiny_run), "--base-port", "0"],
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in process.stdout:
        lines.append(line)
        if "stages serving" in line or "error" in line:
            break
    found = re.search(r"3 stages serving: (\S+) ", "".join(lines))
    if not found:
        process.kill()
        pytest.fail("launch did not start:\n" + "".join(lines))
    yield process, found.group(1)
    if process.poll() is None:
        process.kill()


def test_chain_eval_through_the_servers_matches_the_in_process_accuracy(tiny_run, launched):
    _, hosts = launched
    result = run_cli("deploy", "chain", "--hosts", hosts, "--run", tiny_run, "--eval", "--limit", "30", timeout=120)
    assert result.returncode == 0, result.stderr
    assert re.search(r"127\.0\.0\.1:\d+: SERVING", result.stdout)
    manifest, chain = open_chain(tiny_run, "cpu")
    images, labels = load_test_set(tiny_run, manifest)
    expected = evaluate(chain, images[:30], labels[:30])["accuracy"]
    assert f"chain accuracy on 30 test samples: {expected:.4f}; latency median" in result.stdout


def test_chain_classifies_an_image(tiny_run, launched, tmp_path, digits):
    _, hosts = launched
    image = tmp_path / "digit.png"
    image.write_bytes(png_bytes(np.asarray(digits.images[0], np.uint8)))
    result = run_cli("deploy", "chain", "--hosts", hosts.split(",")[0], "--run", tiny_run, "--image", image,
                     "--top-k", "2", "--resize", "--convert", timeout=120)
    assert result.returncode == 0, result.stderr
    assert re.search(rf"{re.escape(str(image))}: \S+ \(\d\.\d{{3}}\), \S+ \(\d\.\d{{3}}\)", result.stdout)


def test_launch_stops_every_stage_cleanly_on_sigterm(launched):
    process, _ = launched
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=30)
    assert process.returncode == 0, output
    assert "stopped 3 stages (exit codes [0, 0, 0])" in output


@pytest.mark.parametrize("args, message", [
    (["--stage", "0", "--listen", "127.0.0.1:0"], "stage 0 is not the last of 3: pass --next HOST:PORT of stage 1"),
    (["--stage", "7", "--listen", "127.0.0.1:0"], "--stage 7 does not exist: the run has stages 0 to 2"),
    (["--stage", "2", "--listen", "127.0.0.1:0", "--tls-cert", "x.pem"], "needs all three of --tls-cert"),
    (["--stage", "2", "--listen", "127.0.0.1:0", "--max-in-flight", "0"], "--max-in-flight must be 1 or more"),
    (["--stage", "1", "--listen", "127.0.0.1:0", "--next", "nowhere"], "'nowhere' is not HOST:PORT"),
])
def test_serve_stage_refuses_bad_options_with_a_message(tiny_run, args, message):
    result = run_cli("deploy", "serve-stage", "--run", tiny_run, *args, timeout=60)
    assert result.returncode == 2 and message in result.stderr, result.stderr


def test_chain_to_a_stopped_server_says_which_address_is_unavailable(tiny_run):
    with socket.socket() as held:   # bound, never listening: connections to it are refused, and no one else gets it
        held.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{held.getsockname()[1]}"
        result = run_cli("deploy", "chain", "--hosts", address, "--run", tiny_run, "--eval", "--limit", "2",
                         "--timeout", "3", timeout=60)
    assert result.returncode == 2
    assert f"stage at {address} is unavailable" in result.stderr


@pytest.mark.parametrize("chain, message", [
    ("a:b", "--chain 'a:b': stage address 'a:b' is not HOST:PORT"),
    (" , ", "no stage address given"),
])
def test_serve_api_refuses_a_chain_that_is_not_host_port_with_the_same_words(tiny_run, chain, message):
    """serve-api --chain reads addresses as `deploy chain --hosts` does (one parser, one message)."""
    result = run_cli("deploy", "serve-api", "--run", tiny_run, "--chain", chain, "--listen", "127.0.0.1:0",
                     timeout=60)
    assert result.returncode == 2 and message in result.stderr, result.stderr
