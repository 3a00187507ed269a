"""`pytest -n N --dist loadgroup` (pytest-xdist) with the groups of GROUPS: the tests that share one session
resource run in one worker — the box (its `ubuntu` user and /efs are the machine's), the shared digits runs
(trained once), the venvs cached on disk. Other tests go wherever a worker is free.

The grouping lives in the scheduler (tests/conftest.py imports the hook): xdist's own `xdist_group` mark works
by renaming a test's node id, which pytest 9.2 no longer lets it do — the marks were silently ignored, and each
worker built its own box and trained its own digits runs. tests/test_xdist_groups.py proves the grouping.
"""
from __future__ import annotations

from typing import Optional

import pytest

GROUPS = {"box": ("test_box", "test_healing_"),
          "digits": ("test_trainer_training", "test_trainer_data", "test_trainer_finetune",
                     "test_launch_local_trainer", "test_trainer_devices", "test_trainer_mxnet_options"),
          "cached-venvs": ("test_gpu_env", "test_install")}  # they reinstall into venvs kept on disk


def group_of(nodeid: str) -> Optional[str]:
    """The group of a test id (`tests/test_box.py::test_x[1]` -> "box"), or None."""
    module = nodeid.split("::", 1)[0].rsplit("/", 1)[-1].removesuffix(".py")
    return next((group for group, prefixes in GROUPS.items() if module.startswith(prefixes)), None)


@pytest.hookimpl(optionalhook=True)  # pytest without pytest-xdist (-p no:xdist) knows no such hook
def pytest_xdist_make_scheduler(config, log):
    """--dist loadgroup: one work unit per group (and per other test); any other --dist: xdist's own."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class SharedResourceGroups(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return group_of(nodeid) or nodeid

    return SharedResourceGroups(config, log)
