"""Kubernetes objects for a run's stage chain: per stage a Deployment + ClusterIP Service, and the API's.

Plain functions over dicts (what ``kubectl apply`` reads), so tests can check them and the
command can print them as YAML. Stage K runs ``python -m deploy serve-stage --stage K`` and
forwards to stage K+1's Service by its cluster DNS name; the API reaches the chain through
the same names.

Where each stage runs:
  * ``nodes`` given: stage K is pinned to node K (``kubernetes.io/hostname``), or every stage
    to the one node given.
  * a stage with a compiled Edge TPU file also needs a node labelled ``tpu_label``
    (default ``coral.ai/edgetpu=true``); a CPU stage (no compiled file, or target ``cpu``)
    does not, so it may land on any Pi.

The run folder reaches the pods as a read-only hostPath (``host_run_dir``, the same path on
every node): stage files are megabytes while a ConfigMap holds at most 1 MiB, and a
ReadWriteMany volume needs NFS or Longhorn that a few Pis rarely run. The serve commands check
each file's sha256 against the manifest, so a stale copy on one node fails loudly.

Edge TPU access: a USB Accelerator re-enumerates (1a6e:089a -> 18d1:9302) when its firmware
loads, so its device node changes; the pod mounts all of ``/dev/bus/usb`` and runs privileged.
A PCIe/M.2 module is ``/dev/apex_0`` (also privileged, for the device cgroup). With a device
plugin (``device_resource``, e.g. ``squat.ai/coral`` from generic-device-plugin) the pod asks
for one of that resource instead and stays unprivileged.
"""
import dataclasses
import re
from runfolder.errors import UserError

STAGE_PORT = 50051
API_PORT = 8000
TPU_LABEL = "coral.ai/edgetpu=true"
RUN_MOUNT = "/run-folder"
TOKEN_MOUNT = "/var/run/coral-api"
STATE_MOUNT = "/var/lib/coral-api"
HOSTNAME_KEY = "kubernetes.io/hostname"
ACCELERATORS = ("usb", "pci")
SERVICE_TYPES = ("ClusterIP", "NodePort", "LoadBalancer")


class K8sError(UserError, ValueError):
    """The options do not describe a valid set of objects; the message says what to change."""


@dataclasses.dataclass
class Options:
    """Everything the objects depend on besides the manifest; defaults suit a k3s Pi cluster."""
    image: str = "ghcr.io/coral-stages/deploy:latest"
    namespace: str = "coral"
    name: str = "coral"                       # prefix of every object name
    nodes: tuple = ()                         # node names: one per stage, or one for all
    tpu_label: str = TPU_LABEL
    accelerator: str = "usb"                  # "usb" (/dev/bus/usb) or "pci" (/dev/apex_0)
    device_resource: str = None               # device-plugin resource name instead of privileged
    host_run_dir: str = "/mnt/data/coral/run"
    stage_port: int = STAGE_PORT
    api_port: int = API_PORT
    api: bool = True
    api_service_type: str = "ClusterIP"
    token_secret: str = "coral-api-token"     # Secret with key ``token``; made by kubectl, never here
    api_queue: str = None                     # default: sqlite in the pod's emptyDir, shared with its worker
    cpu_request: str = "250m"
    cpu_limit: str = "1"
    memory_request: str = "128Mi"
    memory_limit: str = "512Mi"
    max_in_flight: int = None
    python: str = "python"


def dns_label(text):
    """``text`` as a DNS-1123 label (lower case, digits, '-'; at most 63 characters)."""
    label = re.sub(r"[^a-z0-9-]+", "-", str(text).lower()).strip("-")[:63].strip("-")
    if not label:
        raise K8sError(f"'{text}' gives an empty Kubernetes name; use letters or digits")
    return label


def is_tpu_stage(entry):
    """True when the stage has a compiled Edge TPU file and is not marked for the CPU."""
    return bool(entry.get("compiled")) and entry.get("target") != "cpu"


def prefix(options):
    """The object-name prefix, short enough that '<prefix>-stage-NN' stays a valid Service name (<= 63)."""
    return dns_label(options.name)[:50].rstrip("-")


def stage_name(options, index):
    return f"{prefix(options)}-stage-{index}"


def stage_address(options, index):
    """The cluster DNS name and port of stage ``index``'s Service."""
    return f"{stage_name(options, index)}.{options.namespace}.svc.cluster.local:{options.stage_port}"


def _labels(options, component):
    return {"app.kubernetes.io/name": "coral-stages", "app.kubernetes.io/instance": prefix(options),
            "app.kubernetes.io/component": component}


def _parse_label(text):
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise K8sError(f"--tpu-label '{text}' is not KEY=VALUE; e.g. {TPU_LABEL}")
    return key, value


def check_options(options, stage_count):
    """Raises K8sError naming the option that cannot work."""
    if options.nodes and len(options.nodes) not in (1, stage_count):
        raise K8sError(f"--nodes names {len(options.nodes)} node(s) for {stage_count} stages; give one node per "
                       "stage (stage K runs on node K) or one node for all")
    if options.accelerator not in ACCELERATORS:
        raise K8sError(f"--accelerator '{options.accelerator}' is not one of {', '.join(ACCELERATORS)}")
    if options.api_service_type not in SERVICE_TYPES:
        raise K8sError(f"--api-service-type '{options.api_service_type}' is not one of {', '.join(SERVICE_TYPES)}")
    for what, port in (("--stage-port", options.stage_port), ("--api-port", options.api_port)):
        if not 1 <= port <= 65535:
            raise K8sError(f"{what} {port} is not a TCP port (1-65535)")
    if not options.host_run_dir.startswith("/"):
        raise K8sError(f"--host-run-dir '{options.host_run_dir}' must be an absolute path on the nodes")
    _parse_label(options.tpu_label)
    if dns_label(options.namespace) != options.namespace:
        raise K8sError(f"--namespace '{options.namespace}' is not a valid Kubernetes name; use lower-case letters, "
                       f"digits and '-', e.g. '{dns_label(options.namespace)}'")


def _node_placement(options, index, tpu):
    """nodeSelector for a stage: its node when given, and a TPU-labelled node when it is compiled."""
    selector = {}
    if options.nodes:
        selector[HOSTNAME_KEY] = options.nodes[index] if len(options.nodes) > 1 else options.nodes[0]
    if tpu:
        key, value = _parse_label(options.tpu_label)
        selector[key] = value
    return selector


def _device_parts(options):
    """(volumes, mounts, securityContext, extra limits) giving a container the Edge TPU."""
    if options.device_resource:
        return [], [], {"privileged": False}, {options.device_resource: "1"}
    path, kind = ("/dev/bus/usb", "Directory") if options.accelerator == "usb" else ("/dev/apex_0", "CharDevice")
    volume = {"name": "edgetpu", "hostPath": {"path": path, "type": kind}}
    return [volume], [{"name": "edgetpu", "mountPath": path}], {"privileged": True}, {}


def _run_volume(options):
    return ({"name": "run-folder", "hostPath": {"path": options.host_run_dir, "type": "Directory"}},
            {"name": "run-folder", "mountPath": RUN_MOUNT, "readOnly": True})


def _resources(options, extra_limits=None):
    limits = {"cpu": options.cpu_limit, "memory": options.memory_limit, **(extra_limits or {})}
    requests = {"cpu": options.cpu_request, "memory": options.memory_request, **(extra_limits or {})}
    return {"requests": requests, "limits": limits}


def _deployment(options, name, component, container, volumes, selector, strategy="Recreate"):
    labels = _labels(options, component)
    pod_spec = {"restartPolicy": "Always", "containers": [container], "volumes": volumes}
    if selector:
        pod_spec["nodeSelector"] = selector
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": options.namespace, "labels": labels},
            # Stages: Recreate, the old pod must let go of the Edge TPU before the new one opens it.
            "spec": {"replicas": 1, "strategy": {"type": strategy},
                     "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels}, "spec": pod_spec}}}


def _service(options, name, component, port, port_name, service_type="ClusterIP"):
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": options.namespace, "labels": _labels(options, component)},
            "spec": {"type": service_type, "selector": _labels(options, component),
                     "ports": [{"name": port_name, "port": port, "targetPort": port_name, "protocol": "TCP"}]}}


def stage_objects(options, entry, stage_count):
    """[Deployment, Service] for one stage (a manifest ``stages[]`` entry)."""
    index = entry["index"]
    name, component = stage_name(options, index), f"stage-{index}"
    tpu = is_tpu_stage(entry)
    run_volume, run_mount = _run_volume(options)
    volumes, mounts, security, extra = _device_parts(options) if tpu else ([], [], {}, {})
    command = [options.python, "-m", "deploy", "serve-stage", "--run", RUN_MOUNT, "--stage", str(index),
               "--listen", f"0.0.0.0:{options.stage_port}"]
    if index + 1 < stage_count:
        command += ["--next", stage_address(options, index + 1)]
    if options.max_in_flight:
        command += ["--max-in-flight", str(options.max_in_flight)]
    # Native gRPC probes (Kubernetes >= 1.27) ask the standard grpc.health.v1.Health service.
    grpc_probe = {"grpc": {"port": options.stage_port, "service": ""}}
    container = {"name": "stage", "image": options.image, "command": command,
                 "ports": [{"name": "grpc", "containerPort": options.stage_port, "protocol": "TCP"}],
                 "env": [{"name": "PYTHONUNBUFFERED", "value": "1"}],
                 "volumeMounts": [run_mount, *mounts],
                 "resources": _resources(options, extra),
                 "readinessProbe": {**grpc_probe, "periodSeconds": 5, "failureThreshold": 3},
                 "livenessProbe": {**grpc_probe, "initialDelaySeconds": 10, "periodSeconds": 10,
                                   "failureThreshold": 3},
                 "startupProbe": {**grpc_probe, "periodSeconds": 2, "failureThreshold": 60}}
    if security:
        container["securityContext"] = security
    deployment = _deployment(options, name, component, container, [run_volume, *volumes],
                             _node_placement(options, index, tpu))
    return [deployment, _service(options, name, component, options.stage_port, "grpc")]


def api_objects(options, stage_count):
    """[Deployment, Service] for the HTTP API in front of the chain, with a job worker beside it.

    The token comes from a Secret mounted as a file. Queued jobs (POST /v1/jobs) live in sqlite on an
    emptyDir the API and its worker share (lost when the pod goes; pass ``api_queue`` redis://... to keep
    them), never in the run folder, which is mounted read-only.
    """
    name, component = f"{prefix(options)}-api", "api"
    run_volume, run_mount = _run_volume(options)
    chain = ",".join(stage_address(options, k) for k in range(stage_count))
    queue = options.api_queue or f"sqlite:{STATE_MOUNT}/jobs.db"
    upstream = ["--run", RUN_MOUNT, "--chain", chain, "--queue", queue]
    serve = [options.python, "-m", "deploy", "serve-api", *upstream, "--listen", f"0.0.0.0:{options.api_port}",
             "--token-file", f"{TOKEN_MOUNT}/token"]
    token_volume = {"name": "api-token", "secret": {"secretName": options.token_secret,
                                                   "items": [{"key": "token", "path": "token"}]}}
    state_volume = {"name": "api-state", "emptyDir": {}}
    state_mount = {"name": "api-state", "mountPath": STATE_MOUNT}
    env = [{"name": "PYTHONUNBUFFERED", "value": "1"}]
    probe = {"port": "http"}
    api = {"name": "api", "image": options.image, "command": serve,
           "ports": [{"name": "http", "containerPort": options.api_port, "protocol": "TCP"}],
           "env": env,
           "volumeMounts": [run_mount, state_mount,
                            {"name": "api-token", "mountPath": TOKEN_MOUNT, "readOnly": True}],
           "resources": _resources(options),
           "readinessProbe": {"httpGet": {"path": "/readyz", **probe}, "periodSeconds": 5},
           "livenessProbe": {"httpGet": {"path": "/healthz", **probe}, "initialDelaySeconds": 10,
                             "periodSeconds": 10}}
    worker = {"name": "worker", "image": options.image,
              "command": [options.python, "-m", "deploy", "worker", *upstream],
              "env": env, "volumeMounts": [run_mount, state_mount], "resources": _resources(options)}
    deployment = _deployment(options, name, component, api, [run_volume, state_volume, token_volume], {},
                             strategy="RollingUpdate")
    deployment["spec"]["template"]["spec"]["containers"].append(worker)
    return [deployment, _service(options, name, component, options.api_port, "http", options.api_service_type)]


def namespace_object(options):
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": options.namespace}}


def build_objects(manifest, options):
    """Every object for the run, in apply order: Namespace, stages (Deployment, Service each), the API.

    Args:
      manifest: the run's manifest (needs ``stages``).
      options: an Options.
    Returns:
      A list of dicts, one Kubernetes object each.
    Raises:
      K8sError: an option that cannot work, or a manifest without stages.
    """
    stages = sorted(manifest.get("stages") or [], key=lambda e: e["index"])
    if not stages:
        raise K8sError(f"the manifest lists no stages; run `{runfolder.restage_command('DIR', manifest)}` first")
    if [e["index"] for e in stages] != list(range(len(stages))):
        raise K8sError(f"stage indexes {[e['index'] for e in stages]} are not 0..{len(stages) - 1}; "
                       f"re-run `{runfolder.restage_command('DIR', manifest)}`")
    check_options(options, len(stages))
    objects = [namespace_object(options)]
    for entry in stages:
        objects += stage_objects(options, entry, len(stages))
    if options.api:
        objects += api_objects(options, len(stages))
    return objects


def to_yaml(objects):
    """A multi-document YAML text; JSON documents (valid YAML) when PyYAML is not installed."""
    try:
        import yaml
    except ImportError:
        import json
        return "".join(f"---\n{json.dumps(o, indent=2)}\n" for o in objects)

    class _Plain(yaml.SafeDumper):
        def ignore_aliases(self, data):   # no &id001 anchors: each object reads on its own
            return True
    return yaml.dump_all(objects, Dumper=_Plain, sort_keys=False, explicit_start=True)
