"""Where a job runs (infra/transport/target.py): --local, --hosts and --resume each resolve to one JobTarget
(--cluster's: tests/test_cluster_train.py)."""
import os
import struct
import sys

import pytest

from mxlaunch.launcher.jobs import resume, where
from mxlaunch.launcher.jobs import rundir
from mxlaunch.launcher.jobs.checkpoints import Checkpoint
from mxlaunch.infra.transport.hosts import Host
from mxlaunch.launcher.jobs.plan import JobSpec, plan_job
from mxlaunch.infra.transport.ssh import SSHOptions
from mxlaunch.infra.transport.target import hosts_target, local_target

EMPTY_PARAMS = struct.pack("<QQQQ", 0x112, 0, 0, 0)  # a whole MXNet .params file holding no arrays

pytestmark = pytest.mark.timeout(30)


def test_local_target_runs_every_worker_on_loopback_in_an_absolute_workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    t = local_target("sub")
    assert t.local and t.workdir == str(tmp_path / "sub") and t.ssh is None
    assert t.job_hosts(3) == (Host.loopback(slots=3),)
    assert local_target().workdir is None  # the launcher's own current directory


def test_hosts_target_keeps_the_workdir_as_given_and_defaults_to_this_interpreter():
    ssh = SSHOptions(user="me")
    t = hosts_target("a,u@b:2222", "rel/dir", None, ssh)
    assert not t.local and t.hosts == (Host("a"), Host("b", user="u", port=2222))
    assert t.job_hosts(5) == t.hosts and t.workdir == "rel/dir" and t.ssh is ssh and t.gpus_per_host == 0
    assert t.python == sys.executable
    assert hosts_target("a", None, "/opt/p", ssh).python == "/opt/p"


def _ran(tmp_path, hosts, local):
    (tmp_path / "m-0002.params").write_bytes(EMPTY_PARAMS)
    (tmp_path / "m-symbol.json").write_text("{}")
    spec = JobSpec(command=("trainer", "fit", "--data-train", "t.rec", "--model-prefix", "m"), num_workers=2,
                   num_servers=1, hosts=hosts,
                   local=local, workdir=str(tmp_path))
    run_dir = rundir.prepare(str(tmp_path / "run"))
    rundir.write_plan_files(plan_job(spec, "j", run_dir, 20001), workdir=str(tmp_path))
    return run_dir


def test_resume_target_is_the_recorded_one_with_this_launchs_ssh_settings(tmp_path):
    run_dir = _ran(tmp_path, (Host("h1", slots=1), Host("h2", user="u", port=2200, slots=1)), local=False)
    ssh = SSHOptions(key="/k")
    t = where.recorded_target(run_dir, "/opt/p", ssh)
    assert not t.local and t.hosts == (Host("h1"), Host("h2", user="u", port=2200))
    assert (t.python, t.ssh, t.workdir) == ("/opt/p", ssh, str(tmp_path))
    spec, _ = resume.resume_spec(run_dir, target=t, remote_checkpoints=lambda target, hosts, prefix: {h: {Checkpoint(2)} for h in hosts})
    assert spec.hosts == t.hosts and not spec.local and spec.workdir == str(tmp_path)
    assert spec.command == ("trainer", "fit", "--data-train", "t.rec", "--model-prefix", "m", "--load-epoch", "2")


def test_resume_target_of_a_local_job_is_local(tmp_path):
    run_dir = _ran(tmp_path, (Host.loopback(slots=2),), local=True)
    t = where.recorded_target(run_dir, "/ignored", None)
    assert t.local and t.workdir == str(tmp_path) and t.job_hosts(2) == (Host.loopback(slots=2),)
    assert os.path.isabs(resume.resume_spec(run_dir, target=t, remote_checkpoints=lambda target, hosts, prefix: {h: {Checkpoint(2)} for h in hosts})[1])
