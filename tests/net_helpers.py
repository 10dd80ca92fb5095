"""Helpers for tests of the gRPC stage servers: certificates, in-process chains, process memory."""
import pathlib
import subprocess

from deploy.net.tls import TlsFiles


def make_ca(folder, name="test-ca"):
    """A self-signed CA: (cert path, key path) in ``folder``."""
    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cert, key = folder / f"{name}.pem", folder / f"{name}.key"
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", key, "-out", cert, "-days", "2", "-subj", f"/CN={name}")
    return cert, key


def make_cert(folder, ca, name, hosts=("localhost", "127.0.0.1")):
    """A certificate for ``name`` signed by ``ca`` (cert, key), valid for ``hosts`` as server and client."""
    folder = pathlib.Path(folder)
    cert, key, csr, ext = (folder / f"{name}.pem", folder / f"{name}.key", folder / f"{name}.csr",
                           folder / f"{name}.ext")
    sans = ",".join(f"IP:{h}" if h.replace(".", "").isdigit() else f"DNS:{h}" for h in hosts)
    ext.write_text(f"subjectAltName={sans}\nextendedKeyUsage=serverAuth,clientAuth\n")
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key,
             "-out", csr, "-subj", f"/CN={name}")
    _openssl("x509", "-req", "-in", csr, "-CA", ca[0], "-CAkey", ca[1], "-CAcreateserial", "-out", cert,
             "-days", "2", "-extfile", ext)
    return cert, key


def make_tls(folder, name="stage", ca_name="test-ca"):
    """TlsFiles (cert, key, CA) of a fresh CA and one certificate it signed."""
    ca = make_ca(folder, ca_name)
    cert, key = make_cert(folder, ca, name)
    return TlsFiles(str(cert), str(key), str(ca[0]))


def _openssl(*args):
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)


def serve_chain(run_dir, host="127.0.0.1", **options):
    """Every stage of ``run_dir`` served in this process on free ports, last first; returns [StageServer].

    ``options`` go to ``deploy.net.server.serve`` for every stage; ``per_stage={k: {...}}`` adds some
    for stage k only (e.g. a delay).
    """
    import runfolder
    from deploy.net import server
    per_stage = options.pop("per_stage", {})
    count = len(runfolder.load(run_dir)["stages"])
    servers, next_address = [], None
    for index in reversed(range(count)):
        started = server.serve(run_dir, index, f"{host}:0", next_address,
                               server.ServeOptions(**{**options, **per_stage.get(index, {})}))
        next_address = f"{host}:{started.port}"
        servers.insert(0, started)
    return servers


def addresses(servers, host="127.0.0.1"):
    return [f"{host}:{s.port}" for s in servers]


def stop_all(servers):
    for started in servers:
        started.stop(grace=0.5)


def rss_kib(pid):
    """Resident memory of a process in KiB (Linux /proc)."""
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


def random_feeds(chain, count, seed=0):
    """``count`` random uint8 feeds for a chain's (first) input, reproducible from ``seed``."""
    import numpy as np
    rng = np.random.default_rng(seed)
    spec = chain.inputs[0]
    return [{spec["name"]: rng.integers(0, 256, spec["shape"], dtype=np.uint8)} for _ in range(count)]
