"""Coral's MobileNetV2 split inside a residual block, served stage by stage over gRPC: stage 2's ADD reads
a tensor made by stage 0, which must travel through stage 1; outputs equal the whole model's exactly."""
import numpy as np

import runfolder
from deploy.core.open import open_chain
from deploy.net.client import ChainClient
from deploy.core.verify import sample_feeds
from quantize.stages import split_into
from tests.net_helpers import addresses, serve_chain, stop_all
from quantize.plan_options import PlanOptions

V2 = "mobilenet_v2_1.0_224_quant.tflite"


def test_a_tensor_skipping_a_stage_travels_through_the_network_chain(coral_data, tmp_path):
    run = tmp_path / "skip"
    split_into(str(run), str(coral_data / V2),
               PlanOptions(cut_after=["expanded_conv_1/project", "expanded_conv_2/expand"]), progress=lambda *_: None)
    stages = runfolder.load(run)["stages"]
    made_by = {t["name"]: s["index"] for s in stages for t in s["outputs"]}
    skipping = [t["name"] for t in stages[2]["inputs"] if made_by.get(t["name"]) == 0]
    assert skipping, "no tensor skips a stage"
    _, chain = open_chain(run, "cpu")
    feeds = sample_feeds(chain, 4, seed=2)
    expected = [chain.run(f) for f in feeds]
    servers = serve_chain(run)
    try:
        with ChainClient(addresses(servers)) as client:
            middle = client.describe(client.addresses[1])
            got = list(client.stream(feeds))
            got.append(client.run(feeds[0]))
    finally:
        stop_all(servers)
    assert set(skipping) <= {t.name for t in middle.takes}    # stage 1 receives it only to pass it on
    for outputs, want in zip(got, expected + expected[:1]):
        assert outputs.keys() == want.keys()
        assert all(np.array_equal(outputs[k], want[k]) and outputs[k].dtype == want[k].dtype for k in want)
