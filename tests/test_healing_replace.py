"""Acceptance of issue 13, item 3, in the box: a host's instance is terminated mid-run (moto's TerminateInstances
and that host's roles killed) -> the restart first makes the cluster whole with a new box host (a spare one,
handed out by RunInstances), re-plans the roles on the hosts as they are now, and the job finishes >= 97%.

Also issue 11's run path on a cluster (logs, plot, checkpoints as ubuntu, then --resume with more epochs).
Uses the session's installed cluster (tests/fixtures_box.py `healing_cluster`) and leaves it running."""
import json
import os
import pwd
import re
import signal
import subprocess
import sys

import pytest
import yaml

from digits_recipe import EPOCHS, fit_args, read_metrics
from fixtures_box import NO_IMDS
from testkit import procs
from testkit.jobs import end_launch, summary, wait_for

pytestmark = [pytest.mark.bed, pytest.mark.aws, pytest.mark.slow, pytest.mark.timeout(900)]
EPOCH = re.compile(r"Epoch\[(\d+)\]")


def instances(box, name: str) -> list:
    """The cluster's running instances in launch order (what `launch cluster status` numbers 0, 1, ...)."""
    found = [i for r in box.client("ec2").describe_instances(Filters=[
        {"Name": "tag:launch:cluster", "Values": [name]},
        {"Name": "instance-state-name", "Values": ["running"]}])["Reservations"] for i in r["Instances"]]
    return sorted(found, key=lambda i: (i["LaunchTime"], i["AmiLaunchIndex"], i["InstanceId"]))


def tag(instance: dict, key: str):
    return {t["Key"]: t["Value"] for t in instance.get("Tags", [])}.get(key)


def address(host) -> str:
    """The address of a job.yaml host line (`[user@]address[:port] slots=N`)."""
    return host.split()[0].rpartition("@")[2].split(":")[0]


def newest_epoch(run_dir: str) -> int:
    try:
        with open(os.path.join(run_dir, "logs", "worker-0.log"), errors="replace") as f:
            return max((int(n) for n in EPOCH.findall(f.read())), default=-1)
    except FileNotFoundError:
        return -1


def kill_roles(bed, index: int) -> list:
    """SIGKILL the job's roles on host `index` (what a vanished instance does to them); sshd stays."""
    roles = [pid for pid in bed.job_pids(index) if b"DMLC_ROLE" in (procs.environ(pid) or {})]
    for pid in roles:
        os.kill(pid, signal.SIGKILL)
    return roles


def test_a_terminated_instance_is_replaced_and_the_job_finishes(healing_cluster, tmp_path):
    box, name = healing_cluster.box, healing_cluster.name
    before = instances(box, name)
    assert len(before) == 3
    lost = before[1]
    lost_ip = lost["PrivateIpAddress"]
    host = next(m.index for m in box.bed.members if m.address == lost_ip)
    booted_before = {e["address"] for e in box.booted()}
    run_dir = str(tmp_path / "run")
    argv = [sys.executable, "-m", "mxlaunch.launcher", "train", "--cluster", name, "-n", "3", "-s", "3",
            "--run-dir", run_dir, "--max-restarts", "1", "--restart-delay", "0", *NO_IMDS, "--env", "OMP_NUM_THREADS=1",
            "--", "trainer", *fit_args(healing_cluster.data, "/efs/ckpt/replace/digits", 16)]
    with open(tmp_path / "out", "w") as out, open(tmp_path / "err", "w") as err:
        proc = subprocess.Popen(argv, env=box.env(), stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    try:
        wait_for(lambda: newest_epoch(run_dir) >= 3, 300, interval=0.2, what="the workers to reach epoch 3")
        box.client("ec2").terminate_instances(InstanceIds=[lost["InstanceId"]])
        assert kill_roles(box.bed, host)
        box.bed.stop_sshd(host)  # a box host outlives its instance: its sshd goes too, as the machine would
        code = proc.wait(timeout=480)
    finally:
        end_launch(proc, run_dir)
    err = (tmp_path / "err").read_text()
    assert code == 0, err[-4000:]
    assert len(summary(run_dir)["restarts"]) == 1
    # the restart made the cluster whole: one new instance, booted on a spare host
    assert f"[launch] repairing cluster {name}: 2 of 3 instance(s) running and reachable" in err, err[-3000:]
    new = [e for e in box.booted() if e["address"] not in booted_before]
    assert len(new) == 1 and new[0]["booted"], box.booted()
    new_ip = new[0]["address"]
    assert new_ip not in {i["PrivateIpAddress"] for i in before}
    assert f"[launch] cluster {name} is whole again: 3 of 3 instance(s), new: {new[0]['instance_id']} ({new_ip})" in err
    assert {i["InstanceId"] for i in instances(box, name)} == \
        {i["InstanceId"] for i in before if i is not lost} | {new[0]["instance_id"]}
    # the replacement inherits the cluster's --max-hours deadline, and terminates on shutdown as every instance
    assert {tag(i, "launch:deadline") for i in instances(box, name)} == {tag(lost, "launch:deadline")} != {None}
    assert box.client("ec2").describe_instance_attribute(
        InstanceId=new[0]["instance_id"], Attribute="instanceInitiatedShutdownBehavior")[
        "InstanceInitiatedShutdownBehavior"]["Value"] == "terminate"
    # ... and the roles were planned on the hosts as they are now
    with open(os.path.join(run_dir, "job.yaml")) as f:
        job = yaml.safe_load(f)
    hosts = {address(h) for h in job["hosts"]}
    assert new_ip in hosts and lost_ip not in hosts and len(hosts) == 3, job["hosts"]
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        assert sorted(json.loads(line)["epoch"] for line in f) == list(range(EPOCHS))  # each epoch once
    metrics = read_metrics(os.path.join(run_dir, "metrics.jsonl"))
    assert metrics[-1]["validation-accuracy"] >= 0.97, metrics[-1]

    # issue 11's run path, on the way: every role's log and the plot kept locally, checkpoints on EFS written
    # as ubuntu (never root), the cluster and the roles' run directory on EFS recorded for --resume
    assert open(os.path.join(run_dir, "accuracy.png"), "rb").read(4) == b"\x89PNG"
    roles = ["scheduler"] + [f"server-{i}" for i in range(3)] + [f"worker-{i}" for i in range(3)]
    assert all(os.path.getsize(os.path.join(run_dir, "logs", f"{r}.log")) > 0 for r in roles)
    params = os.path.join(box.bed.shared, "ckpt", "replace", f"digits-{EPOCHS:04d}.params")
    assert os.stat(params).st_uid == pwd.getpwnam("ubuntu").pw_uid
    assert job["target"]["cluster"] == name and job["remote_run_dir"].startswith("/efs/mxlaunch/work/runs/run-")

    # --resume with more epochs: from the newest checkpoint the workers wrote on /efs, on the cluster as it is
    code, out, err = box.launch("train", "--resume", run_dir, "--num-epochs", EPOCHS + 1, timeout=300)
    assert code == 0, err[-3000:]
    assert [m["epoch"] for m in read_metrics(os.path.join(run_dir, "metrics.jsonl"))] == list(range(EPOCHS + 1))
    assert os.path.exists(os.path.join(box.bed.shared, "ckpt", "replace", f"digits-{EPOCHS + 1:04d}.params"))
    with open(os.path.join(run_dir, "job.yaml")) as f:
        command = yaml.safe_load(f)["command"]
    assert command[command.index("--load-epoch") + 1] == str(EPOCHS), command
