"""`launch train --max-restarts N`: the restart loop's rules against scripted attempts and a fake clock (no
process, milliseconds), then end to end on real MXNet (`slow`): a digits job that survives a SIGKILLed
worker with its metrics and lr schedule intact, and cheap pushpull jobs for restarts spent and Ctrl-C."""
import json
import os
import signal
import sys
import time

import pytest

from mxlaunch.exits import Exit
from mxlaunch.launcher.jobs import restarts, summary
from mxlaunch.infra.transport.hosts import Host
from mxlaunch.launcher.jobs.job import JobOutcome, Reason
from mxlaunch.launcher.jobs.plan import JobSpec, plan_job
from mxlaunch.launcher.jobs.restarts import RestartPolicy, ResumePoint, run_with_restarts
from mxlaunch.infra.transport.runner import RoleResult

SPEC = JobSpec(command=("python", "train.py"), num_workers=2, num_servers=1, hosts=(Host.loopback(slots=2),))


class FakeClock(restarts.RestartClock):
    """Wall time moves only when told; a wait returns at once (or with the scripted signal)."""

    def __init__(self, signals=()):
        self.now, self.waits, self.signals = 1000.0, [], list(signals)

    def wall(self):
        return self.now

    def wait(self, seconds):
        self.waits.append(seconds)
        self.now += seconds
        return self.signals.pop(0) if self.signals else None


def outcome(reason, clock, seconds=60.0):
    """An attempt that ran `seconds`; a failed one names worker 1 killed by SIGKILL."""
    plan = plan_job(SPEC, job_id="j", run_dir="/r", port=20001)
    started = clock.now
    clock.now += seconds
    failure = None
    if reason is Reason.FAILED:
        failure = RoleResult(name="worker-1", kind="worker", index=1, host="127.0.0.1", pid=42, start=started,
                             end=clock.now, exit_code=None, signal=signal.SIGKILL)
    return JobOutcome(reason=reason, plan=plan, results=(failure,) if failure else (), first_failure=failure,
                      started=started, ended=clock.now)


def script(clock, *reasons, points=()):
    """(attempt, ready, calls): attempt n ends with reasons[n-1]; resume points in turn. The job is a number:
    readying the next attempt makes the job after the one that failed (as a cluster made whole does)."""
    calls, points = [], list(points)

    def attempt(job, number, epoch, done):
        assert job == f"job {number}"  # each attempt runs the job readied for it
        calls.append((number, epoch, len(done)))
        return outcome(reasons[number - 1], clock)

    def ready(job, failed):
        assert failed.reason is Reason.FAILED  # the outcome it readies the next attempt after
        return f"job {int(job.split()[1]) + 1}", points.pop(0) if points else ResumePoint(None)

    return attempt, ready, calls


def run(clock, attempt, ready, max_restarts=2, delay=5.0):
    notices = []
    result = run_with_restarts("job 1", attempt, ready, lambda o: summary.describe(o.first_failure),
                               RestartPolicy(max_restarts, delay), notices.append, clock)
    return result, notices


def test_a_failure_restarts_from_the_newest_checkpoint_and_records_the_time_lost():
    clock = FakeClock()
    saved = clock.now + 45.0  # the failed attempt (60 s) wrote its checkpoint 15 s before it failed
    attempt, point, calls = script(clock, Reason.FAILED, Reason.OK, points=[ResumePoint(5, saved)])
    result, notices = run(clock, attempt, point)
    assert result.outcome.reason is Reason.OK and not result.interrupted_waiting
    assert calls == [(1, None, 0), (2, 5, 1)]  # the second attempt resumes at epoch 5, knowing one restart
    assert result.job == "job 2"  # the job the last attempt ran: the one readied for it
    assert clock.waits == [5.0]
    (restart,) = result.restarts
    assert restart.attempt == 1 and restart.from_epoch == 5 and "worker 1" in restart.reason
    assert restart.seconds_lost == pytest.approx(15.0 + 5.0)  # work past the checkpoint + the delay
    record = restart.record(str)
    assert record["downtime_seconds"] == pytest.approx(5.0) and record["from_epoch"] == 5
    assert notices[0] == "restarting in 5s after: " + restart.reason
    assert notices[1] == "restart 1 of 2, from checkpoint epoch 5: " + restart.reason
    marker = restarts.marker(restart, 2)
    assert "restart 1 of 2" in marker and "checkpoint epoch 5" in marker and "SIGKILL" in marker


def test_no_checkpoint_yet_restarts_from_scratch_and_the_whole_attempt_is_lost():
    clock = FakeClock()
    attempt, point, calls = script(clock, Reason.FAILED, Reason.OK)
    result, notices = run(clock, attempt, point, delay=0)
    assert calls == [(1, None, 0), (2, None, 1)] and clock.waits == []  # no delay: no wait at all
    assert result.restarts[0].seconds_lost == pytest.approx(60.0)
    assert notices[0].startswith("restarting after: worker 1")
    assert "restart 1 of 2, from scratch (no checkpoint yet)" in notices[1]


def test_a_checkpoint_older_than_the_attempt_keeps_nothing_of_it():
    clock = FakeClock()
    attempt, point, _ = script(clock, Reason.FAILED, Reason.OK, points=[ResumePoint(3, clock.now - 500)])
    result, _ = run(clock, attempt, point, delay=1)
    assert result.restarts[0].seconds_lost == pytest.approx(61.0)


def test_beyond_max_restarts_the_last_failure_ends_the_launch():
    clock = FakeClock()
    attempt, point, calls = script(clock, Reason.FAILED, Reason.FAILED, Reason.FAILED)
    result, _ = run(clock, attempt, point, max_restarts=2)
    assert [c[0] for c in calls] == [1, 2, 3] and len(result.restarts) == 2 and result.job == "job 3"
    assert result.outcome.reason is Reason.FAILED and result.outcome.status == Exit.FAILED


@pytest.mark.parametrize("reason", [Reason.INTERRUPTED, Reason.TERMINATED, Reason.HUNG_UP, Reason.TIMEOUT])
def test_what_was_decided_from_outside_is_never_restarted(reason):
    clock = FakeClock()
    attempt, point, calls = script(clock, reason)
    result, _ = run(clock, attempt, point)
    assert len(calls) == 1 and result.outcome.reason is reason and not result.restarts


def test_a_signal_while_waiting_ends_the_launch_with_its_status():
    clock = FakeClock(signals=[signal.SIGINT])
    attempt, point, calls = script(clock, Reason.FAILED, Reason.OK)
    result, notices = run(clock, attempt, point)
    assert len(calls) == 1 and result.interrupted_waiting
    assert result.outcome.reason is Reason.INTERRUPTED and result.outcome.status == Exit.INTERRUPTED
    assert result.outcome.first_failure is not None  # what it was waiting to restart after
    assert "interrupted while waiting to restart" in notices[-1]


def test_the_delay_is_waited_before_the_next_attempt_is_readied():
    """A brief outage gets the delay to heal before the repair probes the hosts; a signal in the wait readies
    nothing (no repair, no AWS call)."""
    clock = FakeClock()
    events = []
    attempt, point, _ = script(clock, Reason.FAILED, Reason.OK, points=[ResumePoint(2, None)])

    def readied(job, failed):
        events.append(("readied", clock.now))
        return point(job, failed)

    def waits(seconds):
        events.append(("waited", clock.now))
        return FakeClock.wait(clock, seconds)
    clock.wait = waits
    failed_at = clock.now + 60
    result, notices = run(clock, attempt, readied, delay=30)
    assert events == [("waited", failed_at), ("readied", failed_at + 30)]
    assert notices[0].startswith("restarting in 30s after:") and notices[1].startswith("restart 1 of 2, from")
    assert result.restarts[0].restarted_at - result.restarts[0].failed_at == pytest.approx(30.0)
    events.clear()
    clock.signals = [signal.SIGTERM]
    attempt, point, _ = script(clock, Reason.FAILED)
    result, _ = run(clock, attempt, readied, delay=30)
    assert result.interrupted_waiting and events == [("waited", clock.now - 30)]


@pytest.mark.parametrize("replaces", [False, True])
def test_a_spot_interruption_restarts_only_where_the_host_can_be_replaced(replaces):
    clock = FakeClock()
    calls, readied = [], []

    def attempt(job, number, epoch, done):
        calls.append(number)
        return outcome(Reason.SPOT if number == 1 else Reason.OK, clock)

    def point(job, failed):
        readied.append(failed.reason)
        return job, ResumePoint(3, None, 40)
    notices = []
    result = run_with_restarts("job", attempt, point, lambda o: o.message(),
                               RestartPolicy(2, 5.0, replaces_hosts=replaces), notices.append, clock)
    if replaces:  # --cluster: the noticed host is replaced before the restart
        assert calls == [1, 2] and readied == [Reason.SPOT] and not result.spot_not_restarted
        assert result.restarts[0].from_batch == 40
    else:  # --hosts, --local, a detached launcher: the job ends at once, no restart spent, nothing waited
        assert calls == [1] and readied == [] and clock.waits == [] and notices == []
        assert result.spot_not_restarted and result.outcome.reason is Reason.SPOT and result.restarts == ()


def test_a_failed_role_still_restarts_where_nothing_can_be_replaced():
    clock = FakeClock()
    attempt, point, calls = script(clock, Reason.FAILED, Reason.OK)
    result, _ = run(clock, attempt, point)  # RestartPolicy's default: replaces no host
    assert [c[0] for c in calls] == [1, 2] and not result.spot_not_restarted


def test_the_real_wait_ends_at_a_signal():
    clock = restarts.RestartClock()
    t0 = time.monotonic()
    assert clock.wait(0.05) is None
    previous = signal.getsignal(signal.SIGINT)
    import threading
    threading.Timer(0.2, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
    assert clock.wait(30) == signal.SIGINT
    assert time.monotonic() - t0 < 10
    assert signal.getsignal(signal.SIGINT) is previous  # the launcher's handlers are back


def test_summary_lists_each_restart_and_the_final_line_says_so(tmp_path):
    clock = FakeClock()
    attempt, point, _ = script(clock, Reason.FAILED, Reason.OK, points=[ResumePoint(5, None)])
    result, _ = run(clock, attempt, point)
    data = summary.summary_data(result.outcome, restarts=result.restarts)
    assert [r["from_epoch"] for r in data["restarts"]] == [5]
    assert data["restarts"][0]["reason"].startswith("worker 1 on 127.0.0.1, pid 42: signal 9")
    assert "after 1 restart (65.0s lost)" in summary.final_line(result.outcome, summary.RunMetrics(), result.restarts)
    assert summary.summary_data(result.outcome)["restarts"] == []


# ------------------------------------------------------------------------------------- end to end, real MXNet
def _stderr_lines(proc):
    """stderr lines of a running launcher, collected by a thread (the test waits on them, bounded)."""
    import threading

    lines = []

    def pump():
        for raw in proc.stderr:
            lines.append(raw.decode("utf-8", "replace"))

    threading.Thread(target=pump, daemon=True).start()
    return lines


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_a_killed_worker_costs_one_restart_and_the_job_still_reaches_97_percent(digits_dir, tmp_path):
    from digits_recipe import BASE_LR, EPOCHS, FACTOR, STEPS, TRAIN_EXAMPLES, fit_args
    from testkit.jobs import end_launch, job_id_of, job_processes, read_log, role_pid, start_launch, wait_for

    run_dir, prefix, batch = str(tmp_path / "run"), str(tmp_path / "ckpt" / "digits"), 16
    killed_in = STEPS[0] - 1  # the epoch the kill lands in: the restarted job must make both steps
    proc = start_launch("train", "--local", "-n", "2", "-s", "1", "--run-dir", run_dir, "--max-restarts", "2",
                        "--restart-delay", "0.5", "--env", "OMP_NUM_THREADS=1", "--", sys.executable, "-m",
                        "mxlaunch.trainer", *fit_args(digits_dir, prefix, batch))
    try:
        # epoch 2 recorded and its checkpoint written: the workers are in epoch 3, before both steps
        wait_for(lambda: os.path.exists(f"{prefix}-{killed_in:04d}.params"), 240, interval=0.1,
                 what=f"checkpoint {killed_in}")
        job_id = job_id_of(run_dir)
        pid = role_pid(job_id, "worker-1")
        assert pid, job_processes(job_id)
        os.kill(pid, signal.SIGKILL)
        out, err = proc.communicate(timeout=300)
        out, err = out.decode(), err.decode()
    finally:
        end_launch(proc, run_dir)
    assert proc.returncode == 0, err[-3000:]
    data = summary_of(run_dir)
    assert [(r["attempt"], r["from_epoch"]) for r in data["restarts"]] == [(1, killed_in)]
    assert "worker 1" in data["restarts"][0]["reason"] and "SIGKILL" in data["restarts"][0]["reason"]
    assert 0 < data["restarts"][0]["seconds_lost"] < 120
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    assert [r["epoch"] for r in records] == list(range(EPOCHS))  # each epoch once, in order

    def expected_lr(epoch):
        return BASE_LR * FACTOR ** sum(1 for s in STEPS if epoch >= s)

    assert [r["lr"] for r in records] == pytest.approx([expected_lr(e) for e in range(EPOCHS)])
    assert records[-1]["validation-accuracy"] >= 0.97
    # the servers' optimizer continued the schedule: after the restart it changed the rate at the same updates
    updates = -(-(TRAIN_EXAMPLES // 2) // batch)
    import re
    server = read_log(run_dir, "server-0")
    restarted = server[server.index("===== launch: restart 1 of 2"):]
    changes = re.findall(r"Update\[(\d+)\]: Change learning rate to ([\d.e+-]+)", restarted)
    assert [int(n) for n, _ in changes] == [updates * s + 1 for s in STEPS]
    for role in ("scheduler", "server-0", "worker-0", "worker-1"):
        restart_line = f"===== launch: restart 1 of 2, attempt 2, from checkpoint epoch {killed_in}"
        assert read_log(run_dir, role).count(restart_line) == 1
    assert "after 1 restart" in out.strip().splitlines()[-1]
    assert not job_processes(job_id)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_third_failure_with_two_restarts_ends_the_launch_naming_it(tmp_path):
    from testkit.jobs import PUSHPULL, PY, QUIET_ENV, job_processes, run_launch

    run_dir = str(tmp_path / "run")
    rc, out, err = run_launch("train", "--local", "-n", "2", "-s", "1", "--run-dir", run_dir, *QUIET_ENV,
                              "--max-restarts", "2", "--restart-delay", "0", "--", PY, PUSHPULL, "--rounds", "50",
                              "--fail-rank", "1", "--fail-round", "2", timeout=200)
    assert rc == Exit.FAILED, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert "worker 1" in last and "exit code 3" in last and "after 2 restarts" in last
    data = summary_of(run_dir)
    assert [r["from_epoch"] for r in data["restarts"]] == [None, None]  # no checkpoints: from scratch
    assert data["reason"] == "failed" and data["first_failure"]["name"] == "worker-1"
    assert err.count("from scratch (no checkpoint yet)") == 2
    assert not job_processes(data["job_id"])


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_ctrl_c_while_waiting_to_restart_exits_130_with_nothing_left(tmp_path):
    from testkit.jobs import (PUSHPULL, PY, QUIET_ENV, end_launch, job_id_of, job_processes,
                                       start_launch, wait_for)

    run_dir = str(tmp_path / "run")
    proc = start_launch("train", "--local", "-n", "2", "-s", "1", "--run-dir", run_dir, *QUIET_ENV,
                        "--max-restarts", "2", "--restart-delay", "120", "--", PY, PUSHPULL, "--rounds", "50",
                        "--fail-rank", "1", "--fail-round", "2")
    try:
        lines = _stderr_lines(proc)
        wait_for(lambda: any("restarting in 120s after: worker 1" in line for line in lines), 120, interval=0.05,
                 what="the launcher to wait to restart")
        t0 = time.monotonic()
        os.kill(proc.pid, signal.SIGINT)
        proc.wait(timeout=30)
        assert time.monotonic() - t0 < 10
    finally:
        end_launch(proc, run_dir)
    assert proc.returncode == Exit.INTERRUPTED, "".join(lines)[-3000:]
    assert "interrupted while waiting to restart (nothing was running) after: worker 1" in "".join(lines)
    data = summary_of(run_dir)
    assert data["status"] == Exit.INTERRUPTED and data["reason"] == "interrupted" and data["restarts"] == []
    assert not job_processes(job_id_of(run_dir))


def summary_of(run_dir):
    with open(os.path.join(run_dir, "summary.json")) as f:
        return json.load(f)
