"""A spot notice in `Job` (scripted fake runner and fake clock of tests/job_fakes.py: no process, no sleep):
who watches, who is asked and when (rank 0 of a trainer job that has started training), the bounded wait, a
finished job left to finish, a signal during the teardown, the reason and the noticed hosts; then the restart
loop's resume point with a mid-epoch checkpoint (the checkpoint search: tests/test_checkpoint_scan.py)."""
import dataclasses
import signal
import subprocess

import pytest

from mxlaunch.exits import Exit
from mxlaunch.launcher.jobs import restarts, summary, workload
from mxlaunch.infra.transport.hosts import Host
from mxlaunch.launcher.jobs.job import TICK, Reason, SignalReceived
from mxlaunch.infra.transport.local_runner import LocalRoleHandle
from mxlaunch.launcher.jobs.plan import JobSpec, plan_job
from mxlaunch.infra.transport.runner import SpotNotice
from mxlaunch.launcher.jobs.spot import SPOT_WAIT
from mxlaunch.infra.transport.ssh_runner import SSHRoleHandle
from job_fakes import SETTINGS, binds, connected_line, make_job, run, runs_until_stopped, trains

SPOT_SETTINGS = dataclasses.replace(SETTINGS, spot_poll=0.5, spot_wait=SPOT_WAIT)
TRAINER = ("trainer", "fit", "--data-train", "t.rec", "--model-prefix", "ck/m")
NOTICE = "spot interruption notice for 127.0.0.1 (action terminate at 2026-11-27T12:02:00Z)"


def notice_at(at):  # the role's guard reads its host's notice `at` s in (the scheduler binds its port too)
    def script(role):
        if role.name == "scheduler":
            binds(role)
        role.clock.later(at, lambda: role.events.put(SpotNotice(role.name, "terminate", "2026-11-27T12:02:00Z")))
    return script


def also(*scripts):
    return lambda role: [script(role) for script in scripts]


def spot_job(tmp_path, script, command=TRAINER, settings=SPOT_SETTINGS, **spec):
    script = dict({"scheduler": notice_at(4.0), "server": runs_until_stopped, "worker": trains()}, **script)
    return make_job(tmp_path, script=script, settings=settings, watch_spot=True, command=command, **spec)


def spot_notes(outcome):
    return [n for n in outcome.notes if n.startswith("spot interruption notice")]


def test_the_first_role_on_each_host_watches_and_only_when_the_job_does():
    hosts = (Host("10.0.0.1", slots=0), Host("10.0.0.2", slots=1), Host("10.0.0.3", slots=1))
    spec = JobSpec(command=("t",), num_workers=2, num_servers=3, hosts=hosts, local=False, watch_spot=True)
    plan = plan_job(spec, "j", "/r", 20001)
    assert plan.spot_watchers() == ("scheduler", "server-1", "server-2")
    assert [r.host.address for r in plan.roles if r.name in plan.spot_watchers()] == ["10.0.0.1", "10.0.0.2",
                                                                                      "10.0.0.3"]
    assert plan_job(dataclasses.replace(spec, watch_spot=False), "j", "/r", 20001).spot_watchers() == ()


def test_a_notice_asks_rank_0_once_and_ends_the_job_when_it_has_saved(tmp_path):
    job, runner, clock = spot_job(tmp_path, {})
    t0 = clock.now
    outcome = run(job)
    rank0, worker1 = runner.role("worker-0"), runner.role("worker-1")
    assert rank0.checkpoint_calls == [pytest.approx(t0 + 4.0, abs=TICK)] and worker1.checkpoint_calls == []
    assert rank0.stop_calls == []  # it ended by itself, having saved
    assert worker1.stop_calls == [pytest.approx(t0 + 7.0, abs=TICK)]  # the rest stopped once rank 0 ended
    assert outcome.reason is Reason.SPOT and outcome.status == Exit.FAILED and outcome.first_failure is None
    assert outcome.spot_hosts == ("127.0.0.1",)
    assert outcome.message() == "spot interruption on 127.0.0.1" and restarts.restartable(outcome)
    assert dict((r.name, r.exit_code) for r in outcome.results)["worker-0"] == 75
    assert summary.summary_data(outcome)["reason"] == "spot interruption"
    text = f"{NOTICE}: asking rank 0 to checkpoint"
    assert spot_notes(outcome) == [text]
    for name in ("scheduler", "server-0", "worker-0", "worker-1"):  # every log says it
        assert text in (tmp_path / "logs" / f"{name}.log").read_text()


def test_rank_0_gets_a_bounded_wait_and_a_second_notice_asks_nothing_more(tmp_path):
    def stuck(role):
        role.on_checkpoint = None
    job, runner, clock = spot_job(tmp_path, {"server": notice_at(6.0), "worker-0": also(trains(), stuck)})
    t0 = clock.now
    outcome = run(job)
    assert runner.role("worker-0").checkpoint_calls == [pytest.approx(t0 + 4.0, abs=TICK)]
    assert runner.role("worker-0").stop_calls == [pytest.approx(t0 + 4.0 + SPOT_WAIT, abs=TICK)]
    assert outcome.reason is Reason.SPOT and outcome.spot_hosts == ("127.0.0.1",)  # one host, told twice
    assert f"rank 0 did not end within {SPOT_WAIT:g}s of the checkpoint request; every role was stopped" \
        in outcome.notes


@pytest.mark.parametrize("code, reason", [(0, Reason.OK), (1, Reason.SPOT)])
def test_rank_0_ending_0_after_a_notice_finished_training_and_only_a_failing_end_stops_the_rest(tmp_path, code,
                                                                                                 reason):
    def training_complete(role):  # the request came during its last epoch: it ends 0 (trainer/fit.py)
        role.on_checkpoint = lambda: role.end(after=1.0, code=0)
    job, runner, clock = spot_job(tmp_path, {"worker-0": also(trains(), training_complete),
                                             "worker-1": also(trains(), lambda r: r.end(after=6.0, code=code))})
    t0 = clock.now
    outcome = run(job)
    assert runner.role("worker-0").checkpoint_calls == [pytest.approx(t0 + 4.0, abs=TICK)]
    assert outcome.reason is reason and outcome.spot_hosts == ("127.0.0.1",) and outcome.first_failure is None
    assert runner.role("worker-1").stop_calls == []  # it ended by itself, after rank 0
    stopped_at = runner.role("server-0").stop_calls[0]
    assert stopped_at == pytest.approx(t0 + 6.0 + (SETTINGS.finish_grace if code == 0 else 0.0), abs=TICK)


@pytest.mark.parametrize("worker_1_ends", [True, False])
def test_a_notice_after_rank_0_ended_0_is_a_note_and_the_others_may_finish_within_the_wait(tmp_path,
                                                                                          worker_1_ends):
    done = {"worker-0": also(trains(), lambda r: r.end(after=2.0, code=0))}
    if worker_1_ends:
        done["worker-1"] = also(trains(), lambda r: r.end(after=30.0, code=0))
    job, runner, clock = spot_job(tmp_path, done)
    t0 = clock.now
    outcome = run(job)
    assert spot_notes(outcome) == [f"{NOTICE}: rank 0 has finished; waiting for the other workers to finish"]
    assert runner.role("worker-0").checkpoint_calls == []
    if worker_1_ends:
        assert outcome.reason is Reason.OK and runner.role("worker-1").stop_calls == []
    else:  # the host goes away soon: the job ends at the deadline, restartable as any notice
        assert outcome.reason is Reason.SPOT
        assert runner.role("worker-1").stop_calls == [pytest.approx(t0 + 4.0 + SPOT_WAIT, abs=TICK)]
        assert f"the workers did not end within {SPOT_WAIT:g}s of the spot interruption notice; every role was " \
               f"stopped" in outcome.notes


def test_a_notice_after_every_worker_finished_changes_nothing(tmp_path):
    job, runner, clock = spot_job(tmp_path, {"scheduler": notice_at(3.0), "worker": also(
        trains(), lambda r: r.end(after=2.0, code=0))})
    outcome = run(job)
    assert outcome.reason is Reason.OK and outcome.spot_hosts == ("127.0.0.1",)
    assert runner.role("worker-0").checkpoint_calls == []
    assert spot_notes(outcome) == [f"{NOTICE}: every worker has finished"]


@pytest.mark.parametrize("case", ["before its first batch", "request not sent", "not the trainer"])
def test_when_rank_0_cannot_save_anything_new_a_notice_stops_the_job_at_once(tmp_path, case):
    script, command = {}, TRAINER
    if case == "before its first batch":  # e.g. the previous attempt's notice, read by this one's first poll
        script = {"scheduler": notice_at(0.5)}
    elif case == "request not sent":  # its guard's channel is gone
        script = {"worker-0": also(trains(), lambda r: setattr(r, "sends_checkpoint", False))}
    else:  # SIGUSR1's default action would kill it
        command = ("python", "train_imagenet.py", "--model-prefix", "m")
    job, runner, clock = spot_job(tmp_path, script, command=command)
    t0 = clock.now
    outcome = run(job)
    noticed = t0 + (0.5 if case == "before its first batch" else 4.0)
    asked = runner.role("worker-0").checkpoint_calls
    assert asked == ([pytest.approx(noticed, abs=TICK)] if case == "request not sent" else [])
    assert all(r.stop_calls == [pytest.approx(noticed, abs=TICK)] for r in runner.started)
    assert outcome.reason is Reason.SPOT and restarts.restartable(outcome)
    why = {"before its first batch": "rank 0 has not started training in this attempt (nothing new to save)",
           "request not sent": "the checkpoint request could not be sent to rank 0 (worker-0)",
           "not the trainer": "the workload is not the trainer (only it saves on request)"}[case]
    assert spot_notes(outcome) == [f"{NOTICE}: {why}; stopping every role"]


def test_the_request_goes_to_the_worker_that_is_mxnet_rank_0(tmp_path):
    def rank(n):
        return lambda role: role.say(connected_line(n), after=0.3)
    settings = dataclasses.replace(SPOT_SETTINGS, port_tries=1)  # ports kept moving: the ranks are kept as they are
    job, runner, clock = spot_job(tmp_path, {"worker-0": also(trains(), rank(1)), "worker-1": also(trains(), rank(0))},
                                  settings=settings)
    t0 = clock.now
    outcome = run(job)
    assert runner.role("worker-0").checkpoint_calls == []
    assert runner.role("worker-1").checkpoint_calls == [pytest.approx(t0 + 4.0, abs=TICK)]
    assert spot_notes(outcome) == [f"{NOTICE}: asking rank 0 to checkpoint (worker-1)"]
    assert outcome.reason is Reason.SPOT and outcome.rank_of("worker-1") == 0


@pytest.mark.parametrize("signum, reason", [(signal.SIGINT, Reason.INTERRUPTED), (signal.SIGTERM, Reason.TERMINATED),
                                            (signal.SIGHUP, Reason.HUNG_UP)])
def test_a_signal_during_the_spot_teardown_wins_and_nothing_restarts(tmp_path, signum, reason):
    def lingers(role):
        role.ignores_stop = True
    job, runner, clock = spot_job(tmp_path, {"server": lingers})
    clock.later(7.5, lambda: job.events.put(SignalReceived(signum)))  # rank 0 saved and ended at 7
    outcome = run(job)
    assert outcome.reason is reason and outcome.status == reason.exit_status and not restarts.restartable(outcome)
    assert f"{reason.value} while every role was being stopped (spot interruption)" in outcome.notes


@pytest.mark.parametrize("watch", [True, False])
def test_a_watching_jobs_first_role_per_host_is_launched_with_the_poll_interval(tmp_path, watch):
    job, runner, _ = make_job(tmp_path, settings=SPOT_SETTINGS, watch_spot=watch)
    assert run(job).reason is Reason.OK
    polls = {r.name: r.launch.spot_poll for r in runner.started}
    assert polls == {"scheduler": 0.5 if watch else None, "server-0": None, "worker-0": None, "worker-1": None}


def test_only_the_trainer_is_asked_for_a_checkpoint():
    for command in (TRAINER, ("/e/venv/bin/trainer", "fit"), ("python3", "-m", "mxlaunch.trainer", "fit")):
        assert workload.is_trainer(command), command
    for command in (("python", "train_imagenet.py"), ("python", "trainer.py"), ("./run.sh", "trainer")):
        assert not workload.is_trainer(command), command


def test_a_handle_says_whether_the_checkpoint_request_was_sent():
    guard = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)  # reads stdin as a guard
    try:
        handle = LocalRoleHandle(session=None, proc=guard)
        assert handle.checkpoint() is True
        guard.stdin.close()
        assert handle.checkpoint() is False
    finally:
        guard.kill()
        guard.wait(timeout=5)

    class Channel:  # what SSHRoleHandle uses of a paramiko channel
        def __init__(self):
            self.closed, self.sent = False, []

        def sendall(self, data):
            self.sent.append(data)
    ssh = SSHRoleHandle(session=None, conn=None)
    assert ssh.checkpoint() is False  # its channel is not open yet: the role has not started
    ssh.channel = channel = Channel()
    assert ssh.checkpoint() is True and channel.sent == [b"checkpoint\n"]
    channel.closed = True
    assert ssh.checkpoint() is False


# ------------------------------------------------------------------------------------------ resume point

def test_the_restart_command_and_record_carry_the_batch():
    cmd = ("trainer", "fit", "--data-train", "t.rec", "--load-epoch", "1", "--load-batch", "9", "--model-prefix", "m")
    assert workload.resumed(cmd, 3, 12) == ("trainer", "fit", "--data-train", "t.rec", "--model-prefix", "m",
                                            "--load-epoch", "3", "--load-batch", "12")
    assert workload.resumed(cmd, 4) == ("trainer", "fit", "--data-train", "t.rec", "--model-prefix", "m",
                                        "--load-epoch", "4")
    r = restarts.Restart(attempt=1, reason="spot interruption on 10.0.0.2", failed_at=10.0, restarted_at=20.0,
                         from_epoch=3, kept_until=9.0, from_batch=12)
    assert r.record(str)["from_batch"] == 12
    assert "from checkpoint epoch 3 batch 12, after: spot interruption on 10.0.0.2" in restarts.marker(r, 1)


def test_training_under_way_is_read_from_the_trainers_own_lines():
    """Rank 0 may be asked once its `rank R of N:` line is out (its kvstore is up; the SIGUSR1 handler was
    installed first thing), or a batch or epoch line; not before (e.g. `Learning rate=` comes earlier)."""
    from mxlaunch.launcher.jobs.spot import TRAINED
    ready = [b"2026-11-27 12:00:01,5 Node[0] rank 0 of 2: 1438 examples, 45 updates (global batches of 2 x 16) "
             b"per epoch, epochs 0..9", b"Node[0] Epoch[3] Batch [20-40]\tSpeed: 1.0 samples/sec",
             b"Node[0] Epoch[3] Train-accuracy=0.9"]
    early = [b"Node[0] Epoch[0] Learning rate=0.1", b"[12:00:00] ../src/io/iter_image_recordio_2.cc:177: ..."]
    assert all(TRAINED.search(line) for line in ready) and not any(TRAINED.search(line) for line in early)
