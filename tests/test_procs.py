"""What a test run leaves behind when it is killed: the next run's sweep finds it by its owner mark and kills it,
and never touches what a live run started."""
import contextlib
import os
import secrets
import signal
import subprocess
import sys
import textwrap

import pytest

from testkit import procs
from testkit.jobs import job_id_of, job_processes, wait_for
from testkit.streams import Output

pytestmark = pytest.mark.timeout(60)
TESTS = os.path.dirname(os.path.abspath(__file__))
WAIT = 10.0
TAG = "MXLAUNCH_TEST_PROCS"  # on everything these tests start, so their finally finds it


@pytest.fixture
def tagged_env():
    """Environment whose processes this test's teardown kills (by pid and group), whatever it asserted."""
    tag = secrets.token_hex(8)
    yield {**os.environ, TAG: tag}
    procs.kill_marked(TAG, tag)


def dead_mark():
    """The owner mark of a process that has ended."""
    owner = subprocess.Popen(["sleep", "60"])
    mark = procs.mark_of(owner.pid)
    owner.kill()
    owner.wait(timeout=WAIT)
    return mark


def sleeper(env, owner_mark, *argv):
    return subprocess.Popen(list(argv) or ["sleep", "300"], env=dict(env, **{procs.OWNER_KEY: owner_mark}),
                            stdout=subprocess.PIPE, start_new_session=True)


def test_sweep_kills_what_a_gone_run_left_and_spares_what_a_live_run_started(tagged_env):
    # the orphan's child clears its environment (`env -i`): only the orphan's process group still finds it
    orphan = sleeper(tagged_env, dead_mark(), "sh", "-c", "env -i sleep 300 & echo $!; wait")
    grandchild = int(Output(orphan.stdout).readline(WAIT))
    reused = sleeper(tagged_env, f"{os.getpid()}:1")  # a live pid, but not the process that owned the run
    kept = sleeper(tagged_env, procs.mark_of(os.getpid()))  # this run's: alive

    killed = procs.sweep_orphans()

    assert orphan.pid in killed and reused.pid in killed and kept.pid not in killed
    assert not procs.alive(orphan.pid) and not procs.alive(reused.pid)
    # the grandchild died with its group's SIGKILL; on a loaded machine its exit may take a moment
    wait_for(lambda: not procs.alive(grandchild), WAIT, what="the orphan's grandchild to be gone")
    assert procs.alive(kept.pid)


def pytest_run(path, env, stdin=subprocess.DEVNULL):
    """A pytest session on one file, with this suite's conftest (session start sweeps, then marks)."""
    env = dict(env, PYTHONPATH=os.pathsep.join([TESTS, env.get("PYTHONPATH", "")]))
    return subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "conftest",
                             str(path)], cwd=path.parent, env=env, stdin=stdin, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)


def test_a_run_killed_during_a_long_job_leaves_nothing_for_the_next_run(tmp_path, tagged_env):
    run_dir = tmp_path / "job"
    long_job = tmp_path / "test_long_job.py"
    long_job.write_text(textwrap.dedent(f"""
        import time
        from testkit.jobs import start_launch
        def test_long_job():
            launcher = start_launch("train", "--local", "-n", "1", "-s", "1", "--run-dir", {str(run_dir)!r}, "--",
                                    "sleep", "300")
            open({str(tmp_path / "launcher.pid")!r}, "w").write(str(launcher.pid))
            time.sleep(120)  # killed here, by SIGKILL: no teardown runs
    """))
    killed_run = pytest_run(long_job, tagged_env)
    try:
        job_id = wait_for(lambda: job_id_of(str(run_dir)), WAIT, what="the job to start")
        wait_for(lambda: {kind for _, kind in job_processes(job_id).values()} == {"guard", "role"}, WAIT,
                 what="the job's guard and role")
        os.kill(killed_run.pid, signal.SIGKILL)
        killed_run.wait(timeout=WAIT)
        left = [int((tmp_path / "launcher.pid").read_text()), *job_processes(job_id)]
        assert all(procs.alive(pid) for pid in left), "nothing was left running: this test would prove nothing"

        empty = tmp_path / "test_next_run.py"
        empty.write_text("def test_nothing():\n    pass\n")
        next_run = pytest_run(empty, tagged_env)
        out, _ = next_run.communicate(timeout=60)
        assert next_run.returncode == 0, out.decode()
        assert job_processes(job_id) == {}
        assert not any(procs.alive(pid) for pid in left), left
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(killed_run.pid, signal.SIGKILL)
