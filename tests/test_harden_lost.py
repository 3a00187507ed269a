"""A detached run whose instance 0 is gone (a spot loss, `launch cluster repair`): `launch stop --cluster` asks AWS
and, when the launcher's instance is no longer pending or running, marks the run lost and ends; `launch logs
--follow` on instance 0 ends saying why instead of following forever. Instance 0's side is the real `launch`
in its own process on a run directory made here; the cloud is moto; the laptop's SSH to instance 0 is replaced
by running that same command here (no host is contacted)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import boto3
import pytest

from aws_fixtures import AMI, REGION, TAG
from mxlaunch.exits import Exit
from mxlaunch.launcher.jobs import detached, instance0, launcher_record as runstate, lost
from testkit.jobs import launch_argv

pytestmark = pytest.mark.timeout(120)
RUN = "20260101-000000-abcd0123"


@pytest.fixture
def sleeper():
    proc = subprocess.Popen(["sleep", "120"])
    yield proc
    proc.kill()
    proc.wait(10)


def detached_run(runs, pid, **fields):
    """A detached run whose start record says its launcher ran on another machine (EC2's hostname there)."""
    run_dir = runs / RUN
    (run_dir / "logs").mkdir(parents=True)
    (run_dir / "job.yaml").write_text("job_id: abcd0123\nmode: hosts\nnum_workers: 1\n")
    (run_dir / "logs" / "worker-0.log").write_text("Epoch[0] Train-accuracy=0.5\n")
    record = runs / ".detached" / f"{RUN}.json"
    record.parent.mkdir()
    data = {"pid": pid, "process_start": runstate.process_start(pid), "boot_id": "x", "hostname": "ip-10-0-0-9",
            "started": "2026-01-01T00:00:00.000+00:00", "cluster": "heal", **fields}
    record.write_text(json.dumps(data))
    return run_dir


def launch(*args, timeout=60):
    proc = subprocess.run(launch_argv(*args), capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, env=dict(os.environ, NO_COLOR="1"))
    return proc.returncode, proc.stdout, proc.stderr


# ------------------------------------------------------------------------------------ instance 0's side

def test_stop_on_the_new_instance0_says_why_it_cannot_judge_not_to_run_itself_again(tmp_path, sleeper):
    """Before: exit 10 telling the user to run `launch stop --cluster heal RUN` - the very command that ran."""
    run_dir = detached_run(tmp_path / "runs", sleeper.pid)
    code, out, err = launch("stop", str(run_dir))
    assert code == Exit.ELSEWHERE and err.count("\n") == 1, (out, err)
    assert "ran on 10.0.0.9, which is not this cluster's instance 0 any more" in err
    assert "asks AWS whether that instance is gone, and if so marks the run lost" in err


def test_a_launcher_whose_instance_aws_no_longer_lists_is_marked_lost(tmp_path, sleeper):
    run_dir = detached_run(tmp_path / "runs", sleeper.pid, address="10.0.0.9")
    code, out, err = launch("stop", str(run_dir), "--live-instances", "10.0.0.5,10.0.0.7")
    assert code == 0, (out, err)
    assert "ran on 10.0.0.9, which AWS no longer lists among cluster heal's running instances" in out
    assert sleeper.poll() is None  # a process of this machine that merely has the same pid: never signalled
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["reason"] == runstate.LOST and runstate.state(str(run_dir)) == runstate.ENDED
    code, out, err = launch("runs", "--dir", str(tmp_path / "runs"))
    assert code == 0 and "launcher lost" in out, (out, err)
    code, out, err = launch("logs", str(run_dir), "--follow", timeout=30)
    assert code == 0 and out == "Epoch[0] Train-accuracy=0.5\n", (out, err)
    code, out, err = launch("stop", str(run_dir), "--live-instances", "10.0.0.5")
    assert code == 0 and "had already ended (summary: launcher lost)" in out, (out, err)


def test_a_run_that_cannot_be_marked_lost_is_one_line_and_exit_1(tmp_path, sleeper):
    """Before: exit 70, internal error (IsADirectoryError, or a full disk's OSError)."""
    run_dir = detached_run(tmp_path / "runs", sleeper.pid, address="10.0.0.9")
    (run_dir / "summary.json.tmp").mkdir()  # in the way of the new summary.json
    code, out, err = launch("stop", str(run_dir), "--live-instances", "10.0.0.5")
    assert code == 1 and err.count("\n") == 1 and "could not be marked lost: Is a directory" in err, (code, out, err)
    assert not (run_dir / "summary.json").exists() and sleeper.poll() is None


def test_a_launcher_on_an_instance_aws_lists_as_running_is_not_marked_lost(tmp_path, sleeper):
    run_dir = detached_run(tmp_path / "runs", sleeper.pid, address="10.0.0.9")
    code, out, err = launch("stop", str(run_dir), "--live-instances", "10.0.0.9")
    assert code == Exit.ELSEWHERE and "an instance of heal that AWS lists as running" in err, (out, err)
    assert not (run_dir / "summary.json").exists()


def test_logs_follow_of_a_run_whose_instance0_was_replaced_ends_saying_so(tmp_path, sleeper):
    """Before: it followed forever (no summary.json would ever come, and nothing here could tell)."""
    run_dir = detached_run(tmp_path / "runs", sleeper.pid)
    code, out, err = launch("logs", str(run_dir), "--follow", timeout=30)
    assert code == 1 and out == "Epoch[0] Train-accuracy=0.5\n", (out, err)
    assert err.count("\n") == 1 and "no longer followed" in err and "not this cluster's instance 0 any more" in err


# --------------------------------------------------------------------------- the laptop's side, with moto

@pytest.fixture
def cluster(moto_aws, tmp_path, monkeypatch):
    """Cluster `heal` in moto (two instances: its first, the detached launcher's, and a second) and its local
    state; instance 0's `launch` run here on RUNS under tmp_path."""
    from mxlaunch.infra.cloud import local_state

    local_state.write_meta("heal", region=REGION)
    ec2 = boto3.client("ec2", region_name=REGION)
    made = ec2.run_instances(ImageId=AMI, MinCount=2, MaxCount=2, InstanceType="c5.large", TagSpecifications=[
        {"ResourceType": "instance", "Tags": [{"Key": TAG, "Value": "heal"}]}])["Instances"]
    monkeypatch.setattr(detached, "RUNS", str(tmp_path / "runs"))
    commands = []

    def here(name, words, options=None, out=print, err=lambda line: print(line, file=sys.stderr)):
        argv = launch_argv(*words, *instance0.option_args(**dict(options or {})))
        commands.append(argv[3:])
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        for line in proc.stdout.splitlines():
            out(line)
        for line in proc.stderr.splitlines():
            err(line)
        return proc.returncode

    monkeypatch.setattr(instance0, "launch", here)
    return ec2, [i["InstanceId"] for i in made], [i["PrivateIpAddress"] for i in made], commands


def test_stop_cluster_marks_a_run_lost_once_aws_says_its_instance_is_gone(cluster, tmp_path, sleeper, capsys):
    ec2, ids, addresses, commands = cluster
    run_dir = detached_run(tmp_path / "runs", sleeper.pid, address=addresses[0])
    assert lost.stop_on_cluster("heal", RUN, timeout=5) == Exit.ELSEWHERE  # its instance still runs
    assert "AWS lists as running" in capsys.readouterr().err
    assert not (run_dir / "summary.json").exists()
    ec2.terminate_instances(InstanceIds=[ids[0]])  # the spot loss
    assert lost.stop_on_cluster("heal", RUN, timeout=5) == 0
    said = capsys.readouterr()
    assert f"ran on {addresses[0]}, which AWS no longer lists" in said.out and said.err == "", said
    assert json.loads((run_dir / "summary.json").read_text())["reason"] == runstate.LOST
    assert commands[-1][-2:] == ["--live-instances", addresses[1]]


def test_stop_cluster_of_a_live_launcher_asks_aws_nothing(cluster, tmp_path, monkeypatch, capsys):
    """The usual case: the launcher runs on instance 0 (here, this machine): stopped there, no AWS call."""
    monkeypatch.setattr(lost, "live_addresses", lambda *a: pytest.fail("AWS asked for a launcher that is here"))
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        run_dir = detached_run(tmp_path / "runs", proc.pid, **runstate.machine())
        assert lost.stop_on_cluster("heal", RUN, timeout=10) == 0
        assert proc.wait(10) == -15 and f"stopped run {run_dir}" in capsys.readouterr().out
    finally:
        proc.kill()
        proc.wait(10)
