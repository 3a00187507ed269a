"""The scripted fake `Runner` and fake clock that `Job`'s unit tests run against (tests/test_job.py,
tests/test_job_spot.py): no process, no sleep.

The fake clock moves on only when the job waits on an empty event queue, and then only to the next
scripted moment (or by the wait's timeout): a test reads like a timeline, and each rule is checked at the
fake second it must happen. What a role does is a script: `FakeRole` methods schedule its events.
"""
import heapq
import io
import itertools
import queue
import signal

from mxlaunch.infra.transport.hosts import Host
from mxlaunch.launcher.jobs.job import Clock, Job, JobSettings
from mxlaunch.launcher.jobs.output import RoleOutputSink
from mxlaunch.launcher.jobs.plan import JobSpec, plan_job
from mxlaunch.infra.transport.runner import RoleEnded, RoleHandle, RoleOutput, RoleResult, RoleStarted, Runner

FIRST_PORT, SECOND_PORT = 23456, 23457
SETTINGS = JobSettings(grace=1.0, finish_grace=10.0, port_tries=3, kill_wait=0.5, abandon_wait=1.5)
FAKE_TIME_LIMIT = 1000.0  # fake seconds: a job still running then is a bug of the job (or of the script)


class FakeClock(Clock):
    """Fake time: `later(delay, fn)` schedules fn; waiting on an empty queue runs what is due instead of sleeping."""

    def __init__(self):
        self.now = 100.0
        self._timers = []
        self._seq = itertools.count()

    def monotonic(self):
        return self.now

    def wall(self):
        return 1_700_000_000.0 + self.now

    def later(self, delay, fn):
        heapq.heappush(self._timers, (self.now + delay, next(self._seq), fn))

    def next_event(self, events, timeout):
        if not events.empty():
            return events.get_nowait()
        until = self.now + timeout
        while self._timers and self._timers[0][0] <= until:
            at, _, fn = heapq.heappop(self._timers)
            self.now = max(self.now, at)
            fn()
            if not events.empty():
                return events.get_nowait()
        self.now = until
        assert self.now < FAKE_TIME_LIMIT, "the job never ended"
        raise queue.Empty


class FakeRole(RoleHandle):
    """One started role. Its script schedules output and its end; `stop`/`kill` obey unless told to ignore."""

    def __init__(self, runner, launch, events, pid):
        self.runner, self.launch, self.events, self.pid = runner, launch, events, pid
        self.clock = runner.clock
        self.started_at = self.clock.monotonic()
        self.port = int(launch.role.env_dict()["DMLC_PS_ROOT_PORT"])
        self.ignores_stop = self.ignores_kill = False
        self.stop_calls, self.kill_calls, self.checkpoint_calls = [], [], []
        self.sends_checkpoint = True  # False: its channel is gone, checkpoint() says the request was not sent
        self.on_checkpoint = lambda: self.end(after=3.0, code=75)  # rank 0 saves for 3 s, then exits 75
        self.ended = False
        self.clock.later(0.0, lambda: self.events.put(RoleStarted(self.name, pid, self.clock.wall())))

    @property
    def name(self):
        return self.launch.role.name

    def say(self, text, after=0.0):
        self.clock.later(after, lambda: self.ended or self.events.put(RoleOutput(self.name, text.encode() + b"\n")))

    def end(self, after=0.0, code=None, sig=None, stopped=None, error=None):
        def report():
            if not self.ended:  # exactly one RoleEnded, as a real runner
                self.ended = True
                role = self.launch.role
                self.events.put(RoleEnded(RoleResult(
                    name=role.name, kind=role.kind, index=role.index, host=role.host.address, pid=self.pid,
                    start=self.runner.wall_start, end=self.clock.wall(), exit_code=code, signal=sig,
                    stopped=stopped, error=error)))
        self.clock.later(after, report)

    def stop(self):
        self.stop_calls.append(self.clock.monotonic())
        if not self.ignores_stop:
            self.end(after=0.2, sig=signal.SIGTERM, stopped="stop")

    def checkpoint(self):
        self.checkpoint_calls.append(self.clock.monotonic())
        if self.sends_checkpoint and self.on_checkpoint:
            self.on_checkpoint()
        return self.sends_checkpoint

    def kill(self):
        self.kill_calls.append(self.clock.monotonic())
        if not self.ignores_kill:
            self.end(after=0.1, error="its roleguard ended without a report (status -9)")


def bind_line(port):
    return f"[12:00:00] src/van.cc:300: Bind to role=scheduler, id=1, ip=127.0.0.1, port={port}, is_recovery=0"


def node_bind_line(kind, port):
    return f"[12:00:00] src/van.cc:300: Bind to role={kind}, ip=127.0.0.1, port={port}, is_recovery=0"


def connected_line(rank):
    return f"[12:00:01] src/van.cc:257: W[{9 + 2 * rank}] is connected to others"


TRAINED_LINE = "2026-11-27 12:00:05 Node[0] Epoch[0] Batch [0-20]\tSpeed: 373.87 samples/sec\taccuracy=0.35"


def trains(after=1.0):  # a worker whose log shows a trained batch `after` s in; it runs until stopped
    return lambda role: role.say(TRAINED_LINE, after=after)


def binds(role):  # a healthy scheduler: binds its port and runs until stopped
    role.say(bind_line(role.port), after=0.5)


def runs_until_stopped(role):
    pass


def exits(code, after=2.0):
    return lambda role: role.end(after=after, code=code)


DEFAULT_SCRIPT = {"scheduler": binds, "server": runs_until_stopped, "worker": exits(0)}


class FakeRunner(Runner):
    """Starts `FakeRole`s by script: `script` maps a role name or kind to a function of the FakeRole."""

    def __init__(self, clock, script=None):
        self.clock, self.script = clock, dict(DEFAULT_SCRIPT, **(script or {}))
        self.started = []  # every FakeRole, in start order (a retried scheduler appears twice)
        self.closed = False
        self.pids = itertools.count(1000)
        self.wall_start = clock.wall()

    def start(self, launch, events):
        role = FakeRole(self, launch, events, next(self.pids))
        self.started.append(role)
        self.script.get(role.name, self.script[launch.role.kind])(role)
        return role

    def close(self):
        self.closed = True

    def role(self, name):  # the last start of that role
        return [r for r in self.started if r.name == name][-1]


def make_job(tmp_path, script=None, settings=SETTINGS, ports=(SECOND_PORT,), **spec):
    spec = JobSpec(**dict(dict(command=("python", "train.py"), num_workers=2, num_servers=1,
                               hosts=(Host.loopback(slots=2),)), **spec))
    run_dir = str(tmp_path)
    (tmp_path / "logs").mkdir()

    def make_plan(port):
        return plan_job(spec, job_id="j1", run_dir=run_dir, port=port)

    clock = FakeClock()
    runner = FakeRunner(clock, script)
    sink = RoleOutputSink(run_dir, make_plan(FIRST_PORT).roles, show_host=False, stream=io.StringIO(), colour=False)
    offered = iter(ports)
    avoided = []

    def choose_port(avoid):
        avoided.append(list(avoid))
        return next(offered)

    job = Job(make_plan, FIRST_PORT, runner, sink, settings, choose_port=choose_port, clock=clock)
    job.avoided = avoided
    return job, runner, clock


def run(job):
    try:
        return job.run()
    finally:
        job.sink.close()


def names(outcome):
    return [r.name for r in outcome.results]
