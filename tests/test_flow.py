"""The whole flow through the command line, as a user runs it: train -> quantize -> compile -> deploy."""
import json
import os

import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.slow


def _ok(result):
    assert result.returncode == 0, f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result


def _no_compiler_env(tmp_path):
    """PATH with python but without any edgetpu_compiler."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    return {"PATH": os.pathsep.join([str(bin_dir), "/usr/bin", "/bin"])}


def test_flow_end_to_end_on_the_cpu(tmp_path, standin_env):
    run = tmp_path / "flow"
    _ok(run_cli("training", "--dataset", "digits", "--data-option", "variants=2", "--model", "splitnet",
                "--epochs", 2, "--run", run))
    _ok(run_cli("quantize", "--run", run, "--stages", 3, "--samples", 50))
    compiled = _ok(run_cli("compile", "--run", run, env=_no_compiler_env(tmp_path)))
    assert "edgetpu_compiler" in compiled.stdout + compiled.stderr
    assert "CPU" in compiled.stdout + compiled.stderr
    evaluation = _ok(run_cli("deploy", "--run", run, "--eval"))
    assert "chain accuracy on" in evaluation.stdout
    verify = _ok(run_cli("deploy", "verify", "--run", run, "--samples", 32))
    assert "0 mismatching outputs of 32" in verify.stdout
    summary = _ok(run_cli("deploy", "summary", "--run", run))
    assert "bit-exact" in summary.stdout and "compiler-missing" in summary.stdout
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["schema_version"] == 1
    assert manifest["accuracy"]["chain"] == manifest["accuracy"]["int8"]
    assert [s["placement"] for s in manifest["deploy"]["eval"]["stages"]] == ["cpu"] * 3
    assert all("edgetpu_compiler was not found" in s["reason"] or "not compiled" in s["reason"]
               or "no Edge TPU" in s["reason"] for s in manifest["deploy"]["eval"]["stages"])
    for stage in manifest["stages"]:
        assert stage["compiled"] is None and len(stage["model"]["sha256"]) == 64

    # With the stand-in compiler: stages get compiled files; without a TPU they still run on the CPU.
    _ok(run_cli("compile", "--run", run, env=standin_env))
    manifest = json.loads((run / "manifest.json").read_text())
    assert all(stage["compiled"] for stage in manifest["stages"])
    again = _ok(run_cli("deploy", "verify", "--run", run, "--samples", 8))
    assert "0 mismatching outputs" in again.stdout
    _ok(run_cli("deploy", "--run", run, "--eval"))
    summary = _ok(run_cli("deploy", "summary", "--run", run)).stdout
    assert "compile: compiled with edgetpu_compiler 16.0" in summary
    assert summary.count("ops mapped to the Edge TPU") == 3
    assert summary.count("why: no Edge TPU found") == 3


def test_steps_out_of_order_say_which_step_first(tmp_path):
    run = tmp_path / "nothing"
    for module, args in (("quantize", []), ("compile", []), ("deploy", ["--eval"])):
        result = run_cli(module, "--run", run, *args)
        assert result.returncode != 0, module
        assert "python -m training" in result.stderr, (module, result.stderr)


def test_every_command_has_help():
    for module, args in (("training", []), ("quantize", []), ("quantize", ["split"]), ("compile", []),
                         ("deploy", []), ("deploy", ["verify"]), ("deploy", ["summary"]), ("datasets", [])):
        result = run_cli(module, *args, "--help")
        assert result.returncode == 0, (module, args, result.stderr)
        assert "usage:" in result.stdout


NATIVE_NOISE = ("I0000", "E0000", "W0000", "absl::InitializeLog", "cuInit", "cuda drivers", "fully_quantize:",
                "inference_type:", "XNNPACK delegate", "oneDNN custom operations")


def test_make_demo_says_nothing_from_tensorflows_native_logs(tmp_path):
    """What a user sees from `make demo` (one epoch here): the project's lines, none of TensorFlow's or the
    runtime's C++ logging; with CORAL_STAGES_VERBOSE=1 they come back."""
    import subprocess
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run(["make", "-s", "demo", "EPOCHS=1", f"RUN={tmp_path / 'demo'}"], cwd=repo,
                            capture_output=True, text=True, timeout=900, check=False)
    said = result.stdout + result.stderr
    assert result.returncode == 0, said[-3000:]
    assert "chain accuracy on" in said and "0 mismatching outputs" in said, said[-3000:]
    found = [line for line in said.splitlines() if any(noise in line for noise in NATIVE_NOISE)]
    assert not found, found[:5]
    loud = run_cli("deploy", "--run", tmp_path / "demo", "--eval", "--limit", "4", env={"CORAL_STAGES_VERBOSE": "1"})
    assert loud.returncode == 0 and "XNNPACK delegate" in loud.stdout + loud.stderr
