"""python -m deploy k8s: objects valid against the newest Kubernetes schema kubernetes-validate ships,
and wired as the chain needs (ports, next hops, probes, Edge TPU devices only for compiled stages)."""
import copy
import json

import pytest

from tests.conftest import copy_run, run_cli

yaml = pytest.importorskip("yaml")
kubernetes_validate = pytest.importorskip("kubernetes_validate")


@pytest.fixture(scope="module")
def compiled_run(tiny_run, tmp_path_factory):
    """tiny_run compiled by the stand-in compiler: every stage has a compiled Edge TPU file."""
    import os
    import sys

    from tests.conftest import STANDINS
    run = copy_run(tiny_run, tmp_path_factory.mktemp("k8s"), name="tiny")
    env = {"PATH": os.pathsep.join([str(STANDINS), os.path.dirname(sys.executable), os.environ["PATH"]])}
    result = run_cli("compile", "--run", run, env=env)
    assert result.returncode == 0, result.stderr
    return run


def _generate(run, *args):
    result = run_cli("deploy", "k8s", "--run", run, *args)
    assert result.returncode == 0, result.stderr
    return list(yaml.safe_load_all(result.stdout))


def _by(objects, kind):
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def _container(deployment):
    return deployment["spec"]["template"]["spec"]["containers"][0]


def _flag(command, name):
    return command[command.index(name) + 1]


def test_objects_validate_against_newest_schema(compiled_run):
    from kubernetes_validate import utils
    version = utils.latest_version()
    objects = _generate(compiled_run, "--nodes", "pi1,pi2,pi3", "--container-image", "registry.local/coral:1")
    assert [o["kind"] for o in objects].count("Deployment") == 4     # 3 stages + the API
    for obj in objects:
        kubernetes_validate.validate(obj, version, strict=True)
    broken = copy.deepcopy(_by(objects, "Deployment")["tiny-stage-0"])
    _container(broken)["readinessProbe"]["grpc"]["prot"] = 50051       # the validator does catch typos
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, version, strict=True)


def test_chain_order_ports_probes_and_nodes(compiled_run):
    objects = _generate(compiled_run, "--nodes", "pi1,pi2,pi3", "--stage-port", "6001", "--namespace", "edge")
    deployments, services = _by(objects, "Deployment"), _by(objects, "Service")
    stages = [deployments[f"tiny-stage-{k}"] for k in range(3)]
    for k, deployment in enumerate(stages):
        container, pod = _container(deployment), deployment["spec"]["template"]["spec"]
        command = container["command"]
        assert command[:4] == ["python", "-m", "deploy", "serve-stage"]
        assert _flag(command, "--stage") == str(k) and _flag(command, "--listen") == "0.0.0.0:6001"
        if k < 2:
            assert _flag(command, "--next") == f"tiny-stage-{k + 1}.edge.svc.cluster.local:6001"
        else:
            assert "--next" not in command
        assert container["ports"][0]["containerPort"] == 6001
        for probe in ("readinessProbe", "livenessProbe"):
            assert container[probe]["grpc"]["port"] == 6001
        assert pod["restartPolicy"] == "Always"
        assert pod["nodeSelector"]["kubernetes.io/hostname"] == f"pi{k + 1}"
        assert container["resources"]["limits"]["cpu"] and container["resources"]["requests"]["memory"]
        service = services[f"tiny-stage-{k}"]
        assert service["spec"]["type"] == "ClusterIP"
        assert service["spec"]["selector"] == deployment["spec"]["template"]["metadata"]["labels"]
        assert service["spec"]["ports"][0]["port"] == 6001
        assert service["spec"]["ports"][0]["targetPort"] == container["ports"][0]["name"]
    api = _container(deployments["tiny-api"])
    assert _flag(api["command"], "--chain").split(",") == [
        f"tiny-stage-{k}.edge.svc.cluster.local:6001" for k in range(3)]
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert api["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert api["readinessProbe"]["httpGet"]["port"] == api["ports"][0]["name"]
    token_volume = next(v for v in deployments["tiny-api"]["spec"]["template"]["spec"]["volumes"] if "secret" in v)
    assert token_volume["secret"]["secretName"] == "coral-api-token"
    mount = next(m for m in api["volumeMounts"] if m["name"] == token_volume["name"])
    assert _flag(api["command"], "--token-file").startswith(mount["mountPath"] + "/")
    assert "Secret" not in [o["kind"] for o in objects]        # the token is never written into the YAML
    api_pod = deployments["tiny-api"]["spec"]["template"]["spec"]
    worker = next(c for c in api_pod["containers"] if c["name"] == "worker")
    assert worker["command"][:4] == ["python", "-m", "deploy", "worker"]
    assert _flag(worker["command"], "--chain") == _flag(api["command"], "--chain")
    queue = _flag(api["command"], "--queue")
    assert queue == _flag(worker["command"], "--queue") and queue.startswith("sqlite:")
    shared = next(v["name"] for v in api_pod["volumes"] if "emptyDir" in v)
    state_dir = next(m["mountPath"] for m in api["volumeMounts"] if m["name"] == shared)
    assert queue.removeprefix("sqlite:").startswith(state_dir + "/")   # writable, not in the read-only run folder
    assert shared in [m["name"] for m in worker["volumeMounts"]]
    for deployment in deployments.values():
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            run_mount = next(m for m in container["volumeMounts"] if m["name"] == "run-folder")
            assert run_mount["readOnly"] and _flag(container["command"], "--run") == run_mount["mountPath"]


def test_tpu_stages_get_the_device_and_cpu_stages_do_not(compiled_run, tmp_path):
    import runfolder
    from deploy.net import k8s
    manifest = runfolder.load(str(compiled_run))
    assert all(e["compiled"] for e in manifest["stages"])
    mixed = copy.deepcopy(manifest)
    mixed["stages"][1].update(compiled=None, target="cpu")     # as --isolate-unsupported leaves a CPU stage
    for accelerator, path in (("usb", "/dev/bus/usb"), ("pci", "/dev/apex_0")):
        objects = k8s.build_objects(mixed, k8s.Options(name="m", accelerator=accelerator))
        deployments = _by(objects, "Deployment")
        for k in (0, 2):
            pod = deployments[f"m-stage-{k}"]["spec"]["template"]["spec"]
            assert pod["nodeSelector"] == {"coral.ai/edgetpu": "true"}
            assert {"path": path, "type": "Directory" if accelerator == "usb" else "CharDevice"} in [
                v.get("hostPath") for v in pod["volumes"]]
            assert pod["containers"][0]["securityContext"]["privileged"] is True
        cpu_pod = deployments["m-stage-1"]["spec"]["template"]["spec"]
        assert "nodeSelector" not in cpu_pod
        assert all(not v.get("hostPath", {}).get("path", "").startswith("/dev") for v in cpu_pod["volumes"])
        assert "securityContext" not in cpu_pod["containers"][0]
    plugin = _by(k8s.build_objects(mixed, k8s.Options(name="m", device_resource="squat.ai/coral")), "Deployment")
    container = _container(plugin["m-stage-0"])
    assert container["resources"]["limits"]["squat.ai/coral"] == "1"
    assert container["securityContext"]["privileged"] is False
    assert "squat.ai/coral" not in _container(plugin["m-stage-1"])["resources"]["limits"]


def test_uncompiled_run_needs_no_tpu_node(tiny_run):
    objects = _generate(tiny_run, "--no-api")
    assert "tiny-api" not in _by(objects, "Deployment")
    for deployment in _by(objects, "Deployment").values():
        pod = deployment["spec"]["template"]["spec"]
        assert "nodeSelector" not in pod and "securityContext" not in pod["containers"][0]


def test_bad_options_say_what_to_fix(tiny_run, tmp_path):
    wrong = run_cli("deploy", "k8s", "--run", tiny_run, "--nodes", "pi1,pi2")
    assert wrong.returncode == 2 and "--nodes names 2 node(s) for 3 stages" in wrong.stderr
    label = run_cli("deploy", "k8s", "--run", tiny_run, "--tpu-label", "coral")
    assert label.returncode == 2 and "KEY=VALUE" in label.stderr
    namespace = run_cli("deploy", "k8s", "--run", tiny_run, "--namespace", "Edge_NS")
    assert namespace.returncode == 2 and "e.g. 'edge-ns'" in namespace.stderr
    missing = run_cli("deploy", "k8s", "--run", tmp_path / "nowhere")
    assert missing.returncode == 2 and "error:" in missing.stderr
    out = tmp_path / "chain.yaml"
    one_node = run_cli("deploy", "k8s", "--run", tiny_run, "--nodes", "pi1", "--out", out)
    assert one_node.returncode == 0
    selectors = {json.dumps(d["spec"]["template"]["spec"].get("nodeSelector"))
                 for d in yaml.safe_load_all(out.read_text()) if d["kind"] == "Deployment" and "stage" in
                 d["metadata"]["name"]}
    assert selectors == {json.dumps({"kubernetes.io/hostname": "pi1"})}


def test_every_container_command_parses_with_the_real_cli(compiled_run):
    """The flags written into the YAML are the ones serve-stage, serve-api and worker accept."""
    import importlib

    from deploy.__main__ import COMMANDS
    objects = _generate(compiled_run, "--nodes", "pi1,pi2,pi3", "--max-in-flight", "8",
                        "--api-queue", "redis://redis.coral.svc.cluster.local:6379/0")
    commands = [c["command"] for d in _by(objects, "Deployment").values()
                for c in d["spec"]["template"]["spec"]["containers"]]
    assert sorted(c[3] for c in commands) == ["serve-api", "serve-stage", "serve-stage", "serve-stage", "worker"]
    for command in commands:
        assert command[:3] == ["python", "-m", "deploy"]
        module = importlib.import_module(COMMANDS[command[3]])
        args = module.parser().parse_args(command[4:])
        assert args.run == "/run-folder"
        if command[3] == "serve-stage":
            assert args.max_in_flight == 8 and args.listen.endswith(":50051")
        else:
            assert args.queue == "redis://redis.coral.svc.cluster.local:6379/0"
