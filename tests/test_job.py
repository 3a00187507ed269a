"""`Job`'s rules, against a scripted fake `Runner` and a fake clock: no process, no sleep, milliseconds each.

The fakes (tests/job_fakes.py): a test reads like a timeline, and each rule is checked at the fake second it
must happen.
The same rules are checked end to end, on real MXNet processes, in tests/test_launch_local.py.
"""
import signal

import pytest

from mxlaunch.exits import Exit
from mxlaunch.launcher.jobs import summary
from job_fakes import (FIRST_PORT, SECOND_PORT, SETTINGS, bind_line, binds, connected_line, exits, make_job, names,
                       node_bind_line, run, runs_until_stopped)
from mxlaunch.launcher.jobs.job import TICK, JobSettings, Reason, SignalReceived
from mxlaunch.launcher.jobs.attempt import final_message
from mxlaunch.launcher.jobs.restarts import restartable

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
    assert final_message(outcome) == (f"worker 1 on 127.0.0.1, pid {runner.role('worker-1').pid}: exit code 3; "
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
    assert final_message(outcome) == f"{reason}; every role was stopped (run directory {tmp_path})"


@pytest.mark.parametrize("signum, reason", [(signal.SIGINT, Reason.INTERRUPTED), (signal.SIGTERM, Reason.TERMINATED),
                                            (signal.SIGHUP, Reason.HUNG_UP)])
def test_a_signal_during_a_failures_teardown_wins_so_nothing_restarts(tmp_path, signum, reason):
    def lingers(role):
        role.ignores_stop = True
    job, runner, clock = make_job(tmp_path, script={"server-0": lingers, "worker-0": exits(3, after=1.0),
                                                    "worker-1": runs_until_stopped})
    clock.later(1.5, lambda: job.events.put(SignalReceived(signum)))  # server-0 is still being stopped
    outcome = run(job)
    assert outcome.reason is reason and outcome.status == reason.exit_status and not restartable(outcome)
    assert outcome.first_failure.name == "worker-0"  # what failed first is still said
    assert f"{reason.value} while every role was being stopped (failed)" in outcome.notes
    assert runner.role("server-0").stop_calls == [pytest.approx(101.0)]  # the teardown goes on as it was


def test_timeout_stops_every_role_with_124(tmp_path):
    job, runner, clock = make_job(tmp_path, script={"worker": runs_until_stopped}, timeout=7.0)
    outcome = run(job)
    assert outcome.status == Exit.TIMEOUT == 124 and outcome.reason is Reason.TIMEOUT
    assert all(r.stop_calls == [pytest.approx(107.0, abs=TICK)] for r in runner.started)
    assert outcome.teardown_started == pytest.approx(clock.wall() - 0.2, abs=TICK)
    assert summary.summary_data(outcome)["reason"] == "timeout"
    assert final_message(outcome) == f"the job exceeded --timeout 7s; every role was stopped (run directory {tmp_path})"


def test_reasons_keep_their_summary_strings_and_exit_statuses():
    assert {r.value: int(r.exit_status) for r in Reason} == {
        "ok": 0, "failed": 1, "timeout": 124, "interrupted": 130, "terminated": 143, "hung up": 129, "spot interruption": 1}
    assert [r for r in Reason if r.imposed] == [Reason.TIMEOUT, Reason.INTERRUPTED, Reason.TERMINATED,
                                                Reason.HUNG_UP]
