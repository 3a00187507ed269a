"""`launch train` as one typed request (launcher/jobs/request.py), checked in one place before anything is
resolved, and one function per mode (launcher/jobs/modes.py)."""
from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import pytest

from mxlaunch.errors import UsageError
from mxlaunch.infra.transport.hosts import Host
from mxlaunch.infra.transport.ssh import SSHOptions
from mxlaunch.infra.transport.target import JobTarget
from mxlaunch.launcher.cli.train import train
from mxlaunch.launcher.jobs import detached, modes, where
from mxlaunch.launcher.jobs.plan import JobSpec
from mxlaunch.launcher.jobs.request import DETACH, DETACHED, NEW, RESUME, TrainRequest, parse

pytestmark = pytest.mark.timeout(60)


def test_every_option_of_launch_train_is_a_field_of_the_request():
    options = {p.name for p in train.params}
    fields = {f.name for f in dataclasses.fields(TrainRequest)}
    assert options - {"env_files"} == fields  # --env-file is read into `env`


def _parse(*args):
    """The request click's values make (what the command does with ARGS, short of running it)."""
    with train.make_context("train", list(args)) as ctx:
        return parse(**ctx.params)


def test_the_request_holds_the_environment_resolved_and_the_mode(tmp_path, monkeypatch):
    monkeypatch.setenv("FROM_HERE", "here")
    env_file = tmp_path / "job.env"
    env_file.write_text("A=file\nB=file\n")
    request = _parse("--local", "-n", "2", "--env-file", str(env_file), "--env", "B=flag", "--env", "FROM_HERE",
                     "--env-worker", "W=1", "--", "python", "t.py")
    assert request.env == (("A", "file"), ("B", "file"), ("B", "flag"), ("FROM_HERE", "here"))
    assert (request.env_worker, request.command, request.mode, request.ssh) == ((("W", "1"),), ("python", "t.py"),
                                                                                NEW, None)
    hosts = _parse("--hosts", "a,b", "-n", "1", "--ssh-user", "me", "--accept-new-host-keys", "--", "true")
    assert hosts.ssh == SSHOptions(user="me", accept_new=True)
    assert _parse("--resume", "r").mode == RESUME
    assert _parse("--cluster", "c", "--detach", "-n", "1", "--", "true").mode == DETACH
    assert _parse("--hosts", "h", "-n", "1", "--detached-from", "c", "--", "true").mode == DETACHED
    with pytest.raises(dataclasses.FrozenInstanceError):
        request.local = False


@pytest.mark.parametrize("args, said", [
    (["--local", "-n", "1", "--grace", "0"], "--grace 0: expected a positive number of seconds"),
    (["--local", "-n", "1", "--timeout", "nan"], "--timeout nan: expected a positive number of seconds"),
    (["--local", "-n", "1", "--detach"], "--detach runs the launcher on a cluster's instance 0: give --cluster NAME"),
    (["--local", "-n", "1", "--restart-delay", "-1"], "--restart-delay -1: expected a number of seconds >= 0"),
    (["--local", "-n", "1", "--num-epochs", "3"], "--num-epochs goes with --resume RUN_DIR"),
    (["--resume", "r", "-n", "2"], "--resume RUN_DIR takes the job from RUN_DIR/job.yaml"),
    (["-n", "1"], "choose where the job runs: exactly one of --local, --hosts FILE|h1,h2, --cluster NAME"),
    (["--local", "--cluster", "c", "-n", "1"], "(got --local and --cluster)"),
    (["--local"], "-n/--num-workers is required"),
    (["--local", "-n", "1"], "missing command: put it after '--'"),
    (["--local", "-n", "1", "--env", "1BAD=x", "--", "true"], "'1BAD' is not a valid environment variable name"),
])
def test_each_usage_error_is_one_line_before_anything_is_resolved(args, said):
    with pytest.raises(UsageError) as caught:
        _parse(*args)
    assert said in caught.value.format_message()


def test_a_usage_error_of_a_cluster_job_is_said_before_the_cluster_is_looked_up(tmp_path):
    """--cluster nosuch with a bad option: the option's error (exit 2), not the cluster's, and no AWS call
    (no state, no credentials here: a lookup would fail otherwise)."""
    proc = subprocess.run([sys.executable, "-m", "mxlaunch.launcher", "train", "--cluster", "nosuch", "-n", "1",
                           "--restart-delay", "-1", "--", "true"], capture_output=True, text=True, timeout=30,
                          env=dict(os.environ, MXLAUNCH_HOME=str(tmp_path), AWS_ACCESS_KEY_ID="",
                                   AWS_SECRET_ACCESS_KEY=""))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "--restart-delay -1" in proc.stderr, proc.stderr


def test_detach_hands_the_job_as_resolved_here_to_the_launcher_on_instance0(monkeypatch):
    """A new detached job: the cluster's target and the spec a --cluster job would run (the venv's trainer,
    every GPU), never the command line as typed."""
    cluster = JobTarget(hosts=(Host("10.0.0.1", user="ubuntu"), Host("10.0.0.2", user="ubuntu")),
                        python="/efs/venv/bin/python", workdir="/efs/work", ssh=SSHOptions(user="ubuntu"),
                        gpus_per_host=2, env=(("MXNET_USE_FUSION", "0"),), cluster="c1")
    monkeypatch.setattr(where, "cluster", lambda name, workdir, python, ssh: cluster)
    started = []
    monkeypatch.setattr(detached, "start", lambda request, target, spec, run: started.append((target, spec)) or
                        detached.DetachedRun("c1", run, f"/efs/work/runs/{run}", 42, "/efs/console"))
    modes.train(_parse("--cluster", "c1", "--detach", "-n", "2", "--env", "K=v", "--", "trainer", "fit", "--data-train",
                       "t.rec"))
    (target, spec), = started
    assert target is cluster and spec.hosts == cluster.hosts and spec.watch_spot  # on by default for a cluster
    assert spec.command == ("/efs/venv/bin/trainer", "fit", "--data-train", "t.rec", "--gpus", "0,1")
    assert spec.env == (("MXNET_USE_FUSION", "0"), ("K", "v")) and spec.workdir == "/efs/work"


def test_a_restart_on_a_cluster_takes_the_hosts_the_repair_left(monkeypatch):
    """Before a restart under --cluster the next attempt's job is a new value: the cluster made whole, the
    user's settings over it, its hosts in the spec (where.made_whole)."""
    from mxlaunch.infra.cloud import repair

    before = JobTarget(hosts=(Host("10.0.0.1", user="ubuntu"),), python="/p", workdir="/w",
                       ssh=SSHOptions(user="ubuntu", config_path="/cfg"), cluster="c1")
    after = dataclasses.replace(before, hosts=(Host("10.0.0.9", user="ubuntu"),), python="/efs/venv/bin/python",
                                workdir="/efs/work")
    spec = JobSpec(command=("true",), num_workers=1, num_servers=1, hosts=before.hosts, local=False)
    asked = []
    monkeypatch.setattr(repair, "restart_hosts", lambda name, addresses, doomed, echo: asked.append(
        (name, addresses, tuple(doomed))) or after)
    target, respec = where.made_whole(before, spec, SSHOptions(user="me"), ["10.0.0.1"], print)
    assert asked == [("c1", ["10.0.0.1"], ("10.0.0.1",))]
    assert target.hosts == respec.hosts == after.hosts and (target.python, target.workdir) == ("/p", "/w")
    assert (target.ssh.user, target.ssh.config_path) == ("me", "/cfg") and spec.hosts == before.hosts
    monkeypatch.setattr(repair, "restart_hosts", lambda *a: None)  # every host answers: the same job
    assert where.made_whole(before, spec, SSHOptions(), [], print) == (before, spec)
