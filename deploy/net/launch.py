"""Start every stage server of a run folder on this machine, one process each, and stop them cleanly.

    with launch_local("runs/demo", base_port=50051) as chain:
        client = ChainClient(chain.addresses)

Each stage runs ``python -m deploy serve-stage`` in its own process (so a stage
can be killed and restarted alone: ``restart(k)``); its output goes to
``log_dir/stage_K.log``. ``launch_local`` returns once every stage's health
service says SERVING, or raises with the failing stage's log.
"""
import dataclasses
import os
import pathlib
import signal
import subprocess
import sys
import tempfile
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

import runfolder
from deploy.net import channels
from runfolder.errors import OptionError, UserError

REPO = pathlib.Path(__file__).resolve().parents[2]


class LaunchError(UserError, RuntimeError):
    """A stage server did not start; the message holds the end of its log."""


def wait_serving(address, tls=None, timeout_s=60.0, process=None):
    """Waits until ``address``'s health service says SERVING; False on timeout or when ``process`` exits."""
    channel = channels.open_channel(address, tls)
    stub = health_pb2_grpc.HealthStub(channel)
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            if process is not None and process.poll() is not None:
                return False
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return True
            except grpc.RpcError:
                pass
            time.sleep(0.05)
        return False
    finally:
        channel.close()


@dataclasses.dataclass(frozen=True)
class StageProcessOptions:
    """How each ``serve-stage`` process is started.

    tls: a ``tls.TlsFiles`` used by every stage (and to check their health).
    extra_args: more serve-stage options for every stage (e.g. ["--max-in-flight", "8"]).
    stage_args: {stage index: [options]} for single stages (e.g. {2: ["--add-latency-ms", "5"]}).
    log_dir: where stage_K.log files go (default: a new temporary folder).
    python: the interpreter that runs them (default: this one).
    """
    tls: object = None
    extra_args: tuple = ()
    stage_args: dict = None
    log_dir: str = None
    python: str = None


class LocalChain:
    """Stage server processes: ``addresses``, ``processes``, ``restart(k)``, ``stop()``."""

    def __init__(self, run_dir, addresses, options):
        self.run_dir, self.addresses, self.tls = str(run_dir), addresses, options.tls
        self.extra_args = [str(a) for a in options.extra_args]
        self.log_dir, self.python = log_folder(options.log_dir), options.python or sys.executable
        self.stage_args = {k: [str(a) for a in v] for k, v in (options.stage_args or {}).items()}
        self.processes = [None] * len(addresses)

    def command(self, index):
        args = [self.python, "-m", "deploy", "serve-stage", "--run", self.run_dir, "--stage", str(index),
                "--listen", self.addresses[index]]
        if index + 1 < len(self.addresses):
            args += ["--next", self.addresses[index + 1]]
        if self.tls is not None:
            args += ["--tls-cert", self.tls.cert, "--tls-key", self.tls.key, "--tls-ca", self.tls.ca]
            if self.tls.server_name:
                args += ["--tls-server-name", self.tls.server_name]
        if self.addresses[index].endswith(":0"):
            args += ["--port-file", str(self.port_file(index))]
        return args + self.extra_args + self.stage_args.get(index, [])

    def port_file(self, index):
        return self.log_dir / f"stage_{index}.port"

    def await_port(self, index, timeout_s=60.0):
        """Waits for stage ``index``, started on port 0, to write the port the OS gave it; keeps that
        address (a restart binds it again)."""
        path, process = self.port_file(index), self.processes[index]
        deadline = time.monotonic() + timeout_s
        while not path.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                self.await_serving(index, 0)   # raises LaunchError with the log's tail
            time.sleep(0.05)
        host = self.addresses[index].rpartition(":")[0]
        self.addresses[index] = f"{host}:{int(path.read_text())}"
        path.unlink()

    def start(self, index, timeout_s=60.0):
        """Starts stage ``index`` and waits until it is SERVING."""
        self.spawn(index)
        self.await_serving(index, timeout_s)

    def spawn(self, index):
        with open(self.log_dir / f"stage_{index}.log", "ab") as log:
            self.processes[index] = subprocess.Popen(self.command(index), cwd=REPO, stdout=log,
                                                     stderr=subprocess.STDOUT, env=dict(os.environ))

    def await_serving(self, index, timeout_s=60.0):
        log_path = self.log_dir / f"stage_{index}.log"
        if not wait_serving(self.addresses[index], self.tls, timeout_s, self.processes[index]):
            self.kill(index)
            tail = log_path.read_text(errors="replace")[-2000:]
            raise LaunchError(f"stage {index} did not start serving on {self.addresses[index]}; its log "
                              f"({log_path}) ends with:\n{tail}")

    def restart(self, index, timeout_s=60.0):
        self.kill(index)
        self.start(index, timeout_s)

    def kill(self, index, sig=signal.SIGKILL):
        process = self.processes[index]
        if process is not None and process.poll() is None:
            process.send_signal(sig)
            process.wait(timeout=10)

    def stop(self, timeout_s=10.0):
        """SIGTERM to every stage (each drains and exits), SIGKILL to any still running after ``timeout_s``."""
        running = [p for p in self.processes if p is not None and p.poll() is None]
        for process in running:
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for process in running:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        return [p.returncode for p in self.processes if p is not None]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def log_folder(path):
    """The folder for stage logs, made if missing (a new temporary folder for None)."""
    if path is None:
        return pathlib.Path(tempfile.mkdtemp(prefix="stages-"))
    folder = pathlib.Path(path)
    if folder.exists() and not folder.is_dir():
        raise OptionError(f"--log-dir {folder} is a file; give a folder for the stage logs")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OptionError(f"--log-dir {folder} cannot be made ({exc.strerror}); give a folder you can write") from exc
    return folder


def launch_local(run_dir, base_port=50051, host="127.0.0.1", options=StageProcessOptions(),
                 timeout_s=60.0):
    """Starts one ``serve-stage`` process per stage of ``run_dir`` on ``host``; returns a LocalChain.

    Args:
      base_port: stage K listens on base_port + K (0: each stage binds a port the OS gives it and reports
        it; they start last first, each told the next one's port; a restart binds the same port again).
      options: a StageProcessOptions (TLS, extra serve-stage options, log folder, interpreter).
    Raises:
      LaunchError: a stage did not become SERVING within ``timeout_s`` (the others are stopped).
    """
    manifest = runfolder.load(run_dir)
    count = len(runfolder.require(manifest, "stages", run_dir, "deploy launch"))
    addresses = [f"{host}:{base_port + k if base_port else 0}" for k in range(count)]
    chain = LocalChain(run_dir, addresses, options)
    try:
        if base_port == 0:
            for index in reversed(range(count)):
                chain.spawn(index)
                chain.await_port(index, timeout_s)
        else:
            for index in range(count):
                chain.spawn(index)
        for index in range(count):
            chain.await_serving(index, timeout_s)
    except BaseException:
        chain.stop()
        raise
    return chain
