"""The Edge TPU latency estimate: its constants come from the published figures, stage estimates add up,
the partitioner's O(1) cost agrees with the exact one, and --balance edgetpu cuts by it."""
import json
import pathlib

import numpy as np
import pytest

from quantize.costs import parameter_table
from quantize.partition import balanced_plan, objective_cost
from tests.conftest import run_cli
from tflitegraph import edgetpu_latency as L
from tflitegraph.edgetpu_fit import fit, fit_host
from tflitegraph.graph import read_graph

DATA = pathlib.Path(__file__).resolve().parents[1] / "bench" / "data" / "edgetpu_published.json"
ROWS = json.loads(DATA.read_text())
HOSTS = json.loads((DATA.parent / "edgetpu_hosts.json").read_text())["hosts"]


def test_the_constants_are_the_fit_of_the_published_figures():
    refit = fit(ROWS)
    for name, value in L.USB3.items():
        assert refit[name] == pytest.approx(value, rel=1e-6, abs=1e-9), name


def test_the_leave_one_out_error_stated_is_the_one_measured():
    errors = []
    for i, row in enumerate(ROWS):
        others = fit(ROWS[:i] + ROWS[i + 1:])
        errors.append(abs(L.model_ms(row, others) - row["published_ms"]) / row["published_ms"])
    assert L.LEAVE_ONE_OUT == {"models": len(ROWS), "median_error": round(float(np.median(errors)), 3),
                               "max_error": round(float(max(errors)), 3)}


def test_a_slower_link_only_slows_the_transfer():
    row = next(r for r in ROWS if r["streamed_bytes"] > 0)
    usb3, usb2 = L.model_ms(row), L.model_ms(row, link="usb2")
    moved = row["io_bytes"] + row["streamed_bytes"]
    rate = L.HOSTS["rpi3"]["bytes_per_ms"]   # the USB 2 rate measured on a Raspberry Pi 3 B
    assert usb2 - usb3 == pytest.approx(moved * (1 / rate - 1 / L.USB3["bytes_per_ms"]), rel=1e-9)
    assert L.model_ms(row, link="pcie") == usb3


def test_the_host_constants_are_the_fit_of_pycorals_figures_and_predict_its_desktop():
    for name, host in HOSTS.items():
        refit = fit_host(ROWS, host["ms"], host["link"])
        for key, value in L.HOSTS[name].items():
            assert refit[key] == pytest.approx(value, rel=1e-5), (name, key)
        assert refit["bytes_per_ms"] <= L.LINK_BYTES_PER_MS[host["link"]] * (1 + 1e-9)
    rows = {r["name"]: r for r in ROWS}
    for name, ms in HOSTS["desktop"]["ms"].items():   # figures the desktop constants were not fitted on
        assert L.model_ms(rows[name]) == pytest.approx(ms, rel=0.25), name
    for name in HOSTS["rpi3"]["ms"]:
        assert L.model_ms(rows[name], link="usb2-rpi3") > L.model_ms(rows[name], link="usb3-rpi4") > \
            L.model_ms(rows[name])


def test_the_partitioners_cost_agrees_with_the_exact_stage_estimate(coral_data):
    """MobileNet v1 is a chain: what crosses each cut is exactly what the next stage reads."""
    graph = read_graph(str(coral_data / "mobilenet_v1_0.25_128_quant.tflite"))
    cost = objective_cost(graph, "edgetpu:usb3")
    n = len(graph.ops)
    for start, end in [(0, n), (0, 10), (10, 20), (20, n), (5, 6)]:
        assert cost(start, end) == pytest.approx(L.stage_ms(graph, start, end), rel=1e-9), (start, end)
    whole = L.stage_features(graph, 0, n)
    parts = [L.stage_features(graph, a, b) for a, b in [(0, 10), (10, 20), (20, n)]]
    assert sum(p["macs"] for p in parts) == whole["macs"]
    assert sum(p["parameter_bytes"] for p in parts) == whole["parameter_bytes"]


def conv_stack(path, size, channels, widths):
    """A full-int8 model of 3x3 convolutions of ``widths`` on a size x size x channels input, then a
    10-way dense layer, converted here into ``path``."""
    from quantize.ptq import convert_int8
    from training.keras_setup import keras
    layers = keras.layers
    image = x = keras.Input((size, size, channels), batch_size=1)
    for width in widths:
        x = layers.Conv2D(width, 3, padding="same", activation="relu")(x)
    model = keras.Model(image, layers.Dense(10)(layers.GlobalAveragePooling2D()(x)))
    samples = np.random.default_rng(0).random((4, size, size, channels), np.float32)
    path.write_bytes(convert_int8(model, samples))
    return str(path)


@pytest.fixture(scope="module")
def big_model(tmp_path_factory):
    """Convolutions whose weights (~13 MiB of int8) do not fit one Edge TPU's cache, made here."""
    return conv_stack(tmp_path_factory.mktemp("big") / "big.tflite", 4, 256, (512, 512, 512, 512, 768, 256))


def test_edgetpu_cuts_make_the_slowest_stage_faster_than_params_or_macs_cuts(coral_data):
    """MobileNet v2 in 3 stages: the cuts chosen by the estimate beat, by the same estimate, the cuts
    that even out parameters or MACs (the partitioner's objective is wired to the estimate)."""
    graph = read_graph(str(coral_data / "mobilenet_v2_1.0_224_quant.tflite"))
    estimate = objective_cost(graph, "edgetpu:usb3")
    worst = {}
    for objective in ("edgetpu:usb3", "params", "macs"):
        plan = balanced_plan(graph, 3, objective)
        bounds = [0] + plan.cuts + [len(graph.ops)]
        worst[objective] = max(estimate(a, b) for a, b in zip(bounds, bounds[1:]))
        assert len(plan.edgetpu_ms) == 3 and plan.link == "usb3"
    assert worst["edgetpu:usb3"] < min(worst["params"], worst["macs"])


def test_a_stage_over_the_on_chip_cache_is_charged_for_streaming(big_model):
    graph = read_graph(big_model)
    assert L.model_features(graph)["streamed_bytes"] > 0, "the model fits the cache; the test shows nothing"
    table = parameter_table(graph)
    plan = balanced_plan(graph, 2, "edgetpu:usb3")
    bounds = [0] + plan.cuts + [len(graph.ops)]
    for (a, b), ms in zip(zip(bounds, bounds[1:]), plan.edgetpu_ms):
        streamed = max(0, int(table[a, b]) - L.USABLE_ON_CHIP_BYTES)
        assert L.stage_features(graph, a, b)["streamed_bytes"] == streamed
        assert ms > streamed / L.USB3["bytes_per_ms"]
    assert max(table[a, b] for a, b in zip(bounds, bounds[1:])) > L.USABLE_ON_CHIP_BYTES


def test_quantize_plan_balances_by_the_estimate_over_the_link_asked(big_model):
    out = run_cli("quantize", "plan", big_model, "--stages", "2", "--balance", "edgetpu", "--link", "usb2",
                  "--no-profile", timeout=300)
    assert out.returncode == 0, out.stderr
    assert "objective: edgetpu:usb2" in out.stdout and "TPU est. ms (usb2)" in out.stdout
    assert "an estimate for one Edge TPU per stage over usb2" in out.stdout


def test_the_benches_print_the_fit_and_the_estimated_throughputs(coral_data):
    hosts = run_cli("bench.edgetpu_hosts", timeout=300)
    assert hosts.returncode == 0, hosts.stderr
    assert "leave-one-out over the non-desktop hosts: median" in hosts.stdout
    model = run_cli("bench.edgetpu_model", "--from-data", timeout=300)
    assert model.returncode == 0, model.stderr
    assert (f"leave-one-out error: median {100 * L.LEAVE_ONE_OUT['median_error']:.1f}%"
            in model.stdout.splitlines()[-1])
    path = coral_data / "mobilenet_v2_1.0_224_quant.tflite"
    part = run_cli("bench.partition", "--edgetpu", "--models", path, "--stages", "2,3", timeout=300)
    assert part.returncode == 0, part.stderr
    rows = json.loads(part.stdout.splitlines()[-1])["edgetpu_estimates"]
    assert [r["stages"] for r in rows] == [2, 3]
    assert all(r["edgetpu_over_params"] >= 1 and r["edgetpu_over_macs"] >= 1 for r in rows)
