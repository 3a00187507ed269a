"""`launch train --resume RUN_DIR` of remote runs (issue 11, item 5): the recorded target comes back (hosts,
interpreter, workdir, SSH settings; a cluster by name), flags override it, the checkpoint is looked for where
the workers wrote it (over SSH: the newest epoch every worker host has), and --num-epochs may raise the goal."""
import os
import struct

import pytest
import yaml

from mxlaunch.launcher.jobs import resume, where
from mxlaunch.errors import UsageError
from mxlaunch.launcher.jobs import checkpoints, rundir
from mxlaunch.infra.transport.hosts import Host
from mxlaunch.launcher.jobs.plan import JobSpec, plan_job
from mxlaunch.infra.transport.ssh import SSHOptions
from mxlaunch.infra.transport.target import ssh_target
from testkit import bed as testbed
EMPTY_PARAMS = struct.pack("<QQQQ", 0x112, 0, 0, 0)  # a whole MXNet .params file holding no arrays

pytestmark = pytest.mark.timeout(60)

HOSTS = (Host("10.0.0.1", user="ubuntu", slots=0), Host("10.0.0.2", user="ubuntu", slots=1),
         Host("10.0.0.3", user="ubuntu", slots=1))
COMMAND = ("trainer", "fit", "--data-train", "t.rec", "--num-epoch", "5", "--model-prefix", "ckpt/m")


def _ran(tmp_path, cluster=None, ssh=None, workdir="/efs/work"):
    ssh = ssh or SSHOptions(key="/k/id", user="ubuntu", known_hosts="/k/kh", config_path="/k/cfg")
    target = ssh_target(HOSTS, workdir, "/efs/venv/bin/python", ssh, gpus_per_host=4)
    if cluster:
        import dataclasses
        target = dataclasses.replace(target, cluster=cluster)
    spec = JobSpec(command=COMMAND, num_workers=2, num_servers=1, hosts=HOSTS, local=False, workdir=workdir)
    run_dir = rundir.prepare(str(tmp_path / "run"))
    plan = plan_job(spec, "j1", run_dir, 20001, remote_run_dir=rundir.remote_run_dir(workdir, run_dir, "j1"))
    rundir.write_plan_files(plan, workdir, target)
    return run_dir


def test_the_recorded_target_comes_back_and_flags_override_it(tmp_path):
    run_dir = _ran(tmp_path)
    t = where.recorded_target(run_dir)
    assert not t.local and t.hosts == HOSTS  # slots too
    assert (t.python, t.workdir, t.gpus_per_host) == ("/efs/venv/bin/python", "/efs/work", 4)
    assert (t.ssh.key, t.ssh.user, t.ssh.known_hosts, t.ssh.config_path) == ("/k/id", "ubuntu", "/k/kh", "/k/cfg")
    mine = where.recorded_target(run_dir, "/opt/p", SSHOptions(key="/mine", accept_new=True), workdir="/scratch")
    assert (mine.python, mine.workdir, mine.ssh.key, mine.ssh.accept_new, mine.ssh.known_hosts) == (
        "/opt/p", "/scratch", "/mine", True, "/k/kh")


def epochs(*numbers):
    return {checkpoints.Checkpoint(n) for n in numbers}


def test_checkpoints_are_looked_for_on_the_worker_hosts_newest_that_every_worker_has(tmp_path):
    run_dir = _ran(tmp_path)
    asked = []

    def remote(target, hosts, prefix):
        asked.append((hosts, prefix))
        return {HOSTS[1]: epochs(1, 2, 3), HOSTS[2]: epochs(1, 2)}  # host 2 lags (no shared file system)
    spec, _ = resume.resume_spec(run_dir, target=where.recorded_target(run_dir), num_epochs=12,
                                 remote_checkpoints=remote)
    assert asked == [((HOSTS[1], HOSTS[2]), "/efs/work/ckpt/m")]  # the workers' hosts; the prefix in the workdir
    assert spec.command == ("trainer", "fit", "--data-train", "t.rec", "--model-prefix", "ckpt/m", "--num-epochs", "12", "--load-epoch", "2")
    with pytest.raises(UsageError, match=r"every worker host has .*10\.0\.0\.2: epoch 1, epoch 2, epoch 3 batch 7; "
                                         r".*10\.0\.0\.3: none.*EFS"):
        resume.resume_spec(run_dir, target=where.recorded_target(run_dir), remote_checkpoints=lambda t, h, p: {
            HOSTS[1]: epochs(1, 2) | {checkpoints.Checkpoint(3, 7)}, HOSTS[2]: set()})


def test_num_epochs_replaces_either_spelling_and_must_be_positive():
    assert resume.with_num_epochs(("fit", "--num-epoch", "5", "--num-epochs=6"), 9) == ("fit", "--num-epochs", "9")
    assert resume.with_num_epochs(("fit",), None) == ("fit",)
    with pytest.raises(UsageError):
        resume.with_num_epochs(("fit",), 0)


def test_the_remote_run_directory_is_reused_on_resume_unless_the_workdir_moves(tmp_path):
    run_dir = _ran(tmp_path)
    recorded = yaml.safe_load(open(os.path.join(run_dir, "job.yaml")))["remote_run_dir"]
    assert resume.resume_remote_run_dir(run_dir, "/efs/work", "j1") == recorded == "/efs/work/runs/run-j1"
    assert resume.resume_remote_run_dir(run_dir, "/scratch", "j1") == "/scratch/runs/run-j1"


def test_a_cluster_job_resumes_on_the_cluster_resolved_again(tmp_path, monkeypatch):
    from mxlaunch.infra.cloud import cluster_target as targets
    from mxlaunch.launcher.jobs.request import TrainRequest
    run_dir = _ran(tmp_path, cluster="c1")
    moved = (Host("10.9.0.7", user="ubuntu"),)  # the cluster's instances now have other addresses
    resolved = []

    def cluster_target(name, workdir=None, python=None, ssh=None):
        resolved.append((name, workdir, python))
        return ssh_target(moved, workdir, python, ssh, gpus_per_host=4)
    monkeypatch.setattr(targets, "cluster_target", cluster_target)
    t = where.resume_target(TrainRequest(resume=run_dir))
    assert resolved == [("c1", "/efs/work", "/efs/venv/bin/python")] and t.hosts == moved
    mine = where.resume_target(TrainRequest(resume=run_dir, workdir="/w", python="/p/bin/python"))
    assert resolved[-1] == ("c1", "/w", "/p/bin/python") and mine.hosts == moved  # this launch's flags win


def test_the_launch_train_resume_flags(tmp_path):
    from testkit.jobs import run_launch

    rc, _, err = run_launch("train", "--num-epochs", "3", "--local", "-n", "1", "--", "true", timeout=30)
    assert rc == 2 and "--num-epochs goes with --resume" in err


# ------------------------------------------------------------------------------- over SSH, on the bed
bed = testbed.bed_fixture(3)


@pytest.mark.bed
@pytest.mark.usefixtures("no_agent")
def test_remote_checkpoints_are_listed_on_each_host(bed, tmp_path):
    """The hosts' view (here the bed's shared file system stands in for EFS): PREFIX-NNNN.params only."""
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    for name in ("m-0001.params", "m-0012.params", "m-symbol.json", "m-0003.params.part", "other-0099.params"):
        (ckpt / name).write_bytes(EMPTY_PARAMS if name.endswith(".params") else b"")
    target = ssh_target(bed.hosts, str(tmp_path), "/usr/bin/python3",
                        SSHOptions(key=bed.key, known_hosts=bed.known_hosts))
    found = checkpoints.remote_points(target, bed.hosts[1:], str(ckpt / "m"))
    assert found == {bed.hosts[1]: epochs(1, 12), bed.hosts[2]: epochs(1, 12)}
    assert checkpoints.remote_points(target, bed.hosts[:1], str(tmp_path / "none" / "m")) == {bed.hosts[0]: set()}
