"""Early exit (seed 001): exit heads trained, kept in the stage ending at their boundary, taken at a threshold."""
import json

import numpy as np
import pytest

from deploy.core.exits import exit_probabilities, exit_taken
from tests.conftest import copy_run, run_cli
from quantize.plan_options import PlanOptions
from quantize.qat import QatPolicy

EXITS = ["after_block1", "after_block2"]


@pytest.fixture(scope="module")
def exit_run(tmp_path_factory):
    """A tiny digits run with two exit heads: 1 epoch, resumed for a 2nd, quantized into 3 stages."""
    from quantize.run import quantize_run
    from training.config import TrainConfig
    from training.train import train
    run = tmp_path_factory.mktemp("exits") / "run"
    train(str(run), TrainConfig("digits", {"variants": 2}, "splitnet", epochs=1, exits=EXITS), verbose=0)
    train(str(run), TrainConfig(epochs=2), resume=True, verbose=0)  # exits come back from the manifest
    quantize_run(str(run), PlanOptions(stages=3), samples=50, qat=QatPolicy(auto=False))  # PTQ only: QAT is tested on its own
    return run


def _manifest(run):
    return json.loads((run / "manifest.json").read_text())


def _sample_outputs(run, sample=0):
    """Stage 0's manifest entry and its outputs for one test image."""
    from deploy.core.chain import run_interpreter
    from deploy.core.classify import image_feed
    from deploy.core.open import load_test_set, open_chain
    manifest, chain = open_chain(str(run))
    images, _ = load_test_set(str(run), manifest)
    outputs = run_interpreter(chain.stages[0].interpreter, image_feed(chain, images[sample]))
    return manifest["stages"], outputs


def test_exit_decision_by_hand():
    """Dequantized logits -> softmax; taken exactly when the top probability reaches the threshold."""
    entry = {"exit": {"output": "head", "boundary": "b"},
             "outputs": [{"name": "head", "scale": 0.5, "zero_point": 128}]}
    outputs = {"head": np.array([[128, 132, 126]], np.uint8)}  # logits 0, 2, -1
    expected = np.exp([0.0, 2.0, -1.0]) / np.exp([0.0, 2.0, -1.0]).sum()
    np.testing.assert_allclose(exit_probabilities(entry, outputs), expected, rtol=1e-6)
    top = float(exit_probabilities(entry, outputs).max())
    assert exit_taken(entry, outputs, top) == "head"
    assert exit_taken(entry, outputs, float(np.nextafter(top, 2.0))) is None
    assert exit_taken(entry, outputs, None) is None
    assert exit_taken({"outputs": entry["outputs"]}, outputs, 0.0) is None
    assert exit_probabilities({"outputs": []}, outputs) is None


def test_unknown_exit_names_are_refused():
    from training.models import ModelError, check_exits
    with pytest.raises(ModelError, match="after_block9.*choose from after_block1, after_block2"):
        check_exits("splitnet", ["after_block9"])
    with pytest.raises(ModelError, match="not in graph order"):
        check_exits("splitnet", ["after_block2", "after_block1"])


def test_training_cli_rejects_bad_exit(tmp_path):
    result = run_cli("training", "--run", str(tmp_path / "r"), "--exits", "block7", "--epochs", "1")
    assert result.returncode == 2
    assert "block7" in result.stderr and "after_block1" in result.stderr


@pytest.mark.slow
def test_training_records_exits_and_resumes(exit_run):
    from training.keras_setup import keras
    training = _manifest(exit_run)["training"]
    assert [e["boundary"] for e in training["exits"]] == EXITS
    assert training["epochs_run"] == 2  # resumed from the epoch-1 checkpoint with its exit heads
    history = json.loads((exit_run / "history.json").read_text())
    for entry in training["exits"]:
        assert len(history[f"val_{entry['output']}_accuracy"]) == 2
        assert 0.0 <= entry["test_accuracy"] <= 1.0
    model = keras.models.load_model(exit_run / "model.keras")
    assert list(model.output_names) == ["logits"] + [e["output"] for e in training["exits"]]


@pytest.mark.slow
def test_each_exit_head_sits_in_the_stage_ending_at_its_boundary(exit_run):
    manifest = _manifest(exit_run)
    stages = manifest["stages"]
    assert [t["name"] for t in manifest["split"]["model_outputs"]] == ["logits", *(f"exit_{b}" for b in EXITS)]
    assert set(manifest["accuracy"]["exits"]) == set(EXITS)
    for stage, boundary in zip(stages, EXITS):
        assert stage["exit"]["boundary"] == boundary
        assert stage["exit"]["output"] in [t["name"] for t in stage["outputs"]]
        assert {"AVERAGE_POOL_2D", "FULLY_CONNECTED"} <= set(stage["ops"])  # the whole head, not its output only
        assert any(boundary in t["name"] for t in stages[stages.index(stage) + 1]["inputs"])
    assert "exit" not in stages[-1] and "AVERAGE_POOL_2D" not in stages[-1]["ops"]


@pytest.mark.slow
def test_exit_decision_at_the_real_boundary(exit_run):
    stages, outputs = _sample_outputs(exit_run)
    top = float(exit_probabilities(stages[0], outputs).max())
    assert exit_taken(stages[0], outputs, top) == stages[0]["exit"]["output"]
    assert exit_taken(stages[0], outputs, float(np.nextafter(top, 2.0))) is None
    assert exit_taken(stages[0], outputs, None) is None
    assert exit_taken(stages[2], outputs, 0.0) is None


class _Counting:
    """An interpreter that counts its invokes."""

    def __init__(self, interpreter):
        self._interpreter, self.invokes = interpreter, 0

    def invoke(self):
        self.invokes += 1
        self._interpreter.invoke()

    def __getattr__(self, name):
        return getattr(self._interpreter, name)


@pytest.mark.slow
def test_chain_stops_at_first_exit_and_matches_full_chain_above_one(exit_run):
    from deploy.core.classify import image_feed
    from deploy.core.open import load_test_set, open_chain
    manifest, chain = open_chain(str(exit_run))
    images, _ = load_test_set(str(exit_run), manifest)
    for stage in chain.stages:
        stage.interpreter = _Counting(stage.interpreter)
    feeds = [image_feed(chain, image) for image in images[:10]]
    timings = []
    for feed in feeds:
        outputs, exit_stage = chain.run_with_exit(feed, 0.0, timings)
        assert exit_stage == 0 and list(outputs) == ["exit_after_block1"]
    assert [s.interpreter.invokes for s in chain.stages] == [10, 0, 0]
    assert all(t[1] == 0.0 and t[2] == 0.0 for t in timings)
    for feed in feeds:
        outputs, exit_stage = chain.run_with_exit(feed, 1.0 + 1e-6)
        expected = chain.run(feed)
        assert exit_stage is None and list(outputs) == list(expected)
        assert all(outputs[name].tobytes() == expected[name].tobytes() for name in expected)


@pytest.mark.slow
def test_eval_with_threshold_and_verify_stay_exact(exit_run, tmp_path):
    from deploy.cli import actions as commands
    run = copy_run(exit_run, tmp_path)
    result = commands.evaluate_run(str(run), limit=20, exit_threshold=0.0)
    assert result["exit_share"] == {"after_block1": 1.0, "after_block2": 0.0, "final": 0.0}
    assert "chain" not in _manifest(run)["accuracy"]  # an early-exit score is not the chain's accuracy
    verify = commands.verify_run(str(run), samples=16)
    assert verify["bit_exact"] and verify["outputs_compared"] == 16 * 3


@pytest.mark.slow
def test_deploy_exits_sweeps_thresholds(exit_run, tmp_path):
    run = copy_run(exit_run, tmp_path)
    result = run_cli("deploy", "exits", "--run", str(run), "--limit", "30", "--thresholds", "0.9,0")
    assert result.returncode == 0, result.stderr
    assert "after_block1" in result.stdout and "no exits" in result.stdout
    sweep = _manifest(run)["deploy"]["exits"]
    assert sweep["thresholds"] == [0.0, 0.9]
    first = sweep["rows"][0]
    assert first["exit_share"] == {"after_block1": 1.0, "after_block2": 0.0, "final": 0.0}
    for row in sweep["rows"]:
        assert set(row) >= {"threshold", "exit_share", "accuracy", "latency_ms_mean", "latency_ms_p50"}
        assert sum(row["exit_share"].values()) == pytest.approx(1.0)
    assert set(sweep["full_model"]) >= {"accuracy", "latency_ms_mean"}
    assert (run / "exits.png").is_file()

    bad = run_cli("deploy", "exits", "--run", str(run), "--thresholds", "0.5,high")
    assert bad.returncode == 2 and "'high' is not a number" in bad.stderr
    manifest = _manifest(run)
    for stage in manifest["stages"]:
        stage.pop("exit", None)
    (run / "manifest.json").write_text(json.dumps(manifest))
    none = run_cli("deploy", "exits", "--run", str(run))
    assert none.returncode == 2 and "--exits" in none.stderr


@pytest.mark.slow
def test_pipelined_runner_takes_the_same_exits(exit_run):
    from deploy.core.classify import image_feed
    from deploy.core.open import load_test_set, open_chain
    from deploy.pipeline.runner import PipelinedRunner
    manifest, chain = open_chain(str(exit_run))
    images, _ = load_test_set(str(exit_run), manifest)
    feeds = [image_feed(chain, image) for image in images[:12]]
    threshold = 0.9
    expected = [chain.run_with_exit(feed, threshold) for feed in feeds]
    with PipelinedRunner(chain, exit_threshold=threshold) as runner:
        results = list(runner.stream(feeds))
    assert [r.exit_stage for r in results] == [stage for _, stage in expected]
    for result, (outputs, _) in zip(results, expected):
        assert list(result.outputs) == list(outputs)
        assert all(result.outputs[n].tobytes() == outputs[n].tobytes() for n in outputs)
    with PipelinedRunner(chain) as runner:  # no threshold: every stage, as before
        assert all(r.exit_stage is None and len(r.stage_seconds) == 3 for r in runner.stream(feeds))
