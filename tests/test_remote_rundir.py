"""Remote run directories (issue 11, item 4): under --hosts/--cluster roles write under WORKDIR/runs/<id> on
their own hosts, never under the launcher's local run directory; the launcher fetches metrics.jsonl back."""
import logging
import os

import pytest
import yaml

from mxlaunch.launcher.jobs import rundir
from mxlaunch.infra.transport.hosts import Host
from mxlaunch.launcher.jobs.plan import JobSpec, plan_job
from mxlaunch.infra.transport.target import ssh_target
from mxlaunch.trainer.metrics_file import MetricsFile, read

pytestmark = pytest.mark.timeout(60)

HOSTS = (Host("10.0.0.1", slots=1), Host("10.0.0.2", slots=1))


def _spec(workdir="/efs/work", local=False):
    return JobSpec(command=("trainer", "fit", "--data-train", "t.rec"), num_workers=2, num_servers=1,
                   hosts=(Host.loopback(slots=2),) if local else HOSTS, local=local, workdir=workdir)


def test_the_remote_run_directory_is_under_the_workdir_and_carries_the_job_id():
    assert rundir.remote_run_dir("/efs/work", "/home/alice/proj/runs/20261125-120000-ab12cd34", "ab12cd34") == \
        "/efs/work/runs/20261125-120000-ab12cd34"
    assert rundir.remote_run_dir("/efs/work", "/tmp/exp/", "ab12cd34") == "/efs/work/runs/exp-ab12cd34"


def test_remote_roles_get_their_hosts_run_directory_never_the_launchers():
    local_dir = "/home/alice/proj/runs/r-j1"
    plan = plan_job(_spec(), "j1", local_dir, 20001, remote_run_dir="/efs/work/runs/r-j1")
    assert {r.env_dict()["LAUNCH_RUN_DIR"] for r in plan.roles} == {"/efs/work/runs/r-j1"}
    assert plan.run_dir == local_dir and plan.remote_run_dir == "/efs/work/runs/r-j1"
    assert not any(local_dir in v for r in plan.roles for v in r.env_dict().values())
    # a relative workdir (under the login directory): the roles run in it, so theirs is relative to it
    rel = plan_job(_spec("work"), "j1", local_dir, 20001, remote_run_dir="work/runs/r-j1")
    assert {r.env_dict()["LAUNCH_RUN_DIR"] for r in rel.roles} == {"runs/r-j1"}
    # local roles share the launcher's machine: its run directory is theirs
    local = plan_job(_spec("/w", local=True), "j1", local_dir, 20001, remote_run_dir="/ignored")
    assert {r.env_dict()["LAUNCH_RUN_DIR"] for r in local.roles} == {local_dir} and local.remote_run_dir is None


def test_job_yaml_records_the_remote_run_directory_and_where_the_job_ran(tmp_path):
    from mxlaunch.infra.transport.ssh import SSHOptions

    run_dir = rundir.prepare(str(tmp_path / "run"))
    target = ssh_target(HOSTS, "/efs/work", "/efs/venv/bin/python",
                        SSHOptions(key="/k/id", user="ubuntu", known_hosts="/k/kh", config_path="/k/cfg"),
                        gpus_per_host=4)
    plan = plan_job(_spec(), "j1", run_dir, 20001, remote_run_dir="/efs/work/runs/run-j1")
    rundir.write_plan_files(plan, "/efs/work", target)
    data = yaml.safe_load(open(os.path.join(run_dir, "job.yaml")))
    assert data["remote_run_dir"] == "/efs/work/runs/run-j1" and data["run_dir"] == run_dir
    assert data["target"] == {"cluster": None, "python": "/efs/venv/bin/python", "gpus_per_host": 4,
                              "ssh": {"user": "ubuntu", "key": "/k/id", "known_hosts": "/k/kh", "config": "/k/cfg",
                                      "accept_new": False}}


def test_metrics_that_cannot_be_written_are_a_warning_not_a_dead_rank_0(tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("")  # a file where the directory should be: even root cannot create it
    caplog.set_level(logging.WARNING, logger="trainer")
    metrics = MetricsFile(str(blocker / "run" / "metrics.jsonl"), begin_epoch=0)
    metrics.append({"epoch": 0})  # nothing raised: training goes on
    assert metrics.path is None and "cannot write metrics" in caplog.text
    ok = MetricsFile(str(tmp_path / "run" / "metrics.jsonl"), begin_epoch=0)
    ok.append({"epoch": 0})
    assert read(ok.path) == [{"epoch": 0}]


def test_a_bare_trainer_or_python_on_remote_hosts_is_the_one_beside_the_jobs_interpreter():
    from mxlaunch.launcher.jobs.where import on_hosts as _on_hosts

    target = ssh_target(HOSTS, "/efs/work", "/efs/venv/bin/python", None)
    assert _on_hosts(("trainer", "fit", "--data-train", "t.rec"), target) == ("/efs/venv/bin/trainer", "fit",
                                                                             "--data-train", "t.rec")
    assert _on_hosts(("python", "-m", "x"), target) == ("/efs/venv/bin/python", "-m", "x")
    assert _on_hosts(("/opt/bin/trainer", "fit"), target) == ("/opt/bin/trainer", "fit")
    assert _on_hosts(("bash", "-c", "x"), target) == ("bash", "-c", "x")
