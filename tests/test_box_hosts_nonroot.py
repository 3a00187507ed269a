"""Regression (issue 11): under --hosts, rank 0 must not need the launcher's run directory on its host.

The defect: every role got the launcher's own absolute run directory ($LAUNCH_RUN_DIR), and rank 0 called
os.makedirs on it on its host; on a real cluster that path does not exist there and the login user `ubuntu`
may not create it (PermissionError), which killed the whole dist_sync job. The SSH bed hid it (root, one file
system); the box's hosts do not: `ubuntu`, their own /home and /tmp/pytest-of-*, only /efs shared.
Checked to fail on the code before the fix: "trainer: error: PermissionError: [Errno 13] Permission denied:
'/tmp/pytest-of-root/pytest-N'" from worker 1 (MXNet rank 0), every other role stopped.
"""
from __future__ import annotations

import os
import shutil

import pytest

from digits_recipe import fit_args, read_metrics
from fixtures_box import box_up_args

pytestmark = [pytest.mark.bed, pytest.mark.aws, pytest.mark.slow]
BOX_CAPACITY = 3
WORKDIR = "/efs/mxlaunch/work"  # the cluster's workdir (ubuntu's, by the user data)


@pytest.mark.timeout(300)
def test_digits_under_hosts_as_ubuntu_exits_0_with_metrics_fetched_back(box, digits_dir, tmp_path):
    code, _, err = box.launch("cluster", "up", "nr", *box_up_args(box, 3))
    assert code == 0, err
    try:
        data = os.path.join(box.bed.shared, "data")  # what `launch cluster put` will do
        os.makedirs(data, exist_ok=True)
        for name in os.listdir(digits_dir):
            shutil.copy(os.path.join(digits_dir, name), data)
        python = box.host_python()
        hostfile = tmp_path / "hosts"
        hostfile.write_text("".join(f"ubuntu@{m.address} slots={s}\n" for m, s in zip(box.bed.members, (0, 1, 1))))
        run_dir = tmp_path / "run"  # the launcher's: no host can see it, and ubuntu could not make it there
        code, out, err = box.launch(
            "train", "--hosts", hostfile, "-n", 2, "-s", 1, "--python", python,
            "--ssh-key", os.path.join(box.cluster_dir("nr"), "id_key"), "--known-hosts", box.bed.known_hosts,
            "--run-dir", run_dir, "--workdir", WORKDIR, "--env", "OMP_NUM_THREADS=1", "--",
            python, "-m", "mxlaunch.trainer", *fit_args("/efs/data", f"{WORKDIR}/ckpt/digits", 16, "--num-epochs", 1),
            timeout=240)
        assert code == 0, err[-3000:]
        metrics = read_metrics(run_dir / "metrics.jsonl")
        assert [m["epoch"] for m in metrics] == [0]
        assert all(box.bed.job_pids(i) == [] for i in range(3))
    finally:
        code, _, err = box.launch("cluster", "down", "nr", "--yes")
        assert code == 0, err
