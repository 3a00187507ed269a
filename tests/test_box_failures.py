"""`launch cluster up --wait ssh` when something fails after the instances run, on the cluster in a box whose
hosts run the real user data (testkit.box `user_data=True`): a host whose user data fails (it cannot mount EFS)
ends `up` within a minute of the failure, the step and the tail of the user data's log (read over SSH) in its
error, the instances kept; an install that fails after the launch keeps the instances and the EFS, says so in
one line, and `launch cluster up NAME` run again finishes the cluster without launching anything.

One box for the module (3 hosts: host 0 cannot mount EFS; hosts 1 and 2 boot as they should)."""
from __future__ import annotations

import os
import shutil
import time

import pytest

from fixtures_box import box_up_args, launcher_dirs
from testkit import box as boxes
from testkit.require import need_bed

pytestmark = [pytest.mark.bed, pytest.mark.aws, pytest.mark.timeout(600)]
NO_EFS = 0  # the host whose user data cannot mount EFS (hosts are handed out in launch order)


@pytest.fixture(scope="module")
def box(tmp_path_factory):
    need_bed()
    b = boxes.up(3, hide=launcher_dirs(tmp_path_factory), dir=str(tmp_path_factory.mktemp("ubox")),
                 user_data=True, no_efs=[NO_EFS])
    try:
        yield b
    finally:
        problems = b.down()
        assert not problems, f"the box's teardown left: {problems}"


def running(box, name: str) -> list:
    found = box.client("ec2").describe_instances(Filters=[{"Name": "tag:launch:cluster", "Values": [name]},
                                                          {"Name": "instance-state-name", "Values": ["running"]}])
    return sorted(i["InstanceId"] for r in found["Reservations"] for i in r["Instances"])


def file_systems(box, name: str) -> list:
    return [f["FileSystemId"] for f in box.client("efs").describe_file_systems()["FileSystems"]
            if {"Key": "launch:cluster", "Value": name} in f.get("Tags", [])]


def test_a_user_data_that_fails_ends_up_within_a_minute_with_its_logs_tail_and_keeps_the_instances(box, wheelhouse):
    code, _, err = box.launch("cluster", "up", "udfail", *box_up_args(
        box, 1, "g5.12xlarge", "--wait", "ssh", "--extra", "cpu", "--wheelhouse", wheelhouse), timeout=420)
    ended = time.time()
    assert code == 1, err[-3000:]
    failed_at = int(box.bed.inside(NO_EFS, "stat", "-c", "%Y", "/var/lib/mxlaunch/failed").stdout)
    assert ended - failed_at < 60, f"`up` ended {ended - failed_at:.0f}s after the user data failed"
    last = err.strip().splitlines()[-1]
    assert last.startswith("launch: error: the user data of udfail-0 failed at step efs: EFS fs-"), last
    assert "could not be mounted at /efs within 10 minutes" in last
    # the tail of /var/log/mxlaunch-userdata.log, read over SSH from the instance
    assert "the end of its log /var/log/mxlaunch-userdata.log: " in last and "mxlaunch: step efs failed" in last
    assert "login failed" not in err
    ids = running(box, "udfail")
    (kept,) = [line for line in err.splitlines() if line.startswith("up failed after launching")]
    assert len(ids) == 1 and ids[0] in kept and "`launch cluster down udfail` removes it" in kept
    assert "removing what this run created" not in err
    assert os.path.exists(os.path.join(box.cluster_dir("udfail"), "id_key"))
    code, _, err = box.launch("cluster", "down", "udfail", "--yes", timeout=180)
    assert code == 0 and not running(box, "udfail") and not file_systems(box, "udfail"), err[-2000:]


def test_an_install_that_fails_after_the_launch_keeps_the_cluster_and_up_again_finishes_it(box, wheelhouse,
                                                                                           tmp_path):
    broken = tmp_path / "no-numpy"  # the wheels but numpy's: pip cannot install mxlaunch[cpu] from it
    shutil.copytree(wheelhouse, broken, ignore=shutil.ignore_patterns("numpy-*"))
    args = box_up_args(box, 2, "g5.12xlarge", "--wait", "ssh", "--extra", "cpu")
    code, _, err = box.launch("cluster", "up", "udinst", *args, "--wheelhouse", broken, timeout=420)
    assert code == 1 and "installing on udinst-0 failed" in err.strip().splitlines()[-1], err[-3000:]
    ids, fs = running(box, "udinst"), file_systems(box, "udinst")
    assert len(ids) == 2 and len(fs) == 1, err[-2000:]  # kept: instances and EFS
    (kept,) = [line for line in err.splitlines() if line.startswith("up failed after launching")]
    assert all(i in kept for i in ids) and fs[0] in kept and "~$11.34/h" in kept
    assert "`launch cluster up udinst --instance-type g5.12xlarge --count 2 --ssh-cidr 203.0.113.7/32` finishes it" \
        in kept
    booted = len(box.booted())
    code, out, err = box.launch("cluster", "up", "udinst", *args, "--wheelhouse", wheelhouse, timeout=480)
    assert code == 0, err[-3000:]
    assert "cluster udinst is complete: nothing to create" in err
    assert "imports mxnet and mxlaunch on 2 instance(s)" in err
    assert running(box, "udinst") == ids and len(box.booted()) == booted  # finished, nothing launched
    code, out, _ = box.launch("cluster", "exec", "udinst", "--all", "--", "/efs/mxlaunch/venv/bin/python", "-c",
                              "import mxlaunch; print('ok')", timeout=120)
    assert code == 0 and sorted(out.split()) == ["[udinst-0]", "[udinst-1]", "ok", "ok"], out
    code, _, err = box.launch("cluster", "down", "udinst", "--yes", timeout=180)
    assert code == 0 and not running(box, "udinst") and not file_systems(box, "udinst"), err[-2000:]
