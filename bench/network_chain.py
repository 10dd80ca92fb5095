"""Seed 000's Flask + JSON chain against our gRPC int8 chain on loopback: same run, same inputs, same run of
this script. Three chains of three servers each (one process per stage), and the in-process chain:

  1. seed 000 as written: Keras sub-models, ``model.predict``, Flask, JSON float lists, ``requests.post``
     to the next device, answers relayed back (bench/seed000_flask.py keras), one request at a time;
  2. our int8 stages behind the same transport (Flask + requests + JSON lists), one at a time and with
     ``--workers`` concurrent callers: the transport's share, without Keras;
  3. our gRPC chain (``deploy.net.launch.launch_local``, ``ChainClient``): unary calls one at a time, one
     request at a time over an open stream, and streamed with the client's default window.

    .venv/bin/python bench/network_chain.py --run runs/demo --samples 300 --seed-samples 60

Figures: throughput (samples / wall time), p50/p95 latency, bytes per hop (request bodies: the
seed's multipart ``.npy`` upload then JSON, JSON for (2), the serialized StageRequest for (3);
and the reply to the client), the added latency per network hop ((chain p50 - in-process p50) /
hops; a hop is one link crossed there and back: client->stage 0->stage 1->stage 2), beside a bare
Python gRPC echo's round trip on loopback (this machine's floor for one hop). Targets: gRPC streamed
>= 100x the seed's throughput; >= 5x the int8 Flask+JSON chain's (both pipelined: streamed vs
concurrent callers); <= 0.5 ms added per hop (p50, one request at a time over a stream). Prints a
table, then one JSON line (medians; ratios included).
"""
import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from flask_chain import (
    BodyCounter,
    concurrent_throughput,
    flask_chain,
    json_client,
    received_bytes,
    seed_client,
)

import runfolder
from deploy.core.classify import image_feed
from deploy.core.open import open_chain
from deploy.core.runtime import load_runtime

TARGETS = {"throughput_vs_seed": 100.0, "throughput_vs_http_json": 5.0, "added_ms_per_hop_p50": 0.5}


def timed(function, inputs, warmup):
    """Per-call seconds over ``inputs`` after ``warmup`` untimed calls; the outputs; the wall seconds."""
    for x in inputs[:warmup]:
        function(x)
    seconds, outputs = [], []
    wall = time.perf_counter()
    for x in inputs:
        start = time.perf_counter()
        outputs.append(function(x))
        seconds.append(time.perf_counter() - start)
    return seconds, outputs, time.perf_counter() - wall


def figures(seconds, wall):
    return {"samples": len(seconds), "p50_ms": float(np.percentile(seconds, 50) * 1e3),
            "p95_ms": float(np.percentile(seconds, 95) * 1e3), "throughput_per_s": len(seconds) / wall}


def grpc_hop_bytes(manifest, local_values):
    """Serialized StageRequest bytes each stage receives, and the last stage's StageReply bytes."""
    from deploy.net import codec, stage_pb2
    from deploy.net.plan import chain_plans
    plans = chain_plans(manifest)
    sent = [stage_pb2.StageRequest(request_id=1, tensors=codec.encode(local_values, [t["name"] for t in p.receives]))
            .ByteSize() for p in plans]
    reply = stage_pb2.StageReply(request_id=1, exit_stage=-1,
                                 tensors=codec.encode(local_values, [t["name"] for t in plans[-1].returns]))
    return sent, reply.ByteSize()


def all_values(chain, feed):
    """Every tensor of one in-process run: the inputs and each stage's outputs, by name."""
    from deploy.core.chain import run_interpreter
    values = dict(feed)
    for stage in chain.stages:
        values.update(run_interpreter(stage.interpreter, values))
    return values


ECHO_SERVER = """
import concurrent.futures, sys, grpc
handler = grpc.method_handlers_generic_handler("Echo", {"Echo": grpc.unary_unary_rpc_method_handler(lambda r, c: r)})
server = grpc.server(concurrent.futures.ThreadPoolExecutor(4))
server.add_generic_rpc_handlers((handler,))
print(server.add_insecure_port("127.0.0.1:0"), flush=True)
server.start()
server.wait_for_termination()
"""


def bare_grpc_round_trip(payload_bytes, samples, warmup):
    """p50/p95 of a bare Python gRPC unary echo on loopback (another process, no work): this machine's floor
    for one hop there and back."""
    import grpc
    server = subprocess.Popen([sys.executable, "-c", ECHO_SERVER], stdout=subprocess.PIPE, text=True)
    try:
        port = int(server.stdout.readline())
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            echo = channel.unary_unary("/Echo/Echo")
            message = b"x" * payload_bytes
            seconds, _, wall = timed(lambda m: echo(m, timeout=10), [message] * samples, warmup)
    finally:
        server.terminate()
        server.wait(timeout=10)
    return {**figures(seconds, wall), "payload_bytes": payload_bytes}


def grpc_chain(run, feeds, warmup):
    """Our gRPC chain launched locally (one process per stage): unary calls one at a time; one request at a
    time over an open stream (window 1); streamed with the default window. Figures and the unary outputs."""
    from deploy.net.client import ChainClient
    from deploy.net.launch import launch_local
    handle = launch_local(run, base_port=0, host="127.0.0.1")
    try:
        with ChainClient(handle.addresses, timeout_s=60) as client:
            unary_s, outputs, unary_wall = timed(client.run, feeds, warmup)
            list(client.stream(iter(feeds[:warmup])))
            start = time.perf_counter()
            streamed = list(client.stream(iter(feeds)))
            stream_wall = time.perf_counter() - start
        with ChainClient(handle.addresses, timeout_s=60, window=1) as client:
            list(client.stream(iter(feeds[:warmup])))
            marks = [time.perf_counter()]
            one_by_one = []
            for result in client.stream(iter(feeds)):
                marks.append(time.perf_counter())
                one_by_one.append(result)
    finally:
        handle.stop()
    for name, got in (("streamed", streamed), ("window-1", one_by_one)):
        if len(got) != len(feeds):
            raise RuntimeError(f"the {name} gRPC chain returned {len(got)} results for {len(feeds)} inputs")
    return {"unary": figures(unary_s, unary_wall),
            "stream_window_1": figures(np.diff(marks), marks[-1] - marks[0]),
            "streamed": {"samples": len(feeds), "throughput_per_s": len(feeds) / stream_wall}}, \
        {"unary": outputs, "streamed": streamed, "stream_window_1": one_by_one}


def run_bench(run, samples, seed_samples, warmup, workers):
    """Every chain on the same inputs; returns (hops, results by chain, byte-identical flags, seed agreement)."""
    manifest, chain = open_chain(run, "cpu", tpus=[])
    with np.load(runfolder.verify_file(run, manifest["dataset"]["test_set"], "test set")) as data:
        images = data["images"]
    images = [images[i % len(images)] for i in range(samples + warmup)]
    floats = [im.astype(np.float32) / 255.0 for im in images]      # the seed's preprocessing
    feeds = [image_feed(chain, im) for im in images]
    hops = len(chain.stages)
    results = {}

    local_s, local_out, local_wall = timed(chain.run, feeds[warmup:], warmup)
    results["in_process"] = figures(local_s, local_wall)
    sent, reply = grpc_hop_bytes(manifest, all_values(chain, feeds[warmup]))
    results["bare_grpc_echo"] = bare_grpc_round_trip(max(sent), samples, warmup)

    seed_count = min(seed_samples, samples)
    seed_bodies = BodyCounter()
    with flask_chain("keras", run, len(manifest["training"]["boundaries"]) + 1) as urls:
        seed_s, seed_out, seed_wall = timed(seed_client(urls[0], seed_bodies), floats[warmup:warmup + seed_count],
                                            min(warmup, 3))
        seed_hops = received_bytes(urls[1:])
    results["seed_flask_keras"] = {**figures(seed_s, seed_wall), **seed_bodies.per_hop(seed_hops)}

    json_bodies = BodyCounter()
    with flask_chain("int8", run, hops) as urls:
        call = json_client(urls[0], chain, json_bodies)
        json_s, json_out, json_wall = timed(call, feeds[warmup:], warmup)
        json_hops = received_bytes(urls[1:])
        json_concurrent, json_concurrent_out = concurrent_throughput(call, feeds[warmup:], workers)
    results["int8_http_json"] = {**figures(json_s, json_wall), **json_bodies.per_hop(json_hops)}
    results["int8_http_json_concurrent"] = json_concurrent

    grpc_figures, grpc_out = grpc_chain(run, feeds[warmup:], warmup)
    results["grpc_int8"] = {**grpc_figures["unary"], "bytes_per_hop": sent, "reply_bytes": reply}
    results["grpc_int8_stream_window_1"] = grpc_figures["stream_window_1"]
    results["grpc_int8_streamed"] = grpc_figures["streamed"]

    exact = {"int8_http_json": _all_same(json_out, local_out),
             "int8_http_json_concurrent": _all_same(json_concurrent_out, local_out),
             **{f"grpc_{mode}": _all_same(out, local_out) for mode, out in grpc_out.items()}}
    want = [next(iter(o.values())) for o in local_out]
    agreement = float(np.mean([int(s) == int(np.argmax(w)) for s, w in zip(seed_out, want[:seed_count])]))
    return hops, results, exact, agreement


def _all_same(outputs, wanted):
    return len(outputs) == len(wanted) and all(_same(a, b) for a, b in zip(outputs, wanted))


def _same(got, want):
    return set(got) == set(want) and all(got[n].dtype == want[n].dtype and got[n].tobytes() == want[n].tobytes()
                                         for n in want)


def summarise(hops, r):
    """Ratios, added latency per hop, and which targets are met."""
    seed, http, http_many = r["seed_flask_keras"], r["int8_http_json"], r["int8_http_json_concurrent"]
    unary, window_1, streamed, local = (r["grpc_int8"], r["grpc_int8_stream_window_1"], r["grpc_int8_streamed"],
                                        r["in_process"])
    ratios = {
        "throughput_vs_seed_streamed": streamed["throughput_per_s"] / seed["throughput_per_s"],
        "throughput_vs_seed_one_at_a_time": window_1["throughput_per_s"] / seed["throughput_per_s"],
        "throughput_vs_seed_unary": unary["throughput_per_s"] / seed["throughput_per_s"],
        "latency_p50_seed_over_grpc_window_1": seed["p50_ms"] / window_1["p50_ms"],
        "throughput_vs_http_json_pipelined": streamed["throughput_per_s"] / http_many["throughput_per_s"],
        "throughput_vs_http_json_one_at_a_time": window_1["throughput_per_s"] / http["throughput_per_s"],
        "throughput_vs_http_json_unary": unary["throughput_per_s"] / http["throughput_per_s"],
        "latency_p50_http_json_over_grpc_window_1": http["p50_ms"] / window_1["p50_ms"],
    }
    added = {"grpc_stream_ms_per_hop_p50": (window_1["p50_ms"] - local["p50_ms"]) / hops,
             "grpc_unary_ms_per_hop_p50": (unary["p50_ms"] - local["p50_ms"]) / hops,
             "http_json_ms_per_hop_p50": (http["p50_ms"] - local["p50_ms"]) / hops,
             "bare_grpc_echo_round_trip_ms_p50": r["bare_grpc_echo"]["p50_ms"]}
    added["grpc_stream_hop_over_bare_echo"] = added["grpc_stream_ms_per_hop_p50"] / added[
        "bare_grpc_echo_round_trip_ms_p50"]
    met = {"throughput_vs_seed": ratios["throughput_vs_seed_streamed"] >= TARGETS["throughput_vs_seed"],
           "throughput_vs_http_json": ratios["throughput_vs_http_json_pipelined"] >= TARGETS[
               "throughput_vs_http_json"],
           "added_ms_per_hop_p50": added["grpc_stream_ms_per_hop_p50"] <= TARGETS["added_ms_per_hop_p50"]}
    return ratios, added, met


def print_table(runtime, hops, r, ratios, added, met, exact, agreement):
    print(f"{runtime.name} {runtime.version}, {os.cpu_count()} cores, {hops} stages on loopback, one process each")
    print(f"{'chain':<44}{'n':>6}{'p50 ms':>10}{'p95 ms':>10}{'per s':>10}  bytes per hop (reply)")
    rows = [("seed 000: Flask+JSON, Keras predict", "seed_flask_keras"),
            ("int8 stages, Flask+JSON, one at a time", "int8_http_json"),
            ("int8 stages, Flask+JSON, concurrent", "int8_http_json_concurrent"),
            ("int8 stages, gRPC unary calls", "grpc_int8"),
            ("int8 stages, gRPC stream, 1 in flight", "grpc_int8_stream_window_1"),
            ("int8 stages, gRPC stream, default window", "grpc_int8_streamed"),
            ("int8 stages, in process", "in_process"),
            ("bare gRPC echo, 1 hop (this machine's floor)", "bare_grpc_echo")]
    for label, key in rows:
        row = r[key]
        hop_text = (f"  {'/'.join(str(b) for b in row['bytes_per_hop'])} ({row['reply_bytes']})"
                    if "bytes_per_hop" in row else "")
        label = f"{label} x{row['workers']}" if "workers" in row else label
        print(f"{label:<44}{row['samples']:>6}{_num(row.get('p50_ms')):>10}{_num(row.get('p95_ms')):>10}"
              f"{row['throughput_per_s']:>10.1f}{hop_text}")
    verdict = {True: "met", False: "NOT met"}
    print(f"gRPC streamed vs seed 000: {ratios['throughput_vs_seed_streamed']:.0f}x throughput (target >= 100x: "
          f"{verdict[met['throughput_vs_seed']]}); one at a time {ratios['throughput_vs_seed_one_at_a_time']:.0f}x, "
          f"p50 latency {ratios['latency_p50_seed_over_grpc_window_1']:.0f}x lower")
    print(f"gRPC vs the same int8 stages over Flask+JSON: pipelined {ratios['throughput_vs_http_json_pipelined']:.1f}x "
          f"(target >= 5x: {verdict[met['throughput_vs_http_json']]}), one at a time "
          f"{ratios['throughput_vs_http_json_one_at_a_time']:.1f}x (stream) / "
          f"{ratios['throughput_vs_http_json_unary']:.1f}x (unary)")
    print(f"added latency per hop, p50 vs in process: gRPC stream {added['grpc_stream_ms_per_hop_p50']:.3f} ms "
          f"(target <= 0.5: {verdict[met['added_ms_per_hop_p50']]}), gRPC unary "
          f"{added['grpc_unary_ms_per_hop_p50']:.3f} ms, Flask+JSON {added['http_json_ms_per_hop_p50']:.3f} ms; "
          f"bare gRPC echo {added['bare_grpc_echo_round_trip_ms_p50']:.3f} ms (a stream hop costs "
          f"{added['grpc_stream_hop_over_bare_echo']:.2f}x that)")
    print("outputs byte-identical to the in-process chain: "
          + ", ".join(f"{k} {v}" for k, v in exact.items()) + f"; seed (float) top-1 = int8 top-1 on {agreement:.3f}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default=os.path.join(REPO, "runs", "demo"))
    parser.add_argument("--samples", type=int, default=300, help="samples for the int8 chains")
    parser.add_argument("--seed-samples", type=int, default=60, help="samples for the seed chain (slow)")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--workers", type=int, default=8, help="concurrent callers of the Flask+JSON int8 chain")
    args = parser.parse_args(argv)
    if args.samples < 2 or args.seed_samples < 1:
        parser.error("--samples must be >= 2 and --seed-samples >= 1")
    runtime = load_runtime()
    hops, r, exact, agreement = run_bench(args.run, args.samples, args.seed_samples, args.warmup, args.workers)
    ratios, added, met = summarise(hops, r)
    print_table(runtime, hops, r, ratios, added, met, exact, agreement)
    print(json.dumps({"bench": "network_chain", "runtime": f"{runtime.name} {runtime.version}",
                      "cpu_count": os.cpu_count(), "stages": hops, "hops": hops, **r, "ratios": ratios,
                      "added_latency": added, "targets": TARGETS, "targets_met": met, "byte_identical": exact,
                      "seed_top1_agreement": agreement}))


def _num(value):
    return f"{value:.3f}" if value is not None else "-"


if __name__ == "__main__":
    main()
