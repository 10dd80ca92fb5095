"""Runtime selection: real pycoral when present, the unrelated PyPI 'pycoral' ignored, forced runtimes."""
import json
import subprocess
import sys
import textwrap

from tests.conftest import REPO

PROBE = textwrap.dedent("""
    import json
    from deploy.core.runtime import load_runtime
    from deploy.core import edgetpu
    runtime = load_runtime()
    cache = edgetpu.DelegateCache(runtime)
    try:
        cache.get(":0")
        delegate = "loaded"
    except edgetpu.DelegateError as exc:
        delegate = str(exc)
    print(json.dumps({"name": runtime.name, "pycoral": runtime.pycoral is not None,
                      "tpus": [t.type for t in edgetpu.list_edge_tpus(pycoral=runtime.pycoral)],
                      "delegate": delegate}))
""")


def _probe(tmp_path, package_files, env_extra=None):
    for relative, text in package_files.items():
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    env = {"PYTHONPATH": f"{tmp_path}:{REPO}", "PATH": "/usr/bin:/bin", **(env_extra or {})}
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, env=env, check=False, capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_real_pycoral_lists_tpus_and_loads_the_delegate(tmp_path):
    """A stand-in for Google's pycoral (which stops at Python 3.9): its API shape, recording calls."""
    result = _probe(tmp_path, {
        "pycoral/__init__.py": "",
        "pycoral/utils/__init__.py": "",
        "pycoral/utils/edgetpu.py": """
            def list_edge_tpus():
                return [{"type": "usb", "path": "/sys/bus/usb/devices/2-1"}]
            def load_edgetpu_delegate(options=None):
                raise ValueError(f"stand-in pycoral asked for {options}")
        """,
    })
    assert result["pycoral"] is True
    assert result["tpus"] == ["usb"]
    assert "stand-in pycoral asked for {'device': ':0'}" in result["delegate"]


def test_unrelated_pypi_pycoral_is_ignored(tmp_path):
    result = _probe(tmp_path, {"pycoral/__init__.py": "NAME = 'something else entirely'\n"})
    assert result["pycoral"] is False
    assert result["name"] == "ai_edge_litert"
    assert "libedgetpu" in result["delegate"]  # no libedgetpu here: a clear error, not a crash


def test_forced_runtime_that_is_missing_says_what_to_install(tmp_path):
    env = {"PYTHONPATH": str(REPO), "CORAL_STAGES_RUNTIME": "tflite_runtime", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", "from deploy.core.runtime import load_runtime; load_runtime()"],
                         cwd=REPO, env=env, check=False, capture_output=True, text=True)
    assert out.returncode != 0
    assert "no tflite runtime found" in out.stderr and "pip install ai-edge-litert" in out.stderr
