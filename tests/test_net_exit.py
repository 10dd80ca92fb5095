"""Early exit over the network: a stage whose manifest entry has an ``exit`` answers itself when
``deploy.core.exits.exit_taken`` says so, and the later stages never see the request."""
import json

import numpy as np

from deploy.core.chain import run_interpreter
from deploy.core.open import open_chain
from deploy.net.client import ChainClient
from tests.conftest import copy_run
from tests.net_helpers import addresses, serve_chain, stop_all


def _with_exit_at_stage_1(tiny_run, tmp_path):
    """A copy of the run whose stage 1 declares its own output as an exit head (softmax over it)."""
    run = copy_run(tiny_run, tmp_path)
    path = run / "manifest.json"
    manifest = json.loads(path.read_text())
    stage = manifest["stages"][1]
    stage["exit"] = {"output": stage["outputs"][0]["name"], "boundary": 1}
    path.write_text(json.dumps(manifest))
    return run, stage


def test_a_confident_exit_answers_from_its_stage_and_the_rest_never_run(tiny_run, tmp_path):
    run, stage = _with_exit_at_stage_1(tiny_run, tmp_path)
    _, chain = open_chain(run, "cpu")
    spec = chain.inputs[0]
    feed = {spec["name"]: np.random.default_rng(6).integers(0, 256, spec["shape"], dtype=np.uint8)}
    values = dict(feed)                                   # stages 0 and 1 in process: the exit's expected value
    for loaded in chain.stages[:2]:
        values.update(run_interpreter(loaded.interpreter, values))
    exit_name = stage["exit"]["output"]

    always = serve_chain(run, exit_threshold=0.0)        # any top probability reaches 0: always exits
    try:
        with ChainClient(addresses(always)) as client:
            outputs, exit_stage = client.run_with_exit(feed)
            streamed = list(client.stream_results([feed, feed]))
            processed = [client.describe(a).processed for a in client.addresses]
    finally:
        stop_all(always)
    assert exit_stage == 1 and list(outputs) == [exit_name]
    assert outputs[exit_name].tobytes() == values[exit_name].tobytes()
    assert [r.exit_stage for r in streamed] == [1, 1]
    assert processed == [3, 3, 0]

    never = serve_chain(run, exit_threshold=1.5)         # no probability reaches 1.5: never exits
    try:
        with ChainClient(addresses(never)) as client:
            outputs, exit_stage = client.run_with_exit(feed)
    finally:
        stop_all(never)
    assert exit_stage is None and outputs.keys() == chain.run(feed).keys()


def test_deploy_chain_eval_counts_exits_the_servers_took_as_the_in_process_chain_does(tiny_run, tmp_path):
    """`deploy chain --eval` classifies an exit reply by the exit head's logits, as the in-process chain does."""
    from deploy.core.classify import evaluate
    from deploy.core.open import load_test_set
    from tests.conftest import run_cli
    run, _ = _with_exit_at_stage_1(tiny_run, tmp_path)
    manifest, chain = open_chain(run, "cpu")
    images, labels = load_test_set(run, manifest)
    expected = evaluate(chain, images[:40], labels[:40], exit_threshold=0.0)
    servers = serve_chain(run, exit_threshold=0.0)
    try:
        done = run_cli("deploy", "chain", "--hosts", ",".join(addresses(servers)), "--run", str(run),
                       "--eval", "--limit", "40")
    finally:
        stop_all(servers)
    assert done.returncode == 0, done.stderr
    assert f"chain accuracy on 40 test samples: {expected['accuracy']:.4f}" in done.stdout
    assert "left early at an exit head: 100.0% (stage 1: 100.0%)" in done.stdout


def test_the_http_api_over_a_chain_answers_with_the_exit_head_the_servers_took(tiny_run, tmp_path):
    from deploy.core.classify import classify
    from deploy.core.open import load_test_set
    from deploy.serving.upstream import ChainUpstream
    from tests.conftest import png_bytes
    run, _ = _with_exit_at_stage_1(tiny_run, tmp_path)
    manifest, chain = open_chain(run, "cpu")
    images, _ = load_test_set(run, manifest)
    expected = classify(chain, images[0], top_k=3, exit_threshold=0.0)
    servers = serve_chain(run, exit_threshold=0.0)
    try:
        upstream = ChainUpstream(run, addresses(servers)).load()
        answer = upstream.classify(png_bytes(images[0]))
    finally:
        stop_all(servers)
    assert answer["exit_stage"] == 1
    assert [c["class"] for c in answer["top"]] == [c.id for c in expected]
    assert np.allclose([c["score"] for c in answer["top"]], [c.score for c in expected])
