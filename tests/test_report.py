"""Tests of ``python -m deploy report``: the page's content, and the page in a real headless chromium.

The browser is Debian's chromium driven by selenium through Debian's chromedriver
(no browser download): the page must load with no console errors, show every
section, decode every inlined image and make no request beyond the file itself.
"""
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import pytest

import runfolder
from tests.conftest import copy_run, run_cli, skip_unless_strict

SECTION_IDS = ["dataset", "training", "accuracy", "confusion", "stages", "latency", "exits"]
CHROMIUM = pathlib.Path("/usr/bin/chromium")
CHROMEDRIVER = pathlib.Path("/usr/bin/chromedriver")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def browser():
    """A headless Debian chromium under selenium, with console and network logs, in an empty profile."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        skip_unless_strict("selenium is not installed (pip install selenium)")
    if not CHROMIUM.exists() or not CHROMEDRIVER.exists():
        skip_unless_strict("Debian's chromium and chromedriver are needed (apt-get install chromium chromium-driver)")
    profile = tempfile.mkdtemp(prefix="report-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS + [f"--user-data-dir={profile}", "--window-size=1300,900"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def open_in_browser(driver, path):
    """Loads the page; returns (console messages, requested URLs, [naturalWidth of each image])."""
    driver.get_log("browser")
    driver.get_log("performance")
    driver.get(pathlib.Path(path).resolve().as_uri())
    assert driver.execute_script("return document.readyState") == "complete"
    widths = driver.execute_script(
        "return Array.from(document.images).map(i => i.complete ? i.naturalWidth : -1)")
    console = driver.get_log("browser")
    requests = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            requests.append(message["params"]["request"]["url"])
    return console, requests, widths


def assert_sections_shown(driver):
    for section_id in SECTION_IDS:
        element = driver.find_element("id", section_id)
        assert element.is_displayed(), section_id
        assert element.size["height"] > 0, section_id
        assert element.find_element("tag name", "h2").text.strip(), section_id


def check_page(driver, path):
    """The page loads with no console message, shows each section, decodes each image, stays offline."""
    console, requests, widths = open_in_browser(driver, path)
    assert console == [], console
    assert_sections_shown(driver)
    assert all(w > 0 for w in widths), widths
    assert pathlib.Path(path).resolve().as_uri() in requests  # the network log works...
    assert [u for u in requests if re.match(r"(https?|wss?|ftp):", u)] == []  # ...and shows nothing else
    return widths


def report(run, *args):
    result = run_cli("deploy", "report", "--run", run, *args)
    assert result.returncode == 0, result.stderr
    path = pathlib.Path(run) / "report.html" if "--out" not in args else pathlib.Path(args[args.index("--out") + 1])
    assert f"report: {path}" in result.stdout
    return path, path.read_text(encoding="utf-8")


def section_html(page, section_id):
    match = re.search(rf'<section id="{section_id}">(.*?)</section>', page, re.DOTALL)
    assert match, section_id
    return match.group(1)


def table_rows(page, table_id):
    """Cell texts of each body row of the table with this id."""
    body = re.search(rf'<table id="{table_id}">.*?<tbody>(.*?)</tbody>', page, re.DOTALL)
    assert body, table_id
    return [[re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.DOTALL)]
            for row in re.findall(r"<tr>(.*?)</tr>", body.group(1), re.DOTALL)]


@pytest.mark.slow
def test_report_of_a_run_without_compile_eval_or_exits(tiny_run, tmp_path, browser):
    run = copy_run(tiny_run, tmp_path)
    manifest = runfolder.load(run)
    assert not manifest.get("compile") and not manifest.get("deploy")
    manifest["quantization"].pop("predictions", None)  # as in runs quantized before predictions were kept
    runfolder.save(run, manifest)
    path, page = report(run)

    assert "not compiled; `python -m compile --run" in section_html(page, "stages")
    assert f"python -m deploy --run {run} --eval" in section_html(page, "latency")
    assert "python -m deploy bench --run" in section_html(page, "latency")
    assert "no exits in this run" in section_html(page, "exits")
    assert "quantization.predictions" in section_html(page, "confusion")
    # int8 and chain predictions are measured now on the test split: the int8 accuracy matches
    # the one quantize measured with the same evaluation code, and the chain is bit-exact with it.
    rows = {r[0]: r for r in table_rows(page, "confusion-accuracy")}
    assert set(rows) == {"int8", "chain"}
    assert rows["int8"][1] == f"{manifest['dataset']['counts']['test']:,}"
    assert rows["int8"][2] == f"{100 * manifest['accuracy']['int8']:.2f}%"
    assert ["int8", "chain", rows["int8"][1], "100.00%"] in table_rows(page, "agreement")
    stages = table_rows(page, "stage-sizes")
    assert [int(r[0]) for r in stages] == [s["index"] for s in manifest["stages"]]
    assert [r[5] for r in stages] == [f"{s['macs']:,}" for s in manifest["stages"]]

    widths = check_page(browser, path)
    # test samples, training curves, two confusion matrices, latency per stage (the Edge TPU estimate)
    assert len(widths) == 1 + 1 + 2 + 1
    assert "Edge TPU estimate (usb3) ms" in section_html(page, "latency")


@pytest.mark.slow
def test_report_shows_the_compile_result_of_each_stage(tiny_run, tmp_path, standin_env):
    run = copy_run(tiny_run, tmp_path)
    compiled = run_cli("compile", "--run", run, env=standin_env)
    assert compiled.returncode == 0, compiled.stderr
    manifest = runfolder.load(run)
    _, page = report(run, "--no-eval")

    placement = table_rows(page, "stage-placement")
    assert len(placement) == len(manifest["stages"])
    for row, stage in zip(placement, manifest["stages"]):
        result = stage["compile"]
        assert f"{result['ops_mapped']}/{result['total_ops']} ops on the Edge TPU" in row[5]
        assert f"on-chip {result['on_chip_memory_bytes']:,} B" in row[5]
        assert row[1].startswith("ops (compiled)")
    sizes = table_rows(page, "stage-sizes")
    assert [r[3] for r in sizes] == [f"{s['compiled']['bytes']:,}" for s in manifest["stages"]]
    assert manifest["compile"]["compiler"]["version"] in section_html(page, "stages")
    assert "--no-eval" in section_html(page, "confusion")


def _add_synthetic_exits_and_qat_history(run):
    """SYNTHETIC early-exit results and QAT fine-tuning history, only to test rendering: the real
    deploy.exits comes from ``python -m deploy exits``, the real quantization.qat from
    ``python -m quantize --qat`` (too slow for this test). Returns the exits."""
    manifest = runfolder.load(run)
    if not manifest["quantization"].get("qat"):
        manifest["quantization"]["qat"] = {
            "accuracy": 0.5, "drop_points": 1.0, "epochs": 2, "learning_rate": 1e-4, "why": "synthetic",
            "history": {"loss": [0.9, 0.7], "val_loss": [1.0, 0.8], "accuracy": [0.6, 0.7],
                        "val_accuracy": [0.5, 0.6], "best_epoch": 2}}
    boundaries = manifest["training"]["boundaries"]
    exits = {"thresholds": [0.5, 0.9, 0.99], "rows": [], "full_model": {"accuracy": 0.9, "latency_ms_mean": 1.0}}
    for k, threshold in enumerate(exits["thresholds"]):
        share = {b: 0.3 - 0.1 * k for b in boundaries}
        share["final"] = 1.0 - sum(share.values())
        exits["rows"].append({"threshold": threshold, "exit_share": share, "accuracy": 0.8 + 0.04 * k,
                              "latency_ms_mean": 0.5 + 0.2 * k, "latency_ms_p50": 0.4 + 0.2 * k})
    manifest.setdefault("deploy", {})["exits"] = exits
    runfolder.save(run, manifest)
    return exits


@pytest.mark.slow
def test_report_renders_recorded_predictions_and_exit_tradeoff(tiny_run, tmp_path, browser):
    run = copy_run(tiny_run, tmp_path)
    exits = _add_synthetic_exits_and_qat_history(run)
    quantization = runfolder.load(run)["quantization"]
    qat_epochs = len(quantization["qat"]["history"]["loss"])
    with np.load(runfolder.verify_file(run, quantization["predictions"], "predictions")) as data:
        recorded = {name: data[name] for name in data.files}
    path, page = report(run, "--limit", "200", "--out", str(tmp_path / "out" / "page.html"))

    rows = {r[0]: r for r in table_rows(page, "confusion-accuracy")}
    kept = [name for name in ("float", "ptq", "qat") if name in recorded]
    assert list(rows) == kept + ["int8", "chain"] and kept[:2] == ["float", "ptq"]
    for name in kept:
        assert rows[name][1] == f"{len(recorded['labels']):,}"
        assert rows[name][2] == f"{100 * np.mean(recorded[name] == recorded['labels']):.2f}%"
    assert rows["ptq"][2] == f"{100 * quantization['ptq']['accuracy']:.2f}%"
    assert rows["int8"][1] == "200"  # --limit applies to what the report measures itself
    float_vs_ptq = next(r for r in table_rows(page, "agreement") if r[:2] == ["float", "ptq"])
    assert float_vs_ptq[3] == f"{100 * np.mean(recorded['float'] == recorded['ptq']):.2f}%"
    assert "quantization.predictions" not in section_html(page, "confusion")

    exit_rows = table_rows(page, "exit-table")
    assert len(exit_rows) == len(exits["rows"]) + 1 and exit_rows[-1][0] == "full model"
    assert [r[0] for r in exit_rows[:-1]] == [str(t) for t in exits["thresholds"]]
    assert exit_rows[0][-3] == f"{100 * exits['rows'][0]['accuracy']:.2f}%"

    assert len(table_rows(page, "qat-history-table")) == qat_epochs
    assert f"kept epoch {quantization['qat']['history']['best_epoch']}" in section_html(page, "training")

    widths = check_page(browser, path)
    assert len(widths) == 3 + len(rows) + 1 + 1  # samples, training and QAT curves, confusion matrices, exits,
    # latency per stage (the Edge TPU estimate)


BLOCK_MATPLOTLIB = """
import sys
sys.modules["matplotlib"] = None  # importing it now raises ImportError, as on a Pi without it
from deploy.__main__ import main
code = main(["report", "--run", sys.argv[1], "--limit", "50"])
assert not any(name.startswith("matplotlib") and sys.modules[name] for name in sys.modules), "matplotlib used"
assert "tensorflow" not in sys.modules, "deploy imported TensorFlow"
sys.exit(code)
"""


@pytest.mark.slow
def test_report_without_matplotlib_has_tables_and_a_note(tiny_run, tmp_path, browser):
    run = copy_run(tiny_run, tmp_path)
    result = subprocess.run([sys.executable, "-c", BLOCK_MATPLOTLIB, str(run)], cwd=pathlib.Path(__file__).parents[1],
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    page = (run / "report.html").read_text(encoding="utf-8")
    assert page.count("<img") == 1 and "<img" in section_html(page, "dataset")  # samples drawn with Pillow
    assert "figures need matplotlib" in section_html(page, "training")
    assert "figures need matplotlib" in section_html(page, "confusion")
    assert len(table_rows(page, "history-table")) == runfolder.load(run)["training"]["epochs_run"]
    matrix = table_rows(page, "confusion-int8")
    assert sum(int(v.replace(",", "")) for row in matrix for v in row[1:]) == 50
    assert len(check_page(browser, run / "report.html")) == 1


def test_report_of_an_empty_manifest_says_what_to_run_for_each_part(tmp_path):
    from deploy.report.page import SECTIONS, write_report
    runfolder.save(tmp_path, {"schema_version": runfolder.SCHEMA_VERSION, "run": "empty"})
    page = write_report(tmp_path).read_text(encoding="utf-8")
    wanted = {"dataset": "python -m training", "training": "python -m training", "accuracy": "python -m quantize",
              "confusion": "python -m quantize", "stages": "python -m quantize", "latency": "python -m deploy bench",
              "exits": "no exits in this run", "own-data": "python -m deploy --eval"}
    assert set(wanted) == {sid for sid, _, _ in SECTIONS}
    for section_id, text in wanted.items():
        assert text in section_html(page, section_id), section_id


def test_report_names_what_is_wrong(tmp_path):
    missing = run_cli("deploy", "report", "--run", tmp_path / "nowhere")
    assert missing.returncode == 2
    assert "nowhere" in missing.stderr and "python -m training" in missing.stderr
    bad_limit = run_cli("deploy", "report", "--run", tmp_path, "--limit", "0")
    assert bad_limit.returncode == 2 and "--limit" in bad_limit.stderr


@pytest.fixture(scope="module")
def deploy_only_python():
    """The python of a deploy-only venv (tflite-runtime, numpy<2, no TensorFlow, no matplotlib), as
    tests/test_deploy_only_env.py finds it: DEPLOY_ONLY_PYTHON, required under CI."""
    path = os.environ.get("DEPLOY_ONLY_PYTHON")
    if not path:
        if os.environ.get("CI"):
            pytest.fail("DEPLOY_ONLY_PYTHON is not set; CI is set, so the deploy-only environment must be tested")
        pytest.skip("DEPLOY_ONLY_PYTHON is not set (`make venv-pi`, then DEPLOY_ONLY_PYTHON=.venv-pi/bin/python)")
    return path


@pytest.mark.slow
def test_report_in_the_deploy_only_environment(tiny_run, tmp_path, deploy_only_python):
    run = copy_run(tiny_run, tmp_path)
    result = run_cli("deploy", "report", "--run", run, "--limit", "100", python=deploy_only_python)
    assert result.returncode == 0, result.stderr
    page = (run / "report.html").read_text(encoding="utf-8")
    for section_id in SECTION_IDS:
        assert section_html(page, section_id)
    assert "tflite_runtime" in section_html(page, "confusion")
    measured = {r[0]: r[1] for r in table_rows(page, "confusion-accuracy") if r[0] in ("int8", "chain")}
    assert measured == {"int8": "100", "chain": "100"}


def test_browser_check_sees_console_errors_broken_images_and_requests(tmp_path, browser):
    """The checks above could fail: a page with a script error, a broken image and an outside request."""
    page = tmp_path / "bad.html"
    page.write_text('<!DOCTYPE html><html><head><link rel="icon" href="data:,"></head><body>'
                    '<img src="data:image/png;base64,AAAA"><img src="http://127.0.0.1:9/x.png">'
                    '<script>console.error("broken on purpose")</script></body></html>')
    console, requests, widths = open_in_browser(browser, page)
    assert any("broken on purpose" in entry["message"] for entry in console)
    assert widths[0] <= 0
    assert "http://127.0.0.1:9/x.png" in requests
