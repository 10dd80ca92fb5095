"""How often `compile check` puts an op where the real compiler put it, per public compiled pair.

    .venv/bin/python bench/preflight_agreement.py [--checkout DIR]

Reads tests/data/edgetpu_pairs (models without their weights, and what each compiled twin shows) and
prints, per pair, the ops placed as the real compiler placed them, the ops it left on the CPU and the
ops predicted there. ``--checkout`` runs the check of another checkout of this project (e.g. a git
worktree of an older commit) on the same pairs: the before-and-after of a change to the rules.
"""
import argparse
import gzip
import json
import pathlib
import sys

PAIRS = pathlib.Path(__file__).resolve().parents[1] / "tests" / "data" / "edgetpu_pairs"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkout", default=str(PAIRS.parents[2]), help="the project checkout whose check runs")
    args = parser.parse_args()
    sys.path.insert(0, args.checkout)
    from compile.preflight import check_model
    total = agreeing = 0
    print(f"{'pair':<58} {'agree':>9}  {'real cpu':>8}  {'predicted cpu':>13}")
    for record in json.loads((PAIRS / "pairs.json").read_text()):
        model = gzip.decompress((PAIRS / "models" / f"{record['name']}.tflite.gz").read_bytes())
        report = check_model(model)
        real_cpu = set(record["cpu_ops"])
        ok = sum((op["placement"] == "cpu") == (op["index"] in real_cpu) for op in report["ops"])
        predicted = sum(op["placement"] == "cpu" for op in report["ops"])
        total, agreeing = total + len(record["types"]), agreeing + ok
        print(f"{record['name']:<58} {ok:>4}/{len(record['types']):<4}  {len(real_cpu):>8}  {predicted:>13}"
              + ("  (refused)" if report["refused"] else ""))
    print(f"all {len(json.loads((PAIRS / 'pairs.json').read_text()))} pairs: {agreeing} of {total} ops "
          f"({100 * agreeing / total:.1f}%) placed as the real compiler placed them")


if __name__ == "__main__":
    main()
