"""Shared fixtures: Coral's test models, a tiny trained run, the stand-in compiler, CLI runner."""
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
STANDINS = REPO / "tests" / "standins"


def pytest_configure(config):
    """Decoded folder images go to a cache of this test session (subprocesses inherit it), not ~/.cache."""
    os.environ["CORAL_STAGES_CACHE"] = tempfile.mkdtemp(prefix="coral-stages-cache-")


def _coral_dir():
    env = os.environ.get("CORAL_TEST_DATA")
    return pathlib.Path(env) if env else REPO.parent / "shared" / "coral_test_data"


@pytest.fixture(scope="session")
def coral_data():
    """Folder of Coral's test models (Apache-2.0), kept beside the repository in shared/."""
    path = _coral_dir()
    if not (path / "mobilenet_v1_0.25_128_quant.tflite").exists():
        pytest.fail(f"Coral test data not found at {path}; set CORAL_TEST_DATA to its folder")
    return path


def run_cli(module, *args, env=None, python=None, timeout=600):
    """Runs ``python -m module args`` from the repository root; returns CompletedProcess (text)."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run([python or sys.executable, "-m", module, *map(str, args)], cwd=REPO,
                          env=full_env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A run folder trained for one epoch on a small digits set, quantized and split in 3 stages.

    Session-wide and read-only: tests that change a run copy it with ``copy_run``.
    """
    from quantize.plan_options import PlanOptions
    from quantize.qat import QatPolicy
    from quantize.run import quantize_run
    from training.config import TrainConfig
    from training.train import train
    run = tmp_path_factory.mktemp("runs") / "tiny"
    train(str(run), TrainConfig("digits", {"variants": 2}, "splitnet", epochs=1), verbose=0)
    quantize_run(str(run), PlanOptions(stages=3), samples=50, qat=QatPolicy(auto=False))   # QAT has tests of its own
    return run


def copy_run(run, tmp_path, name="run"):
    """A private copy of a run folder that a test may change."""
    target = pathlib.Path(tmp_path) / name
    shutil.copytree(run, target)
    return target


@pytest.fixture
def standin_env():
    """Environment with the stand-in edgetpu_compiler first on PATH, then this Python's bin folder
    (the stand-in runs on ``python3`` and reads models with ai-edge-litert)."""
    path = os.pathsep.join([str(STANDINS), os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    return {"PATH": path}


@pytest.fixture(scope="session")
def digits():
    """The embedded default data set, loaded once."""
    from datasets import load_dataset
    return load_dataset("digits")


@pytest.fixture(scope="session")
def shapes():
    """A small synthetic RGB data set."""
    from datasets import load_dataset
    return load_dataset("shapes", classes=3, size=24, samples=20, seed=5)


def png_bytes(pixels):
    """PNG file bytes of uint8 pixels (H, W, 1 or 3)."""
    import io

    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels).save(buf, format="PNG")
    return buf.getvalue()


def skip_unless_strict(reason):
    """Skips a test whose tool is missing, except under `make test` / CI, where every test must run."""
    if os.environ.get("CI") or os.environ.get("STRICT_TESTS"):
        pytest.fail(f"{reason}; `make test` installs it, so this test must run here")
    pytest.skip(reason)
