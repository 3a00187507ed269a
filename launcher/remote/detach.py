"""Start a launcher in its own session on this machine and return at once: what `launch train --cluster NAME
--detach` runs on instance 0 (`python -m mxlaunch.launcher.remote.detach`, mxlaunch/infra/detach.py).
Standard library only, and nothing heavy imported: the laptop waits for it.

stdin: one JSON object
    {"run_dir": RUNS/<run>, "options": [...], "command": [...], "env_file": "KEY=VALUE\\n...",
     "environ": {KEY: VALUE}, "cwd": DIR, "extra": {...}}
stdout: one JSON line {"pid": P, "console": PATH}.

The launcher is `python -m mxlaunch.launcher train OPTIONS [--env-file /dev/fd/N] -- COMMAND` with this
interpreter: in its own session (setsid: no terminal, nothing reaches it when the SSH session ends), stdin
/dev/null, stdout and stderr to RUNS/.detached/<run>.log. Secrets never touch a command line or a disk: the
roles' environment (`env_file`) comes through a pipe N that only the launcher reads, and `environ` (the
values of its --env-worker/--env-server KEY) is set in the launcher's own environment.

Its start record RUNS/.detached/<run>.json (pid, process start time; mxlaunch/launcher/runstate.py reads it)
is written here, before the launcher has a run directory of its own: `launch stop` and `launch runs` see it
from the first moment (the launcher writes RUN/launcher.json with the same pid later: exec keeps it).
"""
import datetime
import json
import os
import subprocess
import sys

DETACHED_DIR = ".detached"  # mxlaunch.launcher.runstate.DETACHED_DIR


def process_start(pid):
    """As mxlaunch.launcher.runstate.process_start: /proc/PID/stat field 22, None if the process is gone."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            return int(f.read().rsplit(b")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def paths(run_dir):
    parent, name = os.path.split(os.path.normpath(run_dir))
    folder = os.path.join(parent, DETACHED_DIR)
    return folder, os.path.join(folder, name + ".log"), os.path.join(folder, name + ".json")


def write_record(path, pid, extra):
    data = dict(extra, pid=pid, process_start=process_start(pid),
                started=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds"))
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f)
        f.write("\n")
    os.replace(tmp, path)


def start(config):
    run_dir = config["run_dir"]
    folder, console, record = paths(run_dir)
    os.makedirs(folder, mode=0o700, exist_ok=True)
    if os.path.lexists(run_dir) or os.path.lexists(record):
        raise SystemExit("launch: error: run %s already exists" % run_dir)
    out = os.open(console, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    argv = [sys.executable, "-m", "mxlaunch.launcher", "train"] + [str(a) for a in config["options"]]
    env = dict(os.environ, PYTHONUNBUFFERED="1")  # its console file shows each line as it is printed
    env.update({str(k): str(v) for k, v in (config.get("environ") or {}).items()})
    read_end = write_end = None
    if config.get("env_file"):
        read_end, write_end = os.pipe()
        argv += ["--env-file", "/dev/fd/%d" % read_end]
    argv += ["--"] + [str(a) for a in config["command"]]
    cwd = config.get("cwd")
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env,
                            cwd=cwd if cwd and os.path.isdir(cwd) else None, start_new_session=True,
                            pass_fds=(read_end,) if read_end is not None else ())
    os.close(out)
    write_record(record, proc.pid, dict(config.get("extra") or {}, console=console))
    if read_end is not None:
        os.close(read_end)  # the launcher holds the only reader now: a launcher that dies unread is EPIPE
        try:
            with os.fdopen(write_end, "w", encoding="utf-8") as pipe:
                pipe.write(config["env_file"])
        except BrokenPipeError:
            pass  # it ended before reading its environment: its console says why
    proc.returncode = 0  # it is not ours to wait for: the launcher outlives this program by design
    return {"pid": proc.pid, "console": console}


def main():
    config = json.loads(sys.stdin.buffer.read().decode("utf-8"))
    sys.stdout.write(json.dumps(start(config)) + "\n")


if __name__ == "__main__":
    main()
