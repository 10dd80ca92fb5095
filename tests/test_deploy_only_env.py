"""deploy/ in a deploy-only environment, as on a Raspberry Pi: tflite-runtime, numpy<2, no TensorFlow.

The interpreter of that environment is given by ``DEPLOY_ONLY_PYTHON`` (``make test`` sets it to
``.venv-pi/bin/python``). Without it these tests are skipped, except under CI, where they must run.
The source scan at the end runs in the main environment and always runs.
"""
import ast
import json
import os
import re
import subprocess

import numpy as np
import pytest
from PIL import Image

import runfolder
from deploy.core.chain import StageChain
from deploy.core.classify import (
    WholeModel,
    describe_details,
    evaluate,
    logits,
    whole_model_chain,
)
from deploy.core.runtime import make_interpreter
from tests.conftest import REPO, copy_run, run_cli

FORBIDDEN = {"tensorflow", "keras", "tf_keras", "tensorflow_model_optimization", "training"}


@pytest.fixture(scope="session")   # session scope: checked before the session-wide tiny_run is trained
def pi_python():
    path = os.environ.get("DEPLOY_ONLY_PYTHON")
    if not path:
        reason = ("DEPLOY_ONLY_PYTHON is not set: set it to the python of a deploy-only venv "
                  "(`make venv-pi`, then DEPLOY_ONLY_PYTHON=.venv-pi/bin/python) to test deploy/ without TensorFlow")
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI is set, so the deploy-only environment must be tested")
        pytest.skip(reason)
    if not os.access(path, os.X_OK):
        pytest.fail(f"DEPLOY_ONLY_PYTHON={path} is not an executable python")
    return path


def pi_script(python, code, *args):
    """Runs ``python -c code args`` in the deploy-only env from the repository root; returns its JSON."""
    result = subprocess.run([python, "-c", code, *map(str, args)], cwd=REPO, check=False, capture_output=True,
                            text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def int8_path(run):
    return runfolder.resolve(run, runfolder.load(run)["quantization"]["int8_model"])


# ---------------------------------------------------------------- the environment itself

IMPORTS = """
import importlib, json, sys
found = {}
for name in ["tensorflow", "ai_edge_litert", "keras", "deploy", "deploy.cli.actions", "deploy.core.stages",
             "deploy.core.verify", "deploy.report.summary", "deploy.core.classify", "deploy.__main__", "deploy.pipeline.runner",
             "deploy.pipeline.pipelined_model_runner", "deploy.cli.doctor", "deploy.pipeline.bench", "deploy.core.devices"]:
    try:
        importlib.import_module(name)
        found[name] = None
    except ImportError as exc:
        found[name] = str(exc)
from deploy.core.runtime import load_runtime
import numpy
print(json.dumps({"imports": found, "runtime": load_runtime().name, "numpy": numpy.__version__,
                  "tensorflow_loaded": sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras"))}))
"""


def test_deploy_imports_without_tensorflow(pi_python):
    info = pi_script(pi_python, IMPORTS)
    imports = info["imports"]
    assert imports["tensorflow"] and "tensorflow" in imports["tensorflow"], imports
    assert imports["ai_edge_litert"] and "ai_edge_litert" in imports["ai_edge_litert"], imports
    for module in ("deploy", "deploy.cli.actions", "deploy.core.stages", "deploy.core.verify", "deploy.report.summary",
                   "deploy.core.classify", "deploy.__main__", "deploy.pipeline.runner", "deploy.pipeline.pipelined_model_runner",
                   "deploy.cli.doctor", "deploy.pipeline.bench", "deploy.core.devices"):
        assert imports[module] is None, (module, imports[module])
    assert info["runtime"] == "tflite_runtime"
    assert info["tensorflow_loaded"] == []


# ---------------------------------------------------------------- the same results as the main env

EVAL_INT8 = """
import json, sys
import numpy as np
from deploy.core.classify import evaluate, whole_model_chain
with np.load(sys.argv[2]) as data:
    images, labels = data["images"], data["labels"]
print(json.dumps({"accuracy": evaluate(whole_model_chain(sys.argv[1]), images, labels)["accuracy"]}))
"""


@pytest.fixture(scope="module")
def pi_evaluated(pi_python, tiny_run, tmp_path_factory):
    """A copy of tiny_run after ``python -m deploy --eval`` in the deploy-only env."""
    run = copy_run(tiny_run, tmp_path_factory.mktemp("pi"))
    result = run_cli("deploy", "--run", run, "--eval", python=pi_python)
    assert result.returncode == 0, result.stderr
    return run, result


def test_eval_in_deploy_only_env_equals_its_unsplit_int8_accuracy(pi_python, pi_evaluated):
    run, result = pi_evaluated
    manifest = runfolder.load(run)
    chain = manifest["accuracy"]["chain"]
    assert manifest["deploy"]["eval"]["runtime"].startswith("tflite_runtime ")
    assert f"{chain:.4f}" in result.stdout
    # The split is exact in this runtime too: the unsplit model, run here, scores the same.
    here = pi_script(pi_python, EVAL_INT8, int8_path(run), run / "data" / "test_set.npz")["accuracy"]
    assert chain == here


def _builtin_kernel_accuracy(run):
    """int8 accuracy in the main env with TFLite's built-in kernels only (no default XNNPACK delegate)."""
    interpreter = make_interpreter(int8_path(run), xnnpack=False)
    stage = WholeModel(0, "whole", "", describe_details(interpreter.get_input_details()),
                       describe_details(interpreter.get_output_details()), "cpu", "", interpreter)
    with np.load(run / "data" / "test_set.npz") as data:
        return evaluate(StageChain([stage]), data["images"], data["labels"])["accuracy"]


def test_deploy_only_env_matches_main_env_with_the_same_kernels(pi_evaluated, tiny_run):
    """tflite-runtime 2.14 runs TFLite's built-in int8 kernels; ai-edge-litert applies XNNPACK by
    default, whose rounding differs by a few steps. With the same kernels both environments agree."""
    run, _ = pi_evaluated
    chain = runfolder.load(run)["accuracy"]["chain"]
    assert chain == _builtin_kernel_accuracy(tiny_run)


def test_verify_in_deploy_only_env_is_bit_exact(pi_python, tiny_run, tmp_path):
    run = copy_run(tiny_run, tmp_path)
    result = run_cli("deploy", "verify", "--run", run, "--samples", 16, python=pi_python)
    assert result.returncode == 0, result.stderr
    assert re.search(r"(?m)^0 mismatching outputs of 16 \(16 samples, test split images\)", result.stdout), \
        result.stdout
    assert runfolder.load(run)["deploy"]["verify"]["bit_exact"] is True


def test_verify_coral_split_made_in_main_env_in_deploy_only_env(pi_python, coral_data, tmp_path):
    from quantize.plan_options import PlanOptions
    from quantize.stages import split_into
    model = coral_data / "mobilenet_v1_0.25_128_quant.tflite"
    split_into(str(tmp_path / "m3"), str(model), PlanOptions(stages=3), progress=lambda *_: None)
    result = run_cli("deploy", "verify", "--run", tmp_path / "m3", "--reference", model, "--samples", 4,
                     python=pi_python)
    assert result.returncode == 0, result.stderr
    assert re.search(r"(?m)^0 mismatching outputs of 4 ", result.stdout), result.stdout


def test_same_png_gets_the_same_class_in_both_envs(pi_python, tiny_run, tmp_path):
    # The test image the model is surest about, so a few steps of kernel rounding cannot flip it.
    reference = whole_model_chain(int8_path(tiny_run))
    with np.load(tiny_run / "data" / "test_set.npz") as data:
        images = data["images"]
    scores = np.stack([logits(reference, im) for im in images])
    top2 = np.sort(scores, axis=1)[:, -2:]
    pick = int(np.argmax(top2[:, 1] - top2[:, 0]))
    step = reference.outputs[0]["scale"]
    assert top2[pick, 1] - top2[pick, 0] > 8 * step, "no test image with a clear top class"
    png = tmp_path / "digit.png"
    Image.fromarray(images[pick][:, :, 0], mode="L").save(png)

    classes = {}
    for name, python in (("main", None), ("deploy-only", pi_python)):
        result = run_cli("deploy", "--run", tiny_run, "--image", png, python=python)
        assert result.returncode == 0, (name, result.stderr)
        found = re.search(rf"(?m)^{re.escape(str(png))}: (\S+) \(", result.stdout)
        assert found, (name, result.stdout)
        classes[name] = found.group(1)
    names = runfolder.load(tiny_run)["dataset"]["class_names"]
    assert classes["main"] == classes["deploy-only"] == names[int(np.argmax(scores[pick]))]


PIPELINED = """
import json, sys
import numpy as np
from deploy.core.open import open_chain
from deploy.pipeline.runner import PipelinedRunner
from deploy.pipeline.pipelined_model_runner import PipelinedModelRunner
from deploy.core.classify import whole_model_chain
from deploy.core.verify import sample_feeds
_, chain = open_chain(sys.argv[1], "cpu", tpus=[])
whole = whole_model_chain(sys.argv[2])
feeds = sample_feeds(chain, 12, seed=9)
name_in, name_out = chain.inputs[0]["name"], chain.outputs[0]["name"]
expected = [whole.run({whole.inputs[0]["name"]: f[name_in]})[whole.outputs[0]["name"]] for f in feeds]
results = list(PipelinedRunner(chain).stream(feeds))
ours = [r.request_id for r in results] == list(range(12)) and all(
    np.array_equal(r.outputs[name_out], e) for r, e in zip(results, expected))
runner = PipelinedModelRunner([s.interpreter for s in chain.stages])
for f in feeds:
    runner.push(f)
runner.push({})
popped = []
while (result := runner.pop()) is not None:
    popped.append(result[name_out])
drop_in = len(popped) == 12 and all(np.array_equal(p, e) for p, e in zip(popped, expected))
print(json.dumps({"pipelined_runner": bool(ours), "drop_in": bool(drop_in)}))
"""


def test_pipelined_runners_in_deploy_only_env_equal_the_unsplit_model(pi_python, coral_data, tmp_path):
    from quantize.plan_options import PlanOptions
    from quantize.stages import split_into
    model = coral_data / "mobilenet_v1_0.25_128_quant.tflite"
    split_into(str(tmp_path / "m3"), str(model), PlanOptions(stages=3), progress=lambda *_: None)
    assert pi_script(pi_python, PIPELINED, tmp_path / "m3", model) == {"pipelined_runner": True, "drop_in": True}


def test_doctor_and_bench_in_deploy_only_env(pi_python, tiny_run, tmp_path):
    doctor = run_cli("deploy", "doctor", python=pi_python)
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert "runtime: tflite_runtime 2.14.0" in doctor.stdout and "numpy 1." in doctor.stdout
    run = copy_run(tiny_run, tmp_path)
    bench = run_cli("deploy", "bench", "--run", run, "--samples", 8, "--warmup", 1, python=pi_python)
    assert bench.returncode == 0, bench.stderr
    assert "plot skipped: matplotlib is not installed" in bench.stdout      # no matplotlib on the Pi
    recorded = runfolder.load(run)["deploy"]["bench"]
    assert recorded["runtime"].startswith("tflite_runtime ") and recorded["plot"] is None


# ---------------------------------------------------------------- deploy/ source (main env)

def _imported_modules(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module


def test_deploy_source_never_imports_tensorflow_keras_or_training():
    sources = sorted((REPO / "deploy").rglob("*.py"))   # every subpackage: core, pipeline, cli, net, ...
    assert len(sources) >= 10
    offenders = [f"{path.relative_to(REPO)}:{line} imports {module}"
                 for path in sources for line, module in _imported_modules(path)
                 if module.split(".")[0] in FORBIDDEN]
    assert offenders == []


def test_import_scan_finds_forbidden_imports(tmp_path):
    """The scan above can fail: it sees plain, dotted, from- and function-level imports."""
    sample = tmp_path / "sample.py"
    sample.write_text("import numpy\nimport tensorflow.lite as tfl\nfrom training.train import train\n"
                      "def f():\n    import keras\n    from . import chain\n")
    modules = [m for _, m in _imported_modules(sample)]
    assert [m for m in modules if m.split(".")[0] in FORBIDDEN] == ["tensorflow.lite", "training.train", "keras"]
