"""Shared fixtures. Test modules of one area keep their own fixtures beside them."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def trainer_env(**extra) -> dict:
    """Environment for a trainer process in tests: two threads (the machine has two cores), no job variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DMLC_", "LAUNCH_"))}
    env.update(OMP_NUM_THREADS="2", MXNET_CPU_WORKER_NTHREADS="2", PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def run_trainer(*args, timeout=180, env=None, cwd=None) -> subprocess.CompletedProcess:
    """Run `python -m mxlaunch.trainer ARGS...` as a user would; bounded in time."""
    return subprocess.run([sys.executable, "-m", "mxlaunch.trainer", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env or trainer_env(), cwd=cwd)


@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory) -> str:
    """The real handwritten digits as digits_train.rec/.idx and digits_val.rec/.idx, made by `trainer data digits`."""
    out = tmp_path_factory.mktemp("digits")
    result = run_trainer("data", "digits", "--out", out, timeout=120)
    assert result.returncode == 0, result.stderr
    return str(out)
