"""The Edge TPU estimate on other hosts: pycoral's reference figures per host (Raspberry Pi 4, Pi 3 B and
3 B+, the Dev Board, a desktop), each host's per-invoke cost and data rate fitted with the chip's own
constants kept from the Coral-table fit (tflitegraph/edgetpu_fit.py).

    .venv/bin/python bench/edgetpu_hosts.py [--write]

Models: MobileNet v1 and v2, Inception v1 and v4 (the SSDs are left out: their post-processing runs on
the CPU), features from bench/data/edgetpu_published.json. Per host it prints the fit, each model's
figure, fitted and leave-one-out estimate (fit on the other three), and the error of the plain desktop
constants on pycoral's desktop figures: those were not used to fit them. ``--write`` prints the HOSTS
literal for tflitegraph/edgetpu_latency.py.
"""
import argparse
import json
import pathlib
import statistics
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tflitegraph import edgetpu_latency as L  # noqa: E402
from tflitegraph.edgetpu_fit import fit_host, leave_one_out  # noqa: E402

ROWS = json.loads((ROOT / "bench" / "data" / "edgetpu_published.json").read_text())
HOSTS = json.loads((ROOT / "bench" / "data" / "edgetpu_hosts.json").read_text())["hosts"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="print the HOSTS literal for edgetpu_latency.py")
    parser.parse_args()
    rows = {r["name"]: r for r in ROWS}
    fitted, all_loo = {}, []
    for host, info in HOSTS.items():
        constants = fit_host(ROWS, info["ms"], info["link"])
        fitted[host] = {k: round(v, 6) for k, v in constants.items()}
        loo = leave_one_out(ROWS, info["ms"], info["link"])
        all_loo += loo.values() if host != "desktop" else []
        print(f"\n{host} ({info['machine']}, {info['link']}): {info['description']}")
        print(f"  per invoke {constants['invoke_ms']:.3f} ms, data {constants['bytes_per_ms'] / 1e3:.1f} MB/s")
        print(f"  {'model':<24}{'pycoral':>9}{'fitted':>9}{'leave-one-out':>15}{'error':>8}")
        for name, ms in info["ms"].items():
            est = L.model_ms(rows[name], dict(L.USB3, **constants))
            loo_ms = ms * (1 + loo[name]) if est >= ms else ms * (1 - loo[name])
            print(f"  {name:<24}{ms:>9.2f}{est:>9.2f}{loo_ms:>15.2f}{100 * loo[name]:>7.1f}%")
        print(f"  leave-one-out median {100 * statistics.median(loo.values()):.1f}%, "
              f"max {100 * max(loo.values()):.1f}%")
    desktop = HOSTS["desktop"]["ms"]
    plain = {name: abs(L.model_ms(rows[name], L.USB3) - ms) / ms for name, ms in desktop.items()}
    print("\nthe desktop constants (fitted on Coral's table) on pycoral's desktop figures, not fitted on them: "
          + ", ".join(f"{name} {100 * e:.1f}%" for name, e in plain.items()))
    print(f"leave-one-out over the non-desktop hosts: median {100 * statistics.median(all_loo):.1f}%, "
          f"max {100 * max(all_loo):.1f}% ({len(all_loo)} figures)")
    if parser.parse_args().write:
        print("HOSTS = " + json.dumps(fitted))


if __name__ == "__main__":
    main()
