"""Shared fixtures, the markers' meaning, and the session's hygiene.

At session start: what killed runs left is swept (stale beds, then every process whose owner mark names a
test run that is gone), and this session marks every process it will start (testkit.procs).
Markers (pyproject.toml): `bed` tests need the SSH test bed: skipped with the reason where it cannot be made,
failed where the run requires it (.ci/run: MXLAUNCH_REQUIRE_BED=1); `slow` tests train MXNet for minutes;
`aws` tests drive `launch cluster` against moto or botocore's Stubber. Subsets: `pytest -m "not slow"`.
"""
from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from testkit import procs
from testkit.checkout import with_testkit
from testkit.require import bed_unavailable, need_bed
# pytest-xdist's hook: under `-n N --dist loadgroup` what shares a session resource runs in one worker
from testkit.xdist_groups import pytest_xdist_make_scheduler  # noqa: F401

pytest_plugins = ["aws_fixtures", "fixtures_moto", "fixtures_ssh", "fixtures_box"]
# testkit/ is not installed: every Python the tests start (an inner pytest, the box's moto server) finds it in the
# checkout, as this pytest does (pyproject's pythonpath); tests of an install take PYTHONPATH away again
os.environ["PYTHONPATH"] = with_testkit()["PYTHONPATH"]


def pytest_sessionstart(session):
    swept = []
    if bed_unavailable() is None:
        from testkit import bed
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


def run_trainers(*arg_lists, timeout=180, env=None) -> list:
    """Independent `trainer` runs side by side (two cores: most of a short run is one thread importing MXNet)."""
    with ThreadPoolExecutor(len(arg_lists)) as pool:
        return list(pool.map(lambda args: run_trainer(*args, timeout=timeout, env=env), arg_lists))


@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory) -> str:
    """The real handwritten digits as digits_train.rec/.idx and digits_val.rec/.idx, made by `trainer data digits`."""
    out = tmp_path_factory.mktemp("digits")
    result = run_trainer("data", "digits", "--out", out, timeout=120)
    assert result.returncode == 0, result.stderr
    return str(out)


@pytest.fixture(scope="session")
def digits_training(digits_dir, tmp_path_factory):
    """The digits recipe (tests/digits_recipe.py, batch 32), trained once per session in the background.
    One OpenMP thread: it usually runs beside a test's own job (test_launch_local_trainer's) on two cores."""
    from digits_recipe import RecipeRun

    run = RecipeRun(digits_dir, tmp_path_factory.mktemp("digits-model"), trainer_env(OMP_NUM_THREADS="1"))
    yield run
    run.stop()


@pytest.fixture(scope="session")
def digits_two_contexts(digits_dir, tmp_path_factory):
    """The recipe on 2 CPU contexts alone (batch 32 split 16+16; one thread each), trained once per session in
    the background: test_trainer_devices' single-process multi-device run."""
    from digits_recipe import RecipeRun

    run = RecipeRun(digits_dir, tmp_path_factory.mktemp("digits-2ctx"),
                    trainer_env(OMP_NUM_THREADS="1", MXNET_CPU_WORKER_NTHREADS="1"), "--cpus", 2)
    yield run
    run.stop()


@pytest.fixture(scope="session")
def digits_model(digits_training):
    """The finished recipe run (digits_recipe.TrainedDigits), shared read-only: copy its files before changing them."""
    return digits_training.result()


class _BackgroundJob:
    """A `launch train` started now and awaited later (its console to files: nobody reads a pipe meanwhile)."""

    def __init__(self, args, out_dir):
        from testkit.jobs import launch_argv

        self.out_path, self.err_path = os.path.join(out_dir, "out"), os.path.join(out_dir, "err")
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(launch_argv(*args), stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                         env=dict(os.environ, NO_COLOR="1"), start_new_session=True)

    def finish(self, timeout):
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            rc = None
        with open(self.out_path, errors="replace") as out, open(self.err_path, errors="replace") as err:
            return rc, out.read(), err.read()


@pytest.fixture(scope="session")
def digits_job_started(digits_dir, tmp_path_factory):
    """The recipe as a `launch train --local -n 2 -s 1` job, each worker's 16 samples split over 2 CPU contexts
    (global batch 2 x 16 = the plain run's 32), started in the background (see _start_shared_training)."""
    from digits_recipe import RecipeRun, fit_args
    from testkit.jobs import end_launch

    base = tmp_path_factory.mktemp("digits-job")
    run_dir, ckpt = str(base / "run"), str(base / "ckpt" / "digits")
    one_thread = ["--env", "OMP_NUM_THREADS=1", "--env", "MXNET_CPU_WORKER_NTHREADS=1"]  # 2 contexts x 1 thread
    job = _BackgroundJob(["train", "--local", "-n", "2", "-s", "1", "--run-dir", run_dir, *one_thread, "--",
                          "trainer", *fit_args(digits_dir, ckpt, RecipeRun.BATCH // 2, "--cpus", 2)], str(base))
    try:
        yield job, run_dir, ckpt
    finally:
        end_launch(job.proc, run_dir)


@pytest.fixture(scope="session")
def digits_job(digits_job_started) -> dict:
    """The finished digits_job_started: the dist_sync job of test_launch_local_trainer (which redoes its last
    epoch with --resume: the files stay whole) and the multi-device workers of test_trainer_devices.
    {"run_dir", "out" (the launcher's console), "ckpt" (the workers' --model-prefix)}."""
    job, run_dir, ckpt = digits_job_started
    rc, out, err = job.finish(timeout=400)
    assert rc == 0, f"exit status {rc}\n{err[-3000:]}"
    return {"run_dir": run_dir, "out": out, "ckpt": ckpt}


@pytest.fixture(scope="session", autouse=True)
def _start_shared_training(request):
    """The session's shared digits runs start with the session, when any collected test will read them: they
    train while the first tests mostly wait (SSH, the box's boots and installs), instead of in front of the
    tests that need them."""
    if os.environ.get("PYTEST_XDIST_WORKER"):  # each worker collects every test but runs its share: start lazily
        return
    wanted = {name for item in request.session.items for name in getattr(item, "fixturenames", ())}
    if wanted & {"digits_training", "digits_model"}:
        request.getfixturevalue("digits_training")
    if wanted & {"digits_job", "digits_job_started"}:
        request.getfixturevalue("digits_job_started")
    if "digits_two_contexts" in wanted:
        request.getfixturevalue("digits_two_contexts")
