"""A spot notice in `Job` (scripted fake runner and fake clock of tests/job_fakes.py: no process, no sleep):
who watches, rank 0 asked once, the bounded wait, the reason and the noticed hosts; then the restart loop's
resume point with a mid-epoch checkpoint, and the checkpoint search's order."""
import dataclasses
import struct

import pytest

from mxlaunch.exits import Exit
from mxlaunch.launcher import checkpoints, restarts, summary, workload
from mxlaunch.launcher.checkpoints import Checkpoint
from mxlaunch.launcher.hosts import Host
from mxlaunch.launcher.job import SPOT_WAIT, TICK, Reason
from mxlaunch.launcher.plan import JobSpec, plan_job
from mxlaunch.launcher.runner import SpotNotice
from job_fakes import SETTINGS, make_job, run  # the scripted runner and clock

SPOT_SETTINGS = dataclasses.replace(SETTINGS, spot_poll=0.5, spot_wait=SPOT_WAIT)


def asks(role):  # FakeRole.checkpoint: the request is recorded; rank 0 obeys by saving for 3 s, then exits 75
    role.checkpoint_calls = []

    def checkpoint():
        role.checkpoint_calls.append(role.clock.monotonic())
        if not getattr(role, "ignores_checkpoint", False):
            role.end(after=3.0, code=75)
    role.checkpoint = checkpoint


def trains(role):  # a worker that trains until stopped, and obeys a checkpoint request
    asks(role)


def notice_at(at, host_role="scheduler"):
    def script(role):
        asks(role)
        if role.name == "scheduler":
            role.say(f"[12:00:00] src/van.cc:300: Bind to role=scheduler, id=1, ip=127.0.0.1, port={role.port}",
                     after=0.5)
        if role.name == host_role:
            role.clock.later(at, lambda: role.events.put(SpotNotice(role.name, "terminate", "2026-11-27T12:02:00Z")))
    return script


def spot_job(tmp_path, script, **spec):
    return make_job(tmp_path, script=script, settings=SPOT_SETTINGS, watch_spot=True, **spec)


def test_the_first_role_on_each_host_watches_and_only_when_the_job_does():
    hosts = (Host("10.0.0.1", slots=0), Host("10.0.0.2", slots=1), Host("10.0.0.3", slots=1))
    spec = JobSpec(command=("t",), num_workers=2, num_servers=3, hosts=hosts, local=False, watch_spot=True)
    plan = plan_job(spec, "j", "/r", 20001)
    assert plan.spot_watchers() == ("scheduler", "server-1", "server-2")
    assert [r.host.address for r in plan.roles if r.name in plan.spot_watchers()] == ["10.0.0.1", "10.0.0.2",
                                                                                      "10.0.0.3"]
    assert plan_job(dataclasses.replace(spec, watch_spot=False), "j", "/r", 20001).spot_watchers() == ()


def test_a_notice_asks_rank_0_once_and_ends_the_job_when_it_has_saved(tmp_path):
    script = {"scheduler": notice_at(4.0), "server": trains, "worker": trains}
    job, runner, clock = spot_job(tmp_path, script)
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
    text = "spot interruption notice for 127.0.0.1 (action terminate at 2026-11-27T12:02:00Z): asking rank 0 to checkpoint"
    assert text in outcome.notes
    for name in ("scheduler", "server-0", "worker-0", "worker-1"):  # every log says it
        assert text in (tmp_path / "logs" / f"{name}.log").read_text()


def test_rank_0_gets_a_bounded_wait_and_a_second_notice_asks_nothing_more(tmp_path):
    def stuck_rank0(role):
        asks(role)
        role.ignores_checkpoint = True
    script = {"scheduler": notice_at(4.0), "server": notice_at(6.0, "server-0"), "worker": trains,
              "worker-0": stuck_rank0}
    job, runner, clock = spot_job(tmp_path, script, num_servers=1)
    t0 = clock.now
    outcome = run(job)
    assert runner.role("worker-0").checkpoint_calls == [pytest.approx(t0 + 4.0, abs=TICK)]
    assert runner.role("worker-0").stop_calls == [pytest.approx(t0 + 4.0 + SPOT_WAIT, abs=TICK)]
    assert outcome.reason is Reason.SPOT and outcome.spot_hosts == ("127.0.0.1",)  # one host, told twice
    assert any(f"did not end within {SPOT_WAIT:g}s" in n for n in outcome.notes)


def test_a_notice_after_every_worker_finished_changes_nothing(tmp_path):
    script = {"scheduler": notice_at(3.0), "server": trains,
              "worker": lambda role: (asks(role), role.end(after=2.0, code=0))}
    job, runner, clock = spot_job(tmp_path, script)
    outcome = run(job)
    assert outcome.reason is Reason.OK and outcome.spot_hosts == ("127.0.0.1",)
    assert runner.role("worker-0").checkpoint_calls == []


@pytest.mark.parametrize("watch", [True, False])
def test_a_watching_jobs_first_role_per_host_is_launched_with_the_poll_interval(tmp_path, watch):
    job, runner, _ = make_job(tmp_path, settings=SPOT_SETTINGS, watch_spot=watch)
    assert run(job).reason is Reason.OK
    polls = {r.name: r.launch.spot_poll for r in runner.started}
    assert polls == {"scheduler": 0.5 if watch else None, "server-0": None, "worker-0": None, "worker-1": None}


# ------------------------------------------------------------------------------------------ resume point

def test_checkpoints_order_by_epoch_then_batch_and_mid_epoch_ones_are_found(tmp_path):
    names = ["m-symbol.json", "m-0003.params", "m-0003-000012.params", "m-0003-000007.params", "m-0004.params.tmp-9",
             "m-0003-000000.params", "m-0002-000040.params", "other-0009.params", "m-0003-000012.states"]
    found = checkpoints.checkpoints_in(names, "m")
    assert sorted(found) == [Checkpoint(2, 40), Checkpoint(3), Checkpoint(3, 7), Checkpoint(3, 12)]
    assert Checkpoint(3, 12) < Checkpoint(4) and str(Checkpoint(3, 12)) == "epoch 3 batch 12"
    assert Checkpoint(3, 12).params("/c/m") == "/c/m-0003-000012.params"
    assert checkpoints.checkpoint_epochs(names, "m") == {3}
    # on disk: a cut-short newest one is skipped for the previous whole one
    whole = struct.pack("<QQQQ", 0x112, 0, 0, 0)  # a whole MXNet .params file holding no arrays
    for name in ("m-symbol.json", "m-0003.params", "m-0003-000007.params"):
        (tmp_path / name).write_bytes(whole)
    (tmp_path / "m-0003-000012.params").write_bytes(whole[:-3])
    assert checkpoints.newest_local(str(tmp_path / "m")) == Checkpoint(3, 7)
    spec = JobSpec(command=("t",), num_workers=1, num_servers=1, hosts=(Host.loopback(),), workdir=str(tmp_path))
    target = type("T", (), {"local": True})()
    assert checkpoints.newest_everywhere(target, spec, "m") == (Checkpoint(3, 7), {})


def test_a_remote_job_resumes_from_the_newest_point_every_worker_host_has():
    hosts = (Host("10.0.0.1", slots=1), Host("10.0.0.2", slots=1))
    spec = JobSpec(command=("t",), num_workers=2, num_servers=1, hosts=hosts, local=False, workdir="/efs/w")
    target = type("T", (), {"local": False})()
    listing = {hosts[0]: {2, Checkpoint(2, 30)}, hosts[1]: {Checkpoint(2), Checkpoint(2, 30), 3}}
    assert checkpoints.newest_everywhere(target, spec, "ck/m", lambda t, h, p: listing)[0] == Checkpoint(2, 30)


def test_the_restart_command_and_record_carry_the_batch():
    cmd = ("trainer", "fit", "--load-epoch", "1", "--load-batch", "9", "--model-prefix", "m")
    assert workload.with_load_epoch(cmd, 3, 12) == ("trainer", "fit", "--model-prefix", "m", "--load-epoch", "3",
                                                    "--load-batch", "12")
    assert workload.with_load_epoch(cmd, 4) == ("trainer", "fit", "--model-prefix", "m", "--load-epoch", "4")
    r = restarts.Restart(attempt=1, reason="spot interruption on 10.0.0.2", failed_at=10.0, restarted_at=20.0,
                         from_epoch=3, kept_until=9.0, from_batch=12)
    assert r.record(str)["from_batch"] == 12
    assert "from checkpoint epoch 3 batch 12, after: spot interruption on 10.0.0.2" in restarts.marker(r, 1)
