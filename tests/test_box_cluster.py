"""Acceptance of issue 11: the whole cluster path on a cluster in a box (tests/fixtures_box.py): up with the
real install (a wheelhouse made here with `pip download`, --extra cpu, one venv on /efs) -> put the digits
-> exec -> launch train --cluster (3 workers, 3 servers, as ubuntu) -> --resume with more epochs -> down.

The hosts see neither the checkout nor this run's tmp directories: every path a role uses is on /efs or
under its own run directory there, and what the launcher keeps comes back over SSH."""
import os
import pwd

import pytest

from digits_recipe import fit_args, read_metrics
from fixtures_box import NO_IMDS, box_up_args
from mxlaunch.testing import bed as testbed

pytestmark = [pytest.mark.bed, pytest.mark.aws, pytest.mark.slow, pytest.mark.timeout(900)]
BOX_CAPACITY = 3
NAME = "acc"
# put's default destination, and checkpoints on EFS: the user data gives the login user /efs and /efs/data
DATA_DEST = "/efs/data/"
CKPT = "/efs/ckpt"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_up_put_exec_train_resume_down(box, wheelhouse, digits_dir, tmp_path):
    # up --wait ssh: one install on instance 0, from the wheelhouse alone; every instance verified
    code, out, err = box.launch("cluster", "up", NAME, *box_up_args(box, 3, "g5.12xlarge", "--wait", "ssh",
                                                                    "--extra", "cpu", "--wheelhouse", wheelhouse),
                                timeout=600)
    assert code == 0, err[-3000:]
    assert err.count("installing mxlaunch[cpu] into /efs/mxlaunch/venv") == 1 and f"on {NAME}-0" in err
    assert "imports mxnet and mxlaunch on 3 instance(s)" in err

    # put: the digits RecordIO onto EFS; a second put copies nothing
    code, out, err = box.launch("cluster", "put", NAME, digits_dir, timeout=120)  # to the default, DATA_DEST
    assert code == 0 and "copied 4 file(s)" in out, err
    code, out, err = box.launch("cluster", "put", NAME, digits_dir, timeout=120)  # to the default, DATA_DEST
    assert code == 0 and "copied 0 file(s)" in out and "4 already there" in out, err
    data = f"{DATA_DEST}{os.path.basename(digits_dir)}"

    # exec: the remote exit status; --all prefixes every instance's output
    code, _, _ = box.launch("cluster", "exec", NAME, "2", "--", "sh", "-c", "exit 5")
    assert code == 5
    code, out, err = box.launch("cluster", "exec", NAME, "--all", "--", "whoami")
    assert code == 0 and sorted(out.splitlines()) == [f"[{NAME}-{i}] ubuntu" for i in range(3)], err

    # train on the cluster: as ubuntu, nothing of the launcher's paths on the hosts, ranks 0..2
    run_dir = str(tmp_path / "run")  # the hosts cannot see it
    train = fit_args(data, f"{CKPT}/digits", 16)  # --extra cpu: no --gpus is added (the CPU build)
    code, out, err = box.launch("train", "--cluster", NAME, "-n", 3, "-s", 3, "--run-dir", run_dir, *NO_IMDS,
                                "--env", "OMP_NUM_THREADS=1", "--", "trainer", *train, timeout=400)
    assert code == 0, err[-3000:]
    metrics = read_metrics(os.path.join(run_dir, "metrics.jsonl"))
    assert metrics[-1]["epoch"] == 9 and metrics[-1]["validation-accuracy"] >= 0.97, metrics[-1]
    assert open(os.path.join(run_dir, "accuracy.png"), "rb").read(4) == b"\x89PNG"
    roles = ["scheduler"] + [f"server-{i}" for i in range(3)] + [f"worker-{i}" for i in range(3)]
    assert all(os.path.getsize(os.path.join(run_dir, "logs", f"{r}.log")) > 0 for r in roles)
    ubuntu = pwd.getpwnam("ubuntu").pw_uid
    shared = box.bed.shared
    assert os.stat(os.path.join(shared, CKPT[5:], "digits-0010.params")).st_uid == ubuntu  # never root
    with open(os.path.join(run_dir, "job.yaml")) as f:
        job = f.read()
    assert '"cluster": "acc"' in job and "remote_run_dir: \"/efs/mxlaunch/work/runs/run-" in job

    # resume with more epochs: from the newest checkpoint the workers wrote on /efs
    code, out, err = box.launch("train", "--resume", run_dir, "--num-epochs", 12, timeout=300)
    assert code == 0, err[-3000:]
    metrics = read_metrics(os.path.join(run_dir, "metrics.jsonl"))
    assert [m["epoch"] for m in metrics] == list(range(12))  # the first run's epochs, then 10 and 11
    assert os.path.exists(os.path.join(shared, CKPT[5:], "digits-0012.params"))
    with open(os.path.join(run_dir, "job.yaml")) as f:
        assert '"--load-epoch", "10"' in f.read()

    # the rank-0 run-directory crash, as it was found: --hosts as ubuntu, the launcher's run directory a path
    # that exists only here (rank 0 used to makedirs it on its host and die of PermissionError)
    state = box.cluster_dir(NAME)
    run2 = str(tmp_path / "hosts-run")
    code, out, err = box.launch("train", "--hosts", os.path.join(state, "hosts"), "-n", 2, "-s", 1,
                                "--ssh-key", os.path.join(state, "id_key"), "--known-hosts",
                                os.path.join(state, "known_hosts"), "--python", "/efs/mxlaunch/venv/bin/python",
                                "--workdir", "/efs/mxlaunch/work", "--run-dir", run2, "--env", "OMP_NUM_THREADS=1",
                                "--", "trainer", *fit_args(data, "", 16, "--num-epochs", 1),
                                timeout=200)
    assert code == 0, err[-3000:]
    assert [m["epoch"] for m in read_metrics(os.path.join(run2, "metrics.jsonl"))] == [0]  # fetched back

    # down: nothing tagged, no process left on any host
    code, out, err = box.launch("cluster", "down", NAME, "--yes", timeout=120)
    assert code == 0, err
    left = box.client("ec2").describe_instances(Filters=[{"Name": "tag:launch:cluster", "Values": [NAME]},
                                                         {"Name": "instance-state-name", "Values": ["running"]}])
    assert not [i for r in left["Reservations"] for i in r["Instances"]]
    testbed.wait_for(lambda: not any(
        p for i in range(3) for p in box.bed.job_pids(i)
        if "sshd" not in open(f"/proc/{p}/cmdline").read()), 10, what="no process on any host")
