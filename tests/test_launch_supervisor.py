"""`deploy launch` as a supervisor: a killed stage is restarted with a back-off while the others keep
running, up to a limit; --no-restart stops the chain at the first exit; a missing --log-dir is made."""
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time

import pytest

from deploy.core.open import open_chain
from deploy.net.client import ChainCallError, ChainClient
from tests.conftest import REPO
from tests.net_helpers import random_feeds


class Launch:
    """`python -m deploy launch` in its own process, its output read line by line."""

    def __init__(self, run, log_dir, *args):
        self.proc = subprocess.Popen([sys.executable, "-m", "deploy", "launch", "--run", str(run), "--base-port", "0",
                                      "--log-dir", str(log_dir), *map(str, args)], cwd=REPO, text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        self.lines, self.seen = queue.Queue(), []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def expect(self, pattern, timeout_s=60.0):
        """The first line (from now on) matching ``pattern``, as a match object."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                break
            self.seen.append(line)
            found = re.search(pattern, line)
            if found:
                return found
        raise AssertionError(f"no line matching {pattern!r} within {timeout_s} s; output so far:\n" +
                             "\n".join(self.seen))

    def started(self):
        """{stage: pid} and the stage addresses, from the start-up lines."""
        addresses = self.expect(r"stages serving: (\S+) ").group(1).split(",")
        pids = {}
        for _ in addresses:
            found = self.expect(r"stage (\d+): \S+, pid (\d+)")
            pids[int(found.group(1))] = int(found.group(2))
        return addresses, pids

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


def _alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


def _serves(addresses, feed, timeout_s=10.0):
    deadline = time.monotonic() + timeout_s
    with ChainClient(addresses) as client:
        while True:
            try:
                return client.run(feed, timeout_s=2)
            except ChainCallError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)


def test_a_killed_stage_is_restarted_and_the_chain_serves_again(tiny_run, tmp_path):
    local = open_chain(tiny_run, "cpu")[1]
    feed = random_feeds(local, 1)[0]
    launch = Launch(tiny_run, tmp_path / "new" / "logs")   # the folder does not exist yet
    try:
        addresses, pids = launch.started()
        before = _serves(addresses, feed)
        killed_at = time.monotonic()
        os.kill(pids[1], signal.SIGKILL)
        launch.expect(r"stage 1 exited \(code -9\); restarting it in 0.5 s \(restart 1 of at most 5")
        again = launch.expect(r"stage 1 serving again on \S+ \(pid (\d+), ([\d.]+) s to start\)")
        restart_s = time.monotonic() - killed_at
        after = _serves(addresses, feed)
        assert int(again.group(1)) != pids[1] and _alive(int(again.group(1)))
        assert _alive(pids[0]) and _alive(pids[2]), "the other stages were left running"
        os.kill(int(again.group(1)), signal.SIGKILL)   # crashing again: the back-off doubles
        launch.expect(r"stage 1 exited \(code -9\); restarting it in 1.0 s \(restart 2 of")
        launch.expect(r"stage 1 serving again")
        assert launch.proc.poll() is None
    finally:
        launch.stop()
    assert launch.proc.returncode == 0
    assert all(before[k].tobytes() == after[k].tobytes() for k in before)
    assert (tmp_path / "new" / "logs" / "stage_1.log").stat().st_size > 0
    print(f"stage 1 SIGKILLed -> serving again after {restart_s:.2f} s (process start {again.group(2)} s)")


@pytest.mark.parametrize("options, said", [
    (["--no-restart"], r"error: stage 1 exited \(code -9\); see \S+; restarts are off \(--no-restart\)"),
    (["--max-restarts", "1"], r"error: stage 1 exited \(code -9\) after 1 restarts within 300 s; giving up"),
])
def test_past_its_restart_limit_launch_stops_the_chain(tiny_run, tmp_path, options, said):
    launch = Launch(tiny_run, tmp_path, *options)
    try:
        _, pids = launch.started()
        os.kill(pids[1], signal.SIGKILL)
        if "--max-restarts" in options:
            new_pid = int(launch.expect(r"stage 1 serving again on \S+ \(pid (\d+)").group(1))
            os.kill(new_pid, signal.SIGKILL)
        launch.expect(said)
        assert launch.proc.wait(30) == 2
    finally:
        launch.stop()
    assert not _alive(pids[0]) and not _alive(pids[2]), "the other stages are stopped"


def test_a_log_dir_that_is_a_file_is_a_one_line_error(tiny_run, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = subprocess.run([sys.executable, "-m", "deploy", "launch", "--run", str(tiny_run), "--log-dir",
                             str(blocker)], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"--log-dir {blocker} is a file" in result.stderr
