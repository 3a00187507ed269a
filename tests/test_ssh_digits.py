"""The real trainer, dist_sync across 3 bed hosts over SSH, on real handwritten digits: where every role runs,
that worker-0 is MXNet's rank 0, that every role logs, that the console names each worker's host, and that
each role's profile (--profile-worker/server-suffix, written on its own host) is brought into the run directory.

Scheduler and the server on the first host (slots=0), one worker on each of the two others; the data sit on
the file system every bed host shares (it stands in for EFS). The full schedule to >= 97% over
SSH, as `ubuntu` on DLAMI-like hosts, is tests/test_box_cluster.py's (the same path and more; running both
would cost the suite a minute). One epoch here.
"""
import json
import os
import sys

import pytest

from digits_recipe import fit_args, read_metrics
from testkit import bed as testbed
from testkit.jobs import read_log, run_launch, ssh_args

pytestmark = [pytest.mark.bed, pytest.mark.slow, pytest.mark.usefixtures("no_agent")]

bed = testbed.bed_fixture(3)
BATCH = 32  # the global batch: 2 x 16
EPOCHS = 1  # learning is all this test asks (>= 0.5 where chance is 0.1): the box trains the schedule


@pytest.mark.timeout(290)
def test_digits_dist_sync_across_three_hosts_ranks_logs_and_hosts(bed, digits_dir, tmp_path):
    run_dir = str(tmp_path / "digits")
    rc, out, err = run_launch(
        *ssh_args(bed, "--run-dir", run_dir, "--workdir", digits_dir, "--env", "OMP_NUM_THREADS=1"), "--",
        sys.executable, "-m", "mxlaunch.trainer",
        *fit_args("", str(tmp_path / "ckpt" / "digits"), BATCH // 2, "--num-epochs", EPOCHS,
                  "--profile-worker-suffix", "worker.json", "--profile-server-suffix", "server.json"),
        timeout=270)
    assert rc == 0, err[-3000:]
    metrics = read_metrics(os.path.join(run_dir, "metrics.jsonl"))
    assert metrics[-1]["epoch"] == EPOCHS - 1
    assert metrics[-1]["validation-accuracy"] >= 0.5, metrics[-1]  # learning: chance is 0.1
    a0, a1, a2 = (m.address for m in bed.members)
    with open(os.path.join(run_dir, "summary.json")) as f:
        hosts = {r["name"]: r["host"] for r in json.load(f)["roles"]}
    high, low = sorted((a1, a2), reverse=True)  # ps-lite ranks by address, descending as text
    assert hosts == {"scheduler": a0, "server-0": a0, "worker-0": high, "worker-1": low}
    for role in ("scheduler", "server-0", "worker-0", "worker-1"):
        assert read_log(run_dir, role).strip(), f"no log from {role}"
    worker_logs = [read_log(run_dir, f"worker-{i}") for i in (0, 1)]
    assert f"Epoch[{EPOCHS - 1}] Validation-accuracy=" in worker_logs[0]  # worker-0 is MXNet's rank 0
    assert "Validation-accuracy=" not in worker_logs[1]
    assert all("Bind to role=worker" in log for log in worker_logs)
    assert f"[worker 1 @{low}]" in out
    for name in ("rank0_worker.json", "rank1_worker.json", "rank0_server.json"):  # MXNet's chrome traces
        with open(os.path.join(run_dir, name)) as f:
            assert json.load(f)["traceEvents"], name
    testbed.wait_for(lambda: not any(bed.job_pids(i) for i in range(3)), 5, what="a clean bed")
