"""A manifest that lies about its stage files: every command refuses at load time in one line naming the
field, the file and the fix (no traceback), and serve-api stays up answering 503 with that reason."""
import json
import shutil

import httpx
import pytest

import runfolder
from tests.conftest import copy_run, run_cli
from tests.test_serving_api import ServerProcess, free_port, held_out_png


def _edit(run, change):
    manifest = json.loads((run / "manifest.json").read_text())
    change(manifest)
    (run / "manifest.json").write_text(json.dumps(manifest))


def _shape(manifest):
    """A consistent lie: the stage entry and the split's model input both say 32 rows."""
    manifest["stages"][0]["inputs"][0]["shape"] = [1, 32, 28, 1]
    manifest["split"]["model_inputs"][0]["shape"] = [1, 32, 28, 1]


def _null_inputs(manifest):
    manifest["stages"][0]["inputs"] = None


TAMPERED = {
    "shape": (_shape, "stages[0].inputs[0].shape is [1, 32, 28, 1], the file has [1, 28, 28, 1]"),
    "null": (_null_inputs, "stages[0].inputs is null, expected a list"),
    "directory": (None, "is not a file (a directory or a device)"),
    "scale": (lambda m: m["stages"][2]["outputs"][0].update(scale=0.5), "stages[2].outputs[0].scale is 0.5"),
    "split": (lambda m: m["split"]["model_inputs"][0].update(dtype="int8"),
              "split.model_inputs[0].dtype is 'int8' but stages[0].inputs[0].dtype is 'uint8'"),
}


@pytest.fixture(params=sorted(TAMPERED))
def tampered(request, tiny_run, tmp_path):
    run = copy_run(tiny_run, tmp_path)
    change, message = TAMPERED[request.param]
    if change is None:
        stage = run / "stages" / "stage_1.tflite"
        stage.unlink()
        stage.mkdir()
    else:
        _edit(run, change)
    return run, message


def _one_line_error(result, message):
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], result.stderr
    assert "manifest.json" in errors[0] and "python -m quantize" in errors[0] or "Restore" in errors[0]


def test_deploy_eval_serve_stage_and_worker_refuse_in_one_line(tampered, tmp_path):
    run, message = tampered
    _one_line_error(run_cli("deploy", "--run", run, "--eval"), message)
    index = 1 if "directory" in message else 0
    _one_line_error(run_cli("deploy", "serve-stage", "--run", run, "--stage", index, "--listen",
                            f"127.0.0.1:{free_port()}", "--next", f"127.0.0.1:{free_port()}"), message)
    _one_line_error(run_cli("deploy", "worker", "--run", run, "--queue", f"sqlite:{tmp_path}/jobs.db"), message)


def test_launch_names_the_stage_and_the_field(tiny_run, tmp_path):
    run = copy_run(tiny_run, tmp_path)
    _edit(run, _shape)
    result = run_cli("deploy", "launch", "--run", run, "--base-port", 0, "--log-dir", tmp_path / "logs", timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr.split("ends with:")[0]
    assert "stage 0 did not start" in result.stderr and TAMPERED["shape"][1] in result.stderr


def test_serve_api_stays_up_says_why_and_refuses_work(tiny_run, tmp_path):
    run = copy_run(tiny_run, tmp_path)
    _edit(run, _shape)
    server = ServerProcess("serve-api", run, "--queue", f"sqlite:{tmp_path}/jobs.db")
    try:
        def answer():
            response = httpx.get(server.url + "/readyz", timeout=2)
            return "failed to load" in response.text and response
        from tests.waiting import wait_until
        ready = wait_until(lambda: _quiet(answer), 60, "/readyz to give the load error")
        png = held_out_png(tiny_run)[0]
        classify = httpx.post(server.url + "/v1/classify", content=png, headers={"Content-Type": "image/png"})
        job = httpx.post(server.url + "/v1/jobs", content=png, headers={"Content-Type": "image/png"})
        alive = httpx.get(server.url + "/healthz").status_code
        server.proc.terminate()
        server.proc.wait(10)
        output = server.proc.stdout.read()
    finally:
        server.stop()
    said = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(said) == 1 and "cannot serve" in said[0] and TAMPERED["shape"][1] in said[0], output
    assert "Traceback" not in output
    assert ready.status_code == 503 and TAMPERED["shape"][1] in ready.json()["error"]
    for response in (classify, job):
        assert response.status_code == 503 and TAMPERED["shape"][1] in response.json()["error"], response.text
    assert alive == 200
    assert runfolder.load(run)["stages"], "the manifest itself still reads"


def _quiet(predicate):
    try:
        return predicate()
    except httpx.HTTPError:
        return False


def test_a_stage_file_swapped_for_another_stage_is_refused(tiny_run, tmp_path):
    run = copy_run(tiny_run, tmp_path)
    shutil.copy(run / "stages" / "stage_2.tflite", run / "stages" / "stage_0.tflite")
    _edit(run, lambda m: m["stages"][0]["model"].update(sha256=runfolder.sha256_of(run / "stages" / "stage_0.tflite")))
    result = run_cli("deploy", "--run", run, "--eval")
    assert result.returncode == 2 and "does not match stage file" in result.stderr and "stages[0].inputs lists" \
        in result.stderr and "Traceback" not in result.stderr
