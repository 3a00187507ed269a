"""A spot notice on a job whose launcher cannot replace the noticed host (--local here; --hosts and a detached
launcher alike): with restarts left the job still ends at once, naming the interruption, the repair and
--resume, and spends no restart (restarting on a host AWS keeps noticing would only burn them). The stub
metadata service runs on 127.0.0.1 in this test's thread (mxlaunch.testing.imds)."""
import pytest

from mxlaunch.exits import Exit
from mxlaunch.testing.imds import ImdsStub
from mxlaunch.testing.jobs import PUSHPULL, PY, QUIET_ENV, job_processes, run_launch, summary


@pytest.mark.timeout(120)
def test_a_notice_is_not_restarted_where_the_host_cannot_be_replaced(tmp_path):
    run_dir = str(tmp_path / "run")
    with ImdsStub(once=False) as stub:
        stub.notice()
        rc, _, err = run_launch("train", "--local", "-n", "2", "-s", "1", "--run-dir", run_dir, "--watch-spot",
                                "--max-restarts", "2", "--restart-delay", "0", *QUIET_ENV,
                                "--env", f"AWS_EC2_METADATA_SERVICE_ENDPOINT={stub.endpoint}", "--",
                                PY, PUSHPULL, "--rounds", "100000", "--round-seconds", "0.05", timeout=100)
    assert rc == Exit.FAILED, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert "could not restart the job: spot interruption on 127.0.0.1" in last
    assert f"launch train --resume {run_dir}` once the noticed instance is replaced" in last
    assert "launch cluster repair NAME" in last
    assert "restarting" not in err and "restart 1 of 2" not in err
    data = summary(run_dir)
    assert data["reason"] == "spot interruption" and data["restarts"] == []
    assert not job_processes(data["job_id"])
