"""Shared fixtures, the markers' meaning, and the session's hygiene.

At session start: what killed runs left is swept (stale beds, then every process whose owner mark names a
test run that is gone), and this session marks every process it will start (mxlaunch.testing.procs).
Markers (setup.cfg): `bed` tests need the SSH test bed: skipped with the reason where it cannot be made,
failed where the run requires it (.ci/run: MXLAUNCH_REQUIRE_BED=1); `slow` tests train MXNet for minutes;
`aws` tests drive `launch cluster` against moto or botocore's Stubber. Subsets: `pytest -m "not slow"`.
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from mxlaunch.testing import procs
from mxlaunch.testing.require import bed_unavailable, need_bed

pytest_plugins = ["aws_fixtures", "fixtures_moto", "fixtures_ssh", "fixtures_box"]


def pytest_sessionstart(session):
    swept = []
    if bed_unavailable() is None:
        from mxlaunch.testing import bed
        swept += [f"bed {name}" for name in bed.sweep_stale()]
    swept += [f"pid {pid}" for pid in procs.sweep_orphans()]
    procs.mark_session()
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if swept and reporter:
        reporter.write_line(f"swept what killed test runs left: {', '.join(swept)}", yellow=True)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    if item.get_closest_marker("bed"):
        need_bed()


def trainer_env(**extra) -> dict:
    """Environment for a trainer process in tests: two threads (the machine has two cores), no job variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DMLC_", "LAUNCH_"))}
    env.update(OMP_NUM_THREADS="2", MXNET_CPU_WORKER_NTHREADS="2", PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def run_trainer(*args, timeout=180, env=None, cwd=None) -> subprocess.CompletedProcess:
    """Run `python -m mxlaunch.trainer ARGS...` as a user would; bounded in time (killed when it overruns)."""
    return subprocess.run([sys.executable, "-m", "mxlaunch.trainer", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env or trainer_env(), cwd=cwd)


@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory) -> str:
    """The real handwritten digits as digits_train.rec/.idx and digits_val.rec/.idx, made by `trainer data digits`."""
    out = tmp_path_factory.mktemp("digits")
    result = run_trainer("data", "digits", "--out", out, timeout=120)
    assert result.returncode == 0, result.stderr
    return str(out)
