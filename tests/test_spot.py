"""Spot interruptions on this machine: a stub metadata service (IMDSv2) on 127.0.0.1 in this test's thread,
reached by the job's guards through AWS_EC2_METADATA_SERVICE_ENDPOINT. Without --max-restarts the launch ends
naming the interruption and --resume; where the launcher cannot replace the host (--local, --hosts, detached)
restarts left are not spent on it; --local watches only when asked. The whole path with restarts — the real
trainer saving where it is, the noticed instance replaced, the job resumed from that batch — runs on the cluster
in a box (tests/test_healing_spot.py); the exact mid-epoch resume is tests/test_trainer_interrupt.py's."""
import pytest

from mxlaunch.exits import Exit
from testkit.imds import ImdsStub
from testkit.jobs import PUSHPULL, PY, QUIET_ENV, job_processes, run_launch, summary


@pytest.mark.timeout(120)
def test_without_restarts_a_notice_ends_the_launch_naming_it_and_resume(tmp_path):
    run_dir = str(tmp_path / "run")
    with ImdsStub(once=False) as stub:
        stub.notice()
        rc, out, err = run_launch("train", "--local", "-n", "2", "-s", "1", "--run-dir", run_dir, "--watch-spot",
                                  *QUIET_ENV, "--env", f"AWS_EC2_METADATA_SERVICE_ENDPOINT={stub.endpoint}", "--",
                                  PY, PUSHPULL, "--rounds", "100000", "--round-seconds", "0.05", timeout=100)
    assert rc == Exit.FAILED, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert "spot interruption on 127.0.0.1" in last and f"launch train --resume {run_dir}" in last
    assert "no checkpoint was written" in last  # pushpull has no --model-prefix
    data = summary(run_dir)
    assert data["reason"] == "spot interruption" and data["first_failure"] is None
    assert stub.served >= 1 and not job_processes(data["job_id"])


def test_local_jobs_do_not_watch_unless_asked(tmp_path):
    with ImdsStub(once=False) as stub:
        stub.notice()
        rc, _, err = run_launch("train", "--local", "-n", "1", "-s", "1", "--run-dir", str(tmp_path / "r"),
                                *QUIET_ENV, "--env", f"AWS_EC2_METADATA_SERVICE_ENDPOINT={stub.endpoint}", "--",
                                PY, PUSHPULL, "--rounds", "5", timeout=60)
    assert rc == 0, err[-3000:]
    assert stub.requests == []


@pytest.mark.timeout(120)
def test_a_notice_is_not_restarted_where_the_host_cannot_be_replaced(tmp_path):
    """With restarts left the job still ends at once, naming the interruption, the repair and --resume, and
    spends no restart (restarting on a host AWS keeps noticing would only burn them)."""
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
