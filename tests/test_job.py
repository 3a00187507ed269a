"""`Job`'s rules, against a scripted fake `Runner` and a fake clock: no process, no sleep, milliseconds each.

The fake clock moves on only when the job waits on an empty event queue, and then only to the next
scripted moment (or by the wait's timeout): a test reads like a timeline, and each rule is checked at the
fake second it must happen. What a role does is a script: `FakeRole` methods schedule its events.
The same rules are checked end to end, on real MXNet processes, in tests/test_launch_local.py.
"""
import heapq
import io
import itertools
import queue
import signal

import pytest

from mxlaunch.exits import Exit
from mxlaunch.launcher import summary
from mxlaunch.launcher.hosts import Host
from mxlaunch.launcher.job import TICK, Clock, Job, JobSettings, Reason, SignalReceived
from mxlaunch.launcher.output import RoleOutputSink
from mxlaunch.launcher.plan import JobSpec, plan_job
from mxlaunch.launcher.runner import RoleEnded, RoleHandle, RoleOutput, RoleResult, RoleStarted, Runner
from mxlaunch.launcher.train_cmd import _final_message

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
        self.stop_calls, self.kill_calls = [], []
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


# ------------------------------------------------------------------------------------------ start order

def test_every_role_starts_at_once_and_the_bind_is_confirmed_while_they_start(tmp_path):
    job, runner, clock = make_job(tmp_path, script={"scheduler": lambda r: r.say(bind_line(r.port), after=3.0)})
    t0 = clock.now
    outcome = run(job)
    assert [r.name for r in runner.started] == ["scheduler", "server-0", "worker-0", "worker-1"]
    assert [r.started_at for r in runner.started] == [t0] * 4  # nobody waits for the scheduler's bind line
    # every worker exited 0: the lingering scheduler and server are stopped after the finish grace
    assert outcome.status == Exit.OK and outcome.reason is Reason.OK and outcome.first_failure is None
    assert runner.role("scheduler").stop_calls == [pytest.approx(t0 + 2.0 + SETTINGS.finish_grace, abs=TICK)]
    assert names(outcome) == ["scheduler", "server-0", "worker-0", "worker-1"]
    assert summary.summary_data(outcome)["reason"] == "ok" and runner.closed
    assert outcome.notes == ()


# ------------------------------------------------------------------------------------------ port retry

def fails_to_bind(role):
    # ps-lite prints its bind line with port=-1 after a failed bind, just before it aborts
    role.say(bind_line(-1), after=0.5)
    role.say("MXNetError: Check failed: my_node_.port != -1 (-1 vs. -1) : bind failed", after=0.6)
    role.end(after=0.7, sig=signal.SIGABRT)


def test_a_failed_bind_restarts_every_role_on_another_port(tmp_path):
    attempts = iter([fails_to_bind, binds])
    job, runner, clock = make_job(tmp_path, script={"scheduler": lambda r: next(attempts)(r)})
    t0 = clock.now
    outcome = run(job)
    roles = ["scheduler", "server-0", "worker-0", "worker-1"]
    assert [(r.name, r.port) for r in runner.started] == [(n, FIRST_PORT) for n in roles] + [
        (n, SECOND_PORT) for n in roles]
    first, second = runner.started[:4], runner.started[4:]
    assert all(r.stop_calls == [pytest.approx(t0 + 0.5)] for r in first)  # stopped at the failed bind line
    assert all(r.started_at == pytest.approx(t0 + 0.7) for r in second)  # once every role of the first start ended
    assert job.avoided == [[FIRST_PORT]]  # the port that failed is never offered again
    assert outcome.status == Exit.OK and outcome.plan.port == SECOND_PORT
    assert f"scheduler could not bind port {FIRST_PORT}; restarting every role on port {SECOND_PORT}" in outcome.notes
    assert outcome.first_failure is None  # the failed start is not a failure of the job
    assert names(outcome) == roles and all(r.exit_code == 0 for r in outcome.results if r.kind == "worker")


def test_a_scheduler_that_aborts_on_a_taken_port_without_its_bind_line_restarts_too(tmp_path):
    def aborts(role):
        role.say("terminate called: ZMQ error: Address already in use", after=0.3)
        role.end(after=0.4, sig=signal.SIGABRT)

    attempts = iter([aborts, binds])
    job, runner, clock = make_job(tmp_path, script={"scheduler": lambda r: next(attempts)(r)})
    outcome = run(job)
    assert [r.port for r in runner.started if r.name == "scheduler"] == [FIRST_PORT, SECOND_PORT]
    assert outcome.status == Exit.OK and outcome.first_failure is None


def test_the_job_is_given_up_on_after_port_tries_failed_binds(tmp_path):
    job, runner, clock = make_job(tmp_path, script={"scheduler": fails_to_bind}, ports=(SECOND_PORT, 23458))
    outcome = run(job)
    assert [r.port for r in runner.started if r.name == "scheduler"] == [FIRST_PORT, SECOND_PORT, 23458]
    assert len(runner.started) == 12  # port_tries = 3 whole starts
    assert outcome.status == Exit.FAILED and outcome.reason is Reason.FAILED
    assert outcome.first_failure.name == "scheduler"
    assert names(outcome) == ["scheduler", "server-0", "worker-0", "worker-1"]  # the last start, stopped


def test_a_worker_whose_port_moved_restarts_every_role(tmp_path):
    """ps-lite binds another random port when PORT is taken: its rank could then be another."""
    def moved(role):
        role.say(node_bind_line("worker", 40001), after=0.2)

    attempts = iter([moved, exits(0)])
    job, runner, clock = make_job(tmp_path, script={"worker-0": lambda r: next(attempts)(r)})
    outcome = run(job)
    planned = int(runner.started[2].launch.role.env_dict()["PORT"])
    assert [r.name for r in runner.started].count("worker-0") == 2
    assert f"worker 0 bound port 40001 instead of port {planned}; restarting every role on port {SECOND_PORT}" \
        in outcome.notes
    assert job.avoided == [[planned]]
    assert outcome.status == Exit.OK and outcome.plan.port == SECOND_PORT


def test_a_worker_given_another_rank_restarts_every_role_and_a_bind_on_its_port_does_not(tmp_path):
    def wrong_rank(role):
        port = role.launch.role.env_dict()["PORT"]
        role.say(node_bind_line("worker", port), after=0.1)  # its own port: fine
        role.say(connected_line(0), after=0.3)  # but ps-lite made it rank 0

    attempts = iter([wrong_rank, exits(0)])
    job, runner, clock = make_job(tmp_path, script={"worker-1": lambda r: next(attempts)(r)})
    outcome = run(job)
    assert [r.name for r in runner.started].count("worker-1") == 2
    assert "worker 1 was given MXNet rank 0; restarting every role on port 23457" in outcome.notes
    assert outcome.status == Exit.OK


def test_a_rank_mismatch_after_the_last_try_is_said_not_hidden(tmp_path):
    job, runner, clock = make_job(tmp_path, settings=JobSettings(port_tries=1),
                                  script={"worker-1": lambda r: (r.say(connected_line(0), after=0.3),
                                                                 r.end(after=2.0, code=0))})
    outcome = run(job)
    assert len(runner.started) == 4
    assert any(n.startswith("worker 1 runs as MXNet rank 0") for n in outcome.notes)
    assert outcome.rank_of("worker-1") == 0 and outcome.status == Exit.OK


# ------------------------------------------------------------------------------------------ teardown

def test_grace_then_kill_then_abandon(tmp_path):
    def ignores_stop(role):
        role.ignores_stop = True

    def ignores_everything(role):
        role.ignores_stop = role.ignores_kill = True

    job, runner, clock = make_job(tmp_path, script={"server-0": ignores_stop, "worker-0": exits(3, after=1.0),
                                                    "worker-1": ignores_everything})
    outcome = run(job)
    failed_at = runner.role("worker-0").started_at + 1.0
    kill_at = failed_at + SETTINGS.grace + SETTINGS.kill_wait
    scheduler, server, worker = runner.role("scheduler"), runner.role("server-0"), runner.role("worker-1")
    assert [r.stop_calls for r in (scheduler, server, worker)] == [[pytest.approx(failed_at)]] * 3
    assert scheduler.kill_calls == []  # it obeyed the stop
    assert server.kill_calls == worker.kill_calls == [pytest.approx(kill_at, abs=TICK)]
    assert clock.now == pytest.approx(kill_at + SETTINGS.abandon_wait, abs=2 * TICK)  # then given up on

    results = {r.name: r for r in outcome.results}
    assert results["scheduler"].signal == signal.SIGTERM and results["scheduler"].stopped == "stop"
    assert results["server-0"].error.startswith("its roleguard ended without a report")
    assert results["worker-1"].error == "did not report its end" and results["worker-1"].stopped
    assert results["worker-1"].pid == worker.pid  # what was known of it is kept
    assert "worker 1 on 127.0.0.1 did not report its end; its guard was killed" in outcome.notes
    assert outcome.status == Exit.FAILED and outcome.first_failure.name == "worker-0"


def test_the_first_failure_is_named_when_several_roles_fail(tmp_path):
    job, runner, clock = make_job(tmp_path, script={"worker-1": exits(3, after=1.0), "worker-0": exits(4, after=1.1)})
    outcome = run(job)
    assert outcome.first_failure.name == "worker-1" and outcome.first_failure.exit_code == 3
    assert {r.name: r.exit_code for r in outcome.results}["worker-0"] == 4  # failed too, second
    assert outcome.status == Exit.FAILED and outcome.reason is Reason.FAILED
    data = summary.summary_data(outcome)
    assert data["reason"] == "failed" and data["first_failure"]["name"] == "worker-1"
    assert _final_message(outcome) == (f"worker 1 on 127.0.0.1, pid {runner.role('worker-1').pid}: exit code 3; "
                                       f"every other role was stopped (run directory {tmp_path})")


def test_a_role_that_cannot_be_started_fails_the_job(tmp_path):
    def refused(role):
        raise OSError("ssh: connection refused")

    job, runner, clock = make_job(tmp_path, script={"worker-1": refused})
    outcome = run(job)
    assert outcome.first_failure.name == "worker-1"
    assert outcome.first_failure.error == "could not be started: ssh: connection refused"
    assert outcome.status == Exit.FAILED


# ------------------------------------------------------------------------------------------ signals, timeout

@pytest.mark.parametrize("signum, status, reason", [(signal.SIGINT, 130, "interrupted"),
                                                    (signal.SIGTERM, 143, "terminated"),
                                                    (signal.SIGHUP, 129, "hung up")])
def test_a_signal_stops_every_role_with_its_status(tmp_path, signum, status, reason):
    job, runner, clock = make_job(tmp_path, script={"worker": runs_until_stopped})
    clock.later(5.0, lambda: job.events.put(SignalReceived(signum)))
    outcome = run(job)
    assert outcome.status == status and outcome.reason.value == reason
    assert all(r.stop_calls == [pytest.approx(105.0)] for r in runner.started)
    assert all(r.stopped == "stop" for r in outcome.results) and len(outcome.results) == 4
    assert outcome.first_failure is None and summary.summary_data(outcome)["reason"] == reason
    assert _final_message(outcome) == f"{reason}; every role was stopped (run directory {tmp_path})"


def test_timeout_stops_every_role_with_124(tmp_path):
    job, runner, clock = make_job(tmp_path, script={"worker": runs_until_stopped}, timeout=7.0)
    outcome = run(job)
    assert outcome.status == Exit.TIMEOUT == 124 and outcome.reason is Reason.TIMEOUT
    assert all(r.stop_calls == [pytest.approx(107.0, abs=TICK)] for r in runner.started)
    assert outcome.teardown_started == pytest.approx(clock.wall() - 0.2, abs=TICK)
    assert summary.summary_data(outcome)["reason"] == "timeout"
    assert _final_message(outcome) == f"the job exceeded --timeout 7s; every role was stopped (run directory {tmp_path})"


def test_reasons_keep_their_summary_strings_and_exit_statuses():
    assert {r.value: int(r.exit_status) for r in Reason} == {
        "ok": 0, "failed": 1, "timeout": 124, "interrupted": 130, "terminated": 143, "hung up": 129}
    assert [r for r in Reason if r.imposed] == [Reason.TIMEOUT, Reason.INTERRUPTED, Reason.TERMINATED,
                                                Reason.HUNG_UP]
