"""Acceptance of issue 4: the real trainer, dist_sync across 3 bed hosts over SSH, on real handwritten digits.

Scheduler and the server on the first host (slots=0), one worker on each of the two others; the data and
the run directory sit on the file system every bed host shares (it stands in for EFS).
"""
import json
import os
import sys

import pytest

from mxlaunch.testing import bed as testbed
from mxlaunch.testing.jobs import read_log, run_launch

pytestmark = [pytest.mark.skipif(testbed.why_unavailable() is not None, reason=str(testbed.why_unavailable()))]

bed = testbed.bed_fixture(3)
EPOCHS, STEPS, BATCH = 10, (6, 9), 32


@pytest.mark.timeout(290)
def test_digits_dist_sync_across_three_hosts_reaches_97_percent(bed, digits_dir, tmp_path, monkeypatch):
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    run_dir = str(tmp_path / "digits")
    rc, out, err = run_launch(
        "train", "--hosts", bed.hostfile([0, 1, 1]), "-n", "2", "-s", "1", "--python", sys.executable,
        "--ssh-key", bed.key, "--known-hosts", bed.known_hosts, "--run-dir", run_dir, "--workdir", digits_dir,
        "--env", "OMP_NUM_THREADS=1", "--",
        sys.executable, "-m", "mxlaunch.trainer", "fit", "--network", "resnet", "--num-layers", "8",
        "--data-train", "digits_train.rec", "--data-val", "digits_val.rec",
        "--image-shape", "3,28,28", "--pad-size", "0", "--random-mirror", "0",
        "--batch-size", str(BATCH // 2), "--num-epochs", str(EPOCHS), "--lr", "0.1", "--lr-factor", "0.1",
        "--lr-step-epochs", ",".join(map(str, STEPS)), "--seed", "1",
        "--model-prefix", str(tmp_path / "ckpt" / "digits"), timeout=270)
    assert rc == 0, err[-3000:]
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        metrics = [json.loads(line) for line in f]
    assert metrics[-1]["epoch"] == EPOCHS - 1
    assert metrics[-1]["validation-accuracy"] >= 0.97, metrics[-1]
    a0, a1, a2 = (m.address for m in bed.members)
    with open(os.path.join(run_dir, "summary.json")) as f:
        hosts = {r["name"]: r["host"] for r in json.load(f)["roles"]}
    assert hosts == {"scheduler": a0, "server-0": a0, "worker-0": a1, "worker-1": a2}
    for role in ("scheduler", "server-0", "worker-0", "worker-1"):
        assert read_log(run_dir, role).strip(), f"no log from {role}"
    worker_logs = [read_log(run_dir, f"worker-{i}") for i in (0, 1)]
    assert any(f"Epoch[{EPOCHS - 1}] Validation-accuracy=" in log for log in worker_logs)  # MXNet's rank 0
    assert all("Bind to role=worker" in log for log in worker_logs)
    assert f"[worker 1 @{a2}]" in out
    testbed.wait_for(lambda: not any(bed.job_pids(i) for i in range(3)), 5, what="a clean bed")
