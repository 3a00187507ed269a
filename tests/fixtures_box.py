"""The cluster in a box as a pytest fixture (a plugin of tests/conftest.py: `pytest_plugins`).

    pytestmark = [pytest.mark.bed, pytest.mark.aws]
    BOX_CAPACITY = 2                  # hosts in this module's box (default 3); each is handed out once

    def test_x(box):                  # mxlaunch.testing.box.Box, one per module
        code, out, err = box.launch("cluster", "up", "x1", *box_up_args(box, 2))
        box.ssh("x1", 0, "whoami")    # -> ubuntu
        box.bed.inside(1, "ls", "/efs", user="ubuntu")

What the box is, what its hosts look like and which parts of an instance's boot it does not run: the docstring
of mxlaunch/testing/box.py. The hosts cannot see the checkout, this test run's tmp directories (pytest's
base temp and its siblings) or the box's MXLAUNCH_HOME; they see /efs (`box.bed.shared` here). Teardown stops
the moto server and takes the bed down (namespaces, processes, the `ubuntu` user and the /efs mount point if
the box made them); it fails the module's last test if anything is left. A killed run's leftovers are swept
at the next session start (conftest: bed.sweep_stale, procs.sweep_orphans).
"""
from __future__ import annotations

import os

import pytest

from mxlaunch.testing import box as boxes
from mxlaunch.testing.require import need_bed

CIDR = "203.0.113.7/32"  # the --ssh-cidr of every box cluster (a documentation range: never contacted)


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
