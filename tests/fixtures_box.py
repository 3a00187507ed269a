"""The cluster in a box as a pytest fixture (a plugin of tests/conftest.py: `pytest_plugins`).

    pytestmark = [pytest.mark.bed, pytest.mark.aws]
    BOX_CAPACITY = 2                  # hosts in this module's box (default 3); each is handed out once

    def test_x(box):                  # testkit.box.Box, one per module
        code, out, err = box.launch("cluster", "up", "x1", *box_up_args(box, 2))
        box.ssh("x1", 0, "whoami")    # -> ubuntu
        box.bed.inside(1, "ls", "/efs", user="ubuntu")

What the box is, what its hosts look like and which parts of an instance's boot it does not run: the docstring
of testkit/box.py. The hosts cannot see the checkout, this test run's tmp directories (pytest's
base temp and its siblings) or the box's MXLAUNCH_HOME; they see /efs (`box.bed.shared` here). Teardown stops
the moto server and takes the bed down (namespaces, processes, the `ubuntu` user and the /efs mount point if
the box made them); it fails the module's last test if anything is left. A killed run's leftovers are swept
at the next session start (conftest: bed.sweep_stale, procs.sweep_orphans).
"""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass

import pytest

from testkit import bed
from testkit import box as boxes
from testkit.require import need_bed

CIDR = "203.0.113.7/32"  # the --ssh-cidr of every box cluster (a documentation range: never contacted)
# `launch train --cluster` watches each host's spot notices (IMDSv2 at 169.254.169.254, never contacted by a
# test): box jobs point the watchers at a closed port of each host's own loopback (connection refused = no
# notice), so the watcher still runs everywhere
NO_IMDS = ("--env", "AWS_EC2_METADATA_SERVICE_ENDPOINT=http://127.0.0.1:9")


def box_up_args(box, count: int, instance_type: str = "g5.12xlarge", *extra) -> list:
    """`cluster up NAME` arguments after NAME, for a box: its AMI, instances ready when running (pass
    `--wait ssh` in `extra` to test the install: the last --wait wins)."""
    return ["--instance-type", instance_type, "--count", count, "--ssh-cidr", CIDR, "--ami", box.ami,
            "--wait", "running", "--yes", *extra]


def launcher_dirs(tmp_path_factory) -> tuple:
    """What the launcher side works in and no host may see: the checkout, and every pytest base temp of this
    user (this run's and its siblings: the folder above)."""
    return boxes.REPO, str(tmp_path_factory.getbasetemp().parent)


@pytest.fixture(scope="module")
def box(request, tmp_path_factory):
    need_bed()
    capacity = getattr(request.module, "BOX_CAPACITY", 3)
    b = boxes.up(capacity, hide=launcher_dirs(tmp_path_factory), dir=str(tmp_path_factory.mktemp("box")))
    try:
        yield b
    finally:
        problems = b.down()
        assert not problems, f"the box's teardown left: {problems}"
        assert not os.path.exists(b.bed.dir)


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory):
    """mxlaunch's wheel and everything mxlaunch[cpu] needs, for the hosts' python3 (they reach no registry)."""
    house = tmp_path_factory.mktemp("wheelhouse")
    pip = [sys.executable, "-m", "pip"]
    subprocess.run(pip + ["wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(house), boxes.REPO],
                   check=True, timeout=300, capture_output=True)
    (wheel,) = house.glob("mxlaunch-*.whl")
    version = subprocess.run(["/usr/bin/python3", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    subprocess.run(pip + ["download", "-q", "-d", str(house), "--only-binary", ":all:", "--python-version", version,
                          f"{wheel}[cpu]"], check=True, timeout=600, capture_output=True)
    return str(house)


# 3 instances, spare hosts for the instances that replace a terminated or noticed one, and 2 for the one-instance
# cluster of tests/test_healing_deadline.py and its replacement
HEALING_CAPACITY = 7
HEALING_COUNT = 3
HEALING_MAX_HOURS = "24"  # a deadline the cluster's replacements must inherit (the box never runs its timer)


@dataclass(frozen=True)
class HealingCluster:
    """The session's installed cluster of HEALING_COUNT box instances (issue 11's whole path, issue 13's
    self-healing): `box` (its spare hosts are handed out by RunInstances to whoever makes the cluster whole),
    `name`, `data` (the digits on /efs, as the hosts see it), and what its `up` and first `put` said."""

    box: boxes.Box
    name: str
    data: str
    up_err: str
    put_out: str


def _no_instance_running(box: boxes.Box, name: str) -> list:
    found = box.client("ec2").describe_instances(Filters=[{"Name": "tag:launch:cluster", "Values": [name]},
                                                          {"Name": "instance-state-name", "Values": ["running"]}])
    return [i["InstanceId"] for r in found["Reservations"] for i in r["Instances"]]


@pytest.fixture(scope="session")
def healing_cluster(tmp_path_factory, wheelhouse, digits_dir):
    """One box for the session (hosts are handed out once; a box and an install per module would cost a minute
    each), with a cluster installed as a user does: `up --wait ssh --extra cpu --wheelhouse` (the hosts reach
    no registry), the digits put on /efs. Tests may terminate instances (a spare host replaces each) but leave
    the cluster running. At the end `down` must succeed and leave no running instance and no process on any
    host but sshd; then the box must come down clean."""
    need_bed()
    b = boxes.up(HEALING_CAPACITY, hide=launcher_dirs(tmp_path_factory), dir=str(tmp_path_factory.mktemp("hbox")))
    name = "heal"
    try:
        code, _, up_err = b.launch("cluster", "up", name, *box_up_args(
            b, HEALING_COUNT, "g5.12xlarge", "--wait", "ssh", "--extra", "cpu", "--wheelhouse", wheelhouse,
            "--max-hours", HEALING_MAX_HOURS), timeout=600)
        assert code == 0, up_err[-3000:]
        code, put_out, err = b.launch("cluster", "put", name, digits_dir, timeout=120)  # to /efs/data/
        assert code == 0, err[-3000:]
        yield HealingCluster(box=b, name=name, data=f"/efs/data/{os.path.basename(digits_dir)}", up_err=up_err,
                             put_out=put_out)
        code, _, err = b.launch("cluster", "down", name, "--yes", timeout=120)
        assert code == 0, err[-3000:]
        assert not _no_instance_running(b, name)
        bed.wait_for(lambda: not any(p for m in b.bed.members for p in b.bed.job_pids(m.index)
                                     if "sshd" not in _cmdline(p)), 10, what="no process but sshd on any host")
    finally:
        problems = b.down()
        assert not problems, f"the box's teardown left: {problems}"


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline") as f:
            return f.read()
    except OSError:
        return "sshd"  # gone meanwhile
