"""Helpers for the launcher's end-to-end tests: run `launch`, find a job's processes by its marker."""
import os
import signal
import subprocess
import sys

from mxlaunch.testing.bed import wait_for  # noqa: F401  (re-exported: one bounded poll for every test)

PUSHPULL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pushpull.py")  # a trivial dist_sync job
QUIET_ENV = ["--env", "OMP_NUM_THREADS=1"]


def launch_argv(*args):
    return [sys.executable, "-m", "mxlaunch.launcher", *args]


def start_launch(*args, cwd=None):
    """The launcher as a user starts it: its own process group, so the test can signal it alone."""
    return subprocess.Popen(launch_argv(*args), cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=dict(os.environ, NO_COLOR="1"), start_new_session=True)


def run_launch(*args, timeout=120, cwd=None):
    proc = start_launch(*args, cwd=cwd)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(f"launch did not end within {timeout}s\n{out.decode()}\n{err.decode()}")
    return proc.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")


def command_lines(except_pid):
    """The command line of every process on this machine (all bed namespaces share its PID namespace)."""
    lines = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and entry != str(except_pid):
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    lines.append(f.read())
            except OSError:
                continue
    return lines


def _environ(pid):
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            raw = f.read()
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    if stat[stat.rfind(b")") + 2:][:1] in (b"Z", b"X"):
        return None  # a zombie is gone for every purpose but its exit status
    return dict(item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)


def job_processes(job_id):
    """{pid: LAUNCH_ROLE} of every live process that carries the job's marker (guards and roles)."""
    found = {}
    marker = job_id.encode()
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            env = _environ(entry)
            if env and env.get(b"LAUNCH_JOB_ID") == marker:
                kind = "role" if b"DMLC_ROLE" in env else "guard"
                found[int(entry)] = (env.get(b"LAUNCH_ROLE", b"?").decode(), kind)
    return found


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
