"""Helpers for the launcher's end-to-end tests: run `launch`, find a job's processes by its marker, and make
sure that whatever a test started is gone when it ends, passed or failed."""
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import types

from testkit import procs
from testkit.bed import BedError, wait_for  # wait_for: one bounded poll for every test

PY = sys.executable  # in SSH mode too: the bed's hosts share this file system, so the same venv path works
PUSHPULL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pushpull.py")  # a trivial dist_sync job
QUIET_ENV = ["--env", "OMP_NUM_THREADS=1"]
LONG_JOB = [PY, PUSHPULL, "--rounds", "100000", "--round-seconds", "0.05"]  # runs until stopped
# A bound, not a speed measurement: roles left alone block forever (ps-lite detects no failure), so any bound
# proves the teardown; the 2 s of docs/jobs.md is measured by bench/launch_local.py and bench/launch_ssh.py (0.1-1.4 s).
# A CI machine loaded by other work once took 2.04 s over SSH.
TEARDOWN_LIMIT = 5.0
# Arguments that break any shell quoting or splitting on the way to the role.
TORTURE_ARGS = ["a b", "it's", 'say "hi"', "$HOME", "a;b && c", "ünïcødé ✓", "x,y,z", "", "--weird=1 2",
                "back\\slash", "*", "tab\there", "new\nline"]


def launch_argv(*args):
    return [sys.executable, "-m", "mxlaunch.launcher", *args]


def parsed_train(options):
    """`launch train OPTIONS` as its own parser reads them, nothing run: its values by name (what a detached
    launcher started with these options is asked to do)."""
    from mxlaunch.launcher.cli.train import train

    with train.make_context("train", list(options)) as ctx:
        return types.SimpleNamespace(**ctx.params)


def start_launch(*args, cwd=None):
    """The launcher as a user starts it: its own process group, so the test can signal it alone.
    A test that calls this ends it with `end_launch` in a `finally` (or uses `launched`)."""
    return subprocess.Popen(launch_argv(*args), cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=dict(os.environ, NO_COLOR="1"), start_new_session=True)


def finish(proc, timeout=30):
    """Wait (bounded) for a started launcher: (exit status, stdout, stderr)."""
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")


def run_launch(*args, timeout=120, cwd=None):
    proc = start_launch(*args, cwd=cwd)
    try:
        return finish(proc, timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        _, out, err = finish(proc, 10)
        raise AssertionError(f"launch did not end within {timeout}s\n{out}\n{err}") from None
    finally:
        end_launch(proc)


def end_launch(proc, run_dir=None, grace=5.0):
    """Whatever is left of a launch, gone: the launcher's process group by SIGKILL, then (its lifeline should
    have done it) any process still carrying the job's marker, by pid. For `finally` blocks and finalisers."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace)
    for stream in (proc.stdout, proc.stderr):
        if stream:
            stream.close()
    try:
        job_id = job_id_of(run_dir) if run_dir else None
    except Exception:  # an unreadable job.yaml: no marker to look for
        job_id = None
    if not job_id:
        return
    with contextlib.suppress(BedError):
        wait_for(lambda: not job_processes(job_id), grace, interval=0.05, what="the job's lifeline to end it")
    for pid in job_processes(job_id):  # guards and roles lead their own process groups
        for kill in (os.killpg, os.kill):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def launched(*args, run_dir=None, cwd=None):
    """start_launch(...) whose launcher and job are gone when the block ends, however it ends."""
    proc = start_launch(*args, cwd=cwd)
    try:
        yield proc
    finally:
        end_launch(proc, run_dir)


def ssh_args(bed, *extra, python=PY, slots=(0, 1, 1), known_hosts=None):
    """`launch train` over a 3-host bed: scheduler and server on host 0 (slots=0: no worker there), one
    worker on each of hosts 1 and 2."""
    return ["train", "--hosts", bed.hostfile(list(slots)), "-n", "2", "-s", "1", "--python", python,
            "--ssh-key", bed.key, "--known-hosts", known_hosts or bed.known_hosts, *extra]


def summary(run_dir):
    with open(os.path.join(run_dir, "summary.json")) as f:
        return json.load(f)


def job_processes(job_id):
    """{pid: (LAUNCH_ROLE, "role" or "guard")} of every live process that carries the job's marker."""
    found = {}
    marker = job_id.encode()
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            env = procs.environ(int(entry))
            if env and env.get(b"LAUNCH_JOB_ID") == marker:
                kind = "role" if b"DMLC_ROLE" in env else "guard"
                found[int(entry)] = (env.get(b"LAUNCH_ROLE", b"?").decode(), kind)
    return found


def seconds_until_gone(job_id, since, limit=10.0):
    """Poll /proc until no process of the job is left; seconds from `since` (time.monotonic() of the fault,
    taken by the test itself) to the first look that found none."""
    wait_for(lambda: not job_processes(job_id), limit, interval=0.01,
             what=f"every process of job {job_id} to end (left: {job_processes(job_id)})")
    return time.monotonic() - since


def role_pid(job_id, role_name):
    for pid, (name, kind) in job_processes(job_id).items():
        if name == role_name and kind == "role":
            return pid
    return None


def job_id_of(run_dir):
    import yaml
    path = os.path.join(run_dir, "job.yaml")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return (yaml.safe_load(f) or {}).get("job_id")


def read_log(run_dir, role):
    try:
        with open(os.path.join(run_dir, "logs", f"{role}.log"), encoding="utf-8", errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""


def masked_plan(run_dir, marker, plain_value):
    """job.yaml of a torture job, checked: the secret (TORTURE_SECRET_TOKEN, holding `marker`) is masked at the
    top and in every role, in no encoding anywhere in the file, and the plain value is kept as given."""
    import yaml

    from mxlaunch.launcher.jobs.plan import MASK

    with open(os.path.join(run_dir, "job.yaml"), encoding="utf-8") as f:
        text = f.read()
    assert marker not in text
    plan = yaml.safe_load(text)
    assert plan["env"]["TORTURE_SECRET_TOKEN"] == MASK and plan["env"]["TORTURE_PLAIN"] == plain_value
    assert {r["env"]["TORTURE_SECRET_TOKEN"] for r in plan["roles"]} == {MASK}
    return plan
