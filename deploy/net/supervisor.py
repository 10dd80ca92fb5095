"""Keep the stage processes of ``deploy launch`` running: restart one that exits, with a back-off and a limit.

The same contract as Kubernetes' ``restartPolicy: Always`` for the manifests ``deploy k8s`` writes:
a crashed stage is started again after 0.5 s, then 1, 2, 4 ... up to 30 s while it keeps
crashing; a stage that crashes more than ``max_restarts`` times within ``window_s`` is
given up on (the chain is then stopped, exit 2), because restarting it will not help.
The other stages keep running meanwhile; their clients reconnect by themselves.

    supervisor = Supervisor(chain, RestartPolicy(), say=print)
    while not stopping.wait(0.2):
        problem = supervisor.poll()       # None while all is well
"""
import collections
import dataclasses
import time

from deploy.net.launch import LaunchError


@dataclasses.dataclass(frozen=True)
class RestartPolicy:
    max_restarts: int = 5          # restarts of one stage within window_s; 0: never restart
    window_s: float = 300.0
    first_delay_s: float = 0.5
    max_delay_s: float = 30.0
    start_timeout_s: float = 60.0


class Supervisor:
    """Checks each stage of a ``LocalChain`` on ``poll()`` and restarts the ones that exited."""

    def __init__(self, chain, policy=RestartPolicy(), say=print, clock=time.monotonic):
        self.chain, self.policy, self.say, self.clock = chain, policy, say, clock
        count = len(chain.addresses)
        self.restarts = [collections.deque() for _ in range(count)]   # times of recent restarts
        self.delay = [policy.first_delay_s] * count
        self.due = [None] * count                                       # when a dead stage is started again
        self.started = [clock()] * count

    def poll(self):
        """Restarts what is due; returns None, or why the chain must stop (a stage over its limit)."""
        now = self.clock()
        for index, process in enumerate(self.chain.processes):
            if self.due[index] is None and process is not None and process.poll() is None:
                if now - self.started[index] > self.policy.window_s:
                    self.delay[index] = self.policy.first_delay_s   # stable again: back-off starts over
                continue
            if self.due[index] is None:
                problem = self._schedule(index, process.returncode, now)
                if problem:
                    return problem
            if now >= self.due[index]:
                problem = self._restart(index)
                if problem:
                    return problem
        return None

    def _schedule(self, index, code, now):
        recent = self.restarts[index]
        while recent and now - recent[0] > self.policy.window_s:
            recent.popleft()
        log = self.chain.log_dir / f"stage_{index}.log"
        if len(recent) >= self.policy.max_restarts:
            if self.policy.max_restarts == 0:
                return f"stage {index} exited (code {code}); see {log}; restarts are off (--no-restart)"
            return (f"stage {index} exited (code {code}) after {len(recent)} restarts within "
                    f"{self.policy.window_s:.0f} s; giving up: see {log}")
        delay = self.delay[index]
        self.delay[index] = min(self.policy.max_delay_s, delay * 2)
        self.due[index] = now + delay
        self.say(f"stage {index} exited (code {code}); restarting it in {delay:.1f} s "
                 f"(restart {len(recent) + 1} of at most {self.policy.max_restarts} within "
                 f"{self.policy.window_s:.0f} s; log {log})")
        return None

    def _restart(self, index):
        self.restarts[index].append(self.clock())
        self.due[index] = None
        began = self.clock()
        try:
            self.chain.start(index, self.policy.start_timeout_s)
        except LaunchError as exc:
            self.say(f"stage {index} did not come back: {str(exc).splitlines()[0]}")
            self.started[index] = self.clock()
            return   # its process has exited: the next poll schedules it again (or gives up)
        self.started[index] = self.clock()
        self.say(f"stage {index} serving again on {self.chain.addresses[index]} "
                 f"(pid {self.chain.processes[index].pid}, {self.clock() - began:.1f} s to start)")
        return
