"""Files roles write into the run directory come back when the hosts do not share it (no EFS for it)."""
import json
import os
import sys

import pytest

from testkit import bed as testbed
from testkit.jobs import run_launch, ssh_args

pytestmark = [pytest.mark.bed, pytest.mark.timeout(90), pytest.mark.usefixtures("no_agent")]

bed = testbed.bed_fixture(3)

# worker 0 writes one epoch of metrics where the launcher said, and tells whether it sees the launcher's files
ROLE = r"""
import json, os
d = os.environ["LAUNCH_RUN_DIR"]
if os.environ["LAUNCH_ROLE"] == "worker-0":
    print("sees job.yaml:", os.path.exists(os.path.join(d, "job.yaml")), flush=True)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "metrics.jsonl"), "w") as f:
        f.write(json.dumps({"epoch": 0, "lr": 0.1, "train-accuracy": 0.5, "validation-accuracy": 0.625,
                            "samples/sec": 1.0, "seconds": 1.0, "host": os.environ["DMLC_NODE_HOST"]}) + "\n")
"""


def test_metrics_written_on_hosts_without_the_run_directory_are_fetched(bed, tmp_path):
    private = str(tmp_path / "private")
    for i in (1, 2):  # the worker hosts get an empty tmpfs over `private`: they do not share it with us
        bed.stop_sshd(i)
        bed.start_sshd(i, private_dir=private)
    run_dir = os.path.join(private, "run")
    workdir = tmp_path / "work"  # the roles' side: they write WORKDIR/runs/<id>, never the launcher's run_dir
    workdir.mkdir()
    rc, out, err = run_launch(*ssh_args(bed, "--run-dir", run_dir, "--workdir", str(workdir)), "--",
                              sys.executable, "-c", ROLE, timeout=80)
    assert rc == 0, err
    assert "sees job.yaml: False" in out  # the worker's host really does not see our run directory
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        record = json.loads(f.readline())
    worker0 = max((bed.members[1].address, bed.members[2].address))  # ps-lite's rank order: address descending
    assert record["host"] == worker0 and record["validation-accuracy"] == 0.625
    with open(os.path.join(run_dir, "accuracy.png"), "rb") as f:  # the plot used the fetched metrics
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert not os.path.exists(os.path.join(run_dir, "metrics.jsonl.part"))
