"""Acceptance of issue 13, item 4, in the box: a stub metadata service (IMDSv2) runs inside ONE box host's
network namespace, on that host's own 127.0.0.1, and the job's --env AWS_EC2_METADATA_SERVICE_ENDPOINT points
every host's watcher there (the other hosts find nothing on their 127.0.0.1: no notice). `launch train --cluster
--max-restarts 1`: rank 0 checkpoints mid-epoch on the notice, the job restarts from that batch and finishes,
and the work redone is at most what docs/jobs.md promises (none of rank 0's batches before the notice).

Uses the session's installed cluster (tests/fixtures_box.py `healing_cluster`) and leaves it running. As the real
metadata service does until the instance is gone, the stub keeps serving the notice: the restart must first
replace the noticed instance (a spare box host), or the next attempt would be noticed again."""
import os
import re
import subprocess
import sys
import uuid

import pytest

from digits_recipe import fit_args, read_metrics
from testkit import imds
from testkit.image import inside_argv
from testkit.jobs import end_launch, read_log, summary, wait_for
from testkit.streams import Output

pytestmark = [pytest.mark.bed, pytest.mark.aws, pytest.mark.slow, pytest.mark.timeout(900)]
IMDS_PORT = 18169  # on the noticed host's own loopback (a namespace of its own: nothing else listens there)
EPOCHS = 8  # the notice comes in epoch 2 or later (read within 5 s): it lands well before the end
BATCH_LINE = re.compile(r"Epoch\[(\d+)\] Batch \[(\d+)-(\d+)\]")


def batches(text: str) -> list:
    """(epoch, batches done) of every progress line, in order."""
    return [(int(m.group(1)), int(m.group(3))) for m in BATCH_LINE.finditer(text)]


def test_a_spot_notice_on_one_instance_checkpoints_rank_0_mid_epoch_and_the_job_finishes(healing_cluster, tmp_path):
    box, name, bed = healing_cluster.box, healing_cluster.name, healing_cluster.box.bed
    run_dir = str(tmp_path / "run")
    running = [i for r in box.client("ec2").describe_instances(Filters=[
        {"Name": "tag:launch:cluster", "Values": [name]},
        {"Name": "instance-state-name", "Values": ["running"]}])["Reservations"] for i in r["Instances"]]
    noticed = sorted(i["PrivateIpAddress"] for i in running)[0]
    host = next(m for m in bed.members if m.address == noticed)
    tag = uuid.uuid4().hex[:8]
    notice_file, served_file = f"spot-{tag}.on", f"spot-{tag}.served"  # on /efs: the host and this test see them
    with open(imds.__file__) as f:
        source = f.read()
    stub = subprocess.Popen(inside_argv(host.sshd_pid) + ["/usr/bin/python3", "-c", source, str(IMDS_PORT),
                                                          f"/efs/{notice_file}", f"/efs/{served_file}"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    proc = None
    try:
        assert Output(stub.stdout).readline(15).startswith(b"listening"), "the stub did not start"
        argv = [sys.executable, "-m", "mxlaunch.launcher", "train", "--cluster", name, "-n", "3", "-s", "1",
                "--run-dir", run_dir, "--max-restarts", "1", "--restart-delay", "0", "--env", "OMP_NUM_THREADS=1",
                "--env", f"AWS_EC2_METADATA_SERVICE_ENDPOINT=http://127.0.0.1:{IMDS_PORT}",
                "--", "trainer", *fit_args(healing_cluster.data, f"/efs/ckpt/spot-{tag}/digits", 16,
                                           "--num-epochs", EPOCHS)]
        with open(tmp_path / "out", "w") as out_f, open(tmp_path / "err", "w") as err_f:
            proc = subprocess.Popen(argv, env=box.env(), stdout=out_f, stderr=err_f, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
        wait_for(lambda: any(e >= 2 for e, _ in batches(read_log(run_dir, "worker-0"))), 300, interval=0.2,
                 what="rank 0 in epoch 2")
        open(os.path.join(bed.shared, notice_file), "w").close()
        wait_for(lambda: os.path.exists(os.path.join(bed.shared, served_file)), 30, interval=0.2,
                 what="the notice to be read")
        code = proc.wait(timeout=480)
    finally:
        if proc is not None:
            end_launch(proc, run_dir)
        stub.kill()
        stub.wait(timeout=10)
    err = (tmp_path / "err").read_text()
    assert code == 0, err[-4000:]
    with open(os.path.join(bed.shared, served_file)) as f:
        assert len(f.read().splitlines()) == 1  # one watcher read it, once; the next attempt ran without that host
    assert "spot interruption notice: " in err and f"({noticed})" in err.split("spot interruption notice: ")[1]
    new_host = [e["address"] for e in box.booted()][-1]
    with open(os.path.join(run_dir, "job.yaml")) as f:
        job = f.read()
    assert noticed not in job and new_host in job  # the attempt that finished ran on the replacement
    (restart,) = summary(run_dir)["restarts"]
    assert restart["reason"] == f"spot interruption on {noticed}"
    epoch, batch = restart["from_epoch"], restart["from_batch"]
    # mid-epoch (batch > 0) unless the notice reached rank 0 during its epoch's last batch or validation: then
    # it finished the epoch and saved that (tests/test_trainer_interrupt.py proves the mid-epoch resume exact)
    # what rank 0 had done when the notice reached the launcher: its checkpoint keeps all of it
    rank0 = read_log(run_dir, "worker-0")
    mark = rank0.index(f"spot interruption notice for {noticed}")
    before = batches(rank0[:mark])
    assert before and (epoch, batch) >= before[-1], (restart, before[-1])
    # and nothing of it is redone: the restarted rank 0 goes on from that batch
    after = batches(rank0[rank0.index("===== launch: restart 1 of 1"):])
    assert after and after[0] > (epoch, batch), (restart, after[0])  # progress lines come every 20 batches
    metrics = read_metrics(os.path.join(run_dir, "metrics.jsonl"))
    assert [m["epoch"] for m in metrics] == list(range(EPOCHS))  # the job finished, each epoch once
