"""python -m deploy k8s: print (or write) the Kubernetes objects that run a run's stages across nodes.

  python -m deploy k8s --run runs/demo --nodes pi1,pi2,pi3 --container-image registry.local/coral-stages:1 > chain.yaml
  kubectl create namespace coral
  kubectl -n coral create secret generic coral-api-token --from-literal=token=$(openssl rand -hex 32)
  kubectl apply -f chain.yaml

See docs/k3s.md for the whole walk-through on Raspberry Pis.
"""
import argparse
import os
import sys

from deploy.net import k8s
from runfolder import cli


def parser():
    p = cli.ArgumentParser(prog="python -m deploy k8s", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    d = k8s.Options()
    p.add_argument("--run", required=True, help="run folder (its manifest lists the stages)")
    p.add_argument("--nodes", default="", help="node names, one per stage (stage K on node K) or one for all; "
                                               "default: any node (TPU stages: any node with --tpu-label)")
    p.add_argument("--container-image", dest="image", default=d.image,
                   help="container image with this project and a tflite runtime")
    p.add_argument("--namespace", default=d.namespace, help="Kubernetes namespace of every object")
    p.add_argument("--name", default=None, help="prefix of the object names (default: the run folder's name)")
    p.add_argument("--host-run-dir", default=None,
                   help="where the run folder sits on every node (hostPath); default /mnt/data/coral/<run name>")
    p.add_argument("--tpu-label", default=d.tpu_label, help="node label KEY=VALUE that TPU stages require")
    p.add_argument("--accelerator", choices=k8s.ACCELERATORS, default=d.accelerator,
                   help="usb: Coral USB Accelerator (/dev/bus/usb); pci: M.2/PCIe module (/dev/apex_0)")
    p.add_argument("--device-resource", default=None,
                   help="a device plugin's resource name for the Edge TPU (then no privileged pod)")
    p.add_argument("--stage-port", type=int, default=d.stage_port, help="port each stage server listens on")
    p.add_argument("--api-port", type=int, default=d.api_port, help="port of the HTTP API")
    p.add_argument("--no-api", dest="api", action="store_false", help="stages only, no HTTP API")
    p.add_argument("--api-service-type", choices=k8s.SERVICE_TYPES, default=d.api_service_type,
                   help="how the API is reached from outside the cluster")
    p.add_argument("--token-secret", default=d.token_secret, help="Secret (key 'token') holding the API token")
    p.add_argument("--api-queue", default=None,
                   help="job queue of the API and its worker: redis://host:port/db (default: sqlite in the pod)")
    p.add_argument("--max-in-flight", type=int, default=None, help="passed to every serve-stage")
    p.add_argument("--cpu-limit", default=d.cpu_limit, help="CPU limit of each stage container")
    p.add_argument("--memory-limit", default=d.memory_limit, help="memory limit of each stage container")
    p.add_argument("--out", default=None, help="write the YAML here instead of printing it")
    return p


def options_from(args):
    run_name = os.path.basename(os.path.normpath(args.run))
    return k8s.Options(
        image=args.image, namespace=args.namespace, name=args.name or run_name,
        nodes=tuple(n.strip() for n in args.nodes.split(",") if n.strip()), tpu_label=args.tpu_label,
        accelerator=args.accelerator, device_resource=args.device_resource,
        host_run_dir=args.host_run_dir or f"/mnt/data/coral/{run_name}", stage_port=args.stage_port,
        api_port=args.api_port, api=args.api, api_service_type=args.api_service_type,
        token_secret=args.token_secret, api_queue=args.api_queue,
        max_in_flight=args.max_in_flight, cpu_limit=args.cpu_limit,
        memory_limit=args.memory_limit)


def run(args):
    import runfolder
    manifest = runfolder.load(args.run)
    text = k8s.to_yaml(k8s.build_objects(manifest, options_from(args)))
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
        print(f"wrote {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0
