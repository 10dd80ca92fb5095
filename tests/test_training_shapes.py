"""Every model trains a step on the input shapes users bring, each in its own process, so a crash inside
TensorFlow (SIGSEGV in oneDNN's 1x1 stride-2 weight gradient on RGB 64x64 before the fix) fails the
test naming the signal instead of taking pytest down."""
import os
import signal
import subprocess
import sys

import pytest

from tests.conftest import REPO
from training.models import MODELS, is_backbone

SHAPES = [(28, 28, 1), (64, 64, 3), (96, 96, 3), (224, 224, 3)]

STEP = """
import sys
import numpy as np
from training.keras_setup import keras
from training.models import build_model
h, w, c, n = map(int, sys.argv[2:6])
model = build_model(sys.argv[1], (h, w, c), 4)
model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
x = np.random.default_rng(0).random((n, h, w, c), dtype=np.float32)
model.fit(x, np.arange(n) % 4, batch_size=n, epochs=1, verbose=0)
print("trained")
"""


@pytest.mark.slow
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_trains_a_step_on_every_input_shape(name, shape):
    """A batch of 64 for the small models (the crash needed it), 16 for the backbones (time); a backbone on
    grey images is refused in words, not with a crash."""
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}   # the project's own setting
    batch = 16 if is_backbone(name) else 64
    result = subprocess.run([sys.executable, "-c", STEP, name, *map(str, shape), str(batch)], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=600, check=False)
    if is_backbone(name) and shape[2] == 1:
        assert result.returncode == 1 and "takes RGB images, the data has 1 channel" in result.stderr
        return
    if result.returncode < 0:
        pytest.fail(f"{name} on {shape}: the training process died with {signal.Signals(-result.returncode).name}"
                    f"; its output ends with:\n{result.stderr[-1500:]}")
    assert result.returncode == 0 and "trained" in result.stdout, result.stderr[-1500:]


@pytest.mark.slow
def test_a_training_that_died_is_recognised_by_the_next_command(tmp_path):
    """SIGKILL in the middle of fit leaves status running: the next training and quantize say so."""
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "training", "--run", str(run), "--epochs", "50",
                             "-o", "variants=2"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:   # killed as soon as one epoch is saved
        if "val_loss" in line and (run / "checkpoints" / "epoch_001.keras").exists():
            break
    proc.kill()
    proc.wait(30)
    proc.stdout.close()
    again = subprocess.run([sys.executable, "-m", "training", "--run", str(run)], cwd=REPO, capture_output=True,
                           text=True, timeout=300, check=False)
    assert again.returncode == 2 and "the previous training in" in again.stderr and "did not finish" in again.stderr
    assert f"python -m training --run {run} --resume" in again.stderr and "--overwrite" in again.stderr
    assert "its last checkpoint is epoch" in again.stderr
    quantize = subprocess.run([sys.executable, "-m", "quantize", "--run", str(run)], cwd=REPO, capture_output=True,
                              text=True, timeout=300, check=False)
    assert quantize.returncode == 2 and "did not finish (it stopped or crashed)" in quantize.stderr
    assert f"python -m training --run {run} --resume" in quantize.stderr
