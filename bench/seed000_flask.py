"""One stage server of seed 000's chain: Flask, JSON lists, requests.post to the next device, answers back.

    .venv/bin/python bench/seed000_flask.py keras --run runs/demo --part 0 --port 6000 \
        --next http://127.0.0.1:7000/Layer2
    .venv/bin/python bench/seed000_flask.py int8 --run runs/demo --part 2 --port 6102

``keras``: the seed as written. Part 0 takes the image as an uploaded ``.npy`` file, runs
``model.predict`` on its float Keras sub-model (the run's ``model.keras`` cut at the run's
``training.boundaries``, as the seed cut its model at the block ends), posts
``{"predictions": result.tolist()}`` to the next part and returns what comes back; the
last part returns ``np.argmax`` of its prediction. ``int8``: the same transport (Flask dev
server, ``requests.post``, JSON lists, answers relayed back) around our int8 stage ``--part``
(the run's stage file on the CPU interpreter), so the transport's cost can be told apart
from Keras's. Used by bench/network_chain.py, which starts three of these per chain.
"""
import argparse
import io
import os
import sys
import threading

import numpy as np
import requests
from flask import Flask, jsonify, request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def keras_part(run, part):
    """The seed's sub-model number ``part`` (0-based) of the run's Keras model."""
    import runfolder
    from training.keras_setup import keras
    manifest = runfolder.load(run)
    model = keras.models.load_model(runfolder.verify_file(run, manifest["training"]["keras_model"], "model"))
    ends = [model.input] + [model.get_layer(n).output for n in manifest["training"]["boundaries"]] + [model.output]
    if not 0 <= part < len(ends) - 1:
        sys.exit(f"--part {part}: the run's Keras model has {len(ends) - 1} parts (0..{len(ends) - 2})")
    return keras.Model(ends[part], ends[part + 1])


def int8_part(run, part):
    """A function {name: nested list} -> {name: nested list} running our int8 stage ``part`` on the CPU and
    returning what the next stage needs (``deploy.net.plan``: the same tensors the gRPC chain sends on)."""
    import runfolder
    from deploy.core.chain import run_interpreter
    from deploy.net.plan import stage_plan
    from deploy.core.stages import load_stages
    from deploy.core.tensors import numpy_dtype
    manifest = runfolder.load(run)
    stage = load_stages(run, manifest, devices="cpu", tpus=[])[part]
    plan = stage_plan(manifest, part)
    hands_on = [t["name"] for t in (plan.returns if plan.is_last else plan.sends)]
    lock = threading.Lock()      # Flask serves requests on threads; an interpreter is not thread-safe

    def predict(tensors):
        values = {t["name"]: np.asarray(tensors[t["name"]], dtype=numpy_dtype(t["dtype"])).reshape(t["shape"])
                  for t in plan.receives}
        with lock:
            values.update(run_interpreter(stage.interpreter, values))
        return {name: values[name].tolist() for name in hands_on}
    return predict


def count_bytes(app):
    """Adds ``GET /bytes``: the mean body bytes of the requests this server received (for the bench's
    bytes-per-hop figure; not part of the seed)."""
    seen = {"bytes": 0, "requests": 0}

    @app.before_request
    def record():
        if request.method == "POST":
            seen["bytes"] += len(request.get_data(cache=True))
            seen["requests"] += 1

    @app.route("/bytes")
    def report():
        return jsonify({"received": seen["bytes"] / max(1, seen["requests"]), "requests": seen["requests"]})
    return app


def seed_app(model, part, is_last, next_url):
    """Seed 000's Flask app for one device, as its three listings have it."""
    app = count_bytes(Flask(__name__))

    def forward(result):
        response = requests.post(next_url, json={"predictions": result})
        response.raise_for_status()
        return response.json()["predictions"]

    @app.route(f"/Layer{part + 1}", methods=["POST"])
    def predict():
        if part == 0:
            if "file" not in request.files:
                return jsonify({"error": "No file part"}), 400
            array = np.load(io.BytesIO(request.files["file"].read()))
            data = array.reshape((1, *model.input_shape[1:]))
        else:
            payload = request.get_json()
            if "predictions" not in payload:
                return jsonify({"error": "No predictions data"}), 400
            data = np.array(payload["predictions"])
        predictions = model.predict(data, verbose=0)
        if is_last:
            result = np.argmax(predictions).tolist()
            print(result)
            return jsonify({"predictions": result})
        try:
            answer = forward(predictions.tolist())
        except requests.exceptions.RequestException as exc:
            return jsonify({"error": f"Failed to send data to {next_url}: {exc}"}), 500
        print(answer)
        return jsonify({"predictions": answer})
    return app


def int8_app(predict, part, is_last, next_url):
    """The same transport around one of our int8 stages: JSON lists in, JSON lists on, answers relayed back."""
    app = count_bytes(Flask(__name__))

    @app.route(f"/Layer{part + 1}", methods=["POST"])
    def layer():
        payload = request.get_json()
        if "predictions" not in payload:
            return jsonify({"error": "No predictions data"}), 400
        result = predict(payload["predictions"])
        if is_last:
            return jsonify({"predictions": result})
        response = requests.post(next_url, json={"predictions": result})
        response.raise_for_status()
        return jsonify({"predictions": response.json()["predictions"]})
    return app


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=("keras", "int8"))
    parser.add_argument("--run", required=True)
    parser.add_argument("--part", type=int, required=True, help="0-based part (stage) number")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--next", default=None, help="URL of the next part; none for the last part")
    args = parser.parse_args(argv)
    if args.kind == "keras":
        app = seed_app(keras_part(args.run, args.part), args.part, args.next is None, args.next)
    else:
        app = int8_app(int8_part(args.run, args.part), args.part, args.next is None, args.next)
    import logging
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    print(f"ready on {args.host}:{args.port}", flush=True)
    app.run(host=args.host, port=args.port, threaded=True)


if __name__ == "__main__":
    main()
