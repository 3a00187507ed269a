"""Start a launcher in its own session on this machine and return at once: what `launch train --cluster NAME
--detach` runs on instance 0 (`python -m mxlaunch.infra.transport.remote.detach_starter`, launcher/jobs/detached.py).
Standard library only, and nothing heavy imported: the laptop waits for it.

stdin: one JSON object
    {"run_dir": RUNS/<run>, "options": [...], "command": [...], "env_file": "KEY=VALUE\\n...",
     "environ": {KEY: VALUE}, "cwd": DIR, "extra": {...}, "resume": false, "keys": KEYS/<cluster>}
stdout: one JSON line {"pid": P, "console": PATH}.

"resume": the run exists (`launch train --cluster NAME --detach --resume RUN`): its console is appended to
and its start record written anew. "keys": the folder of the cluster's per-run key folders (KEYS/<cluster>/<run>
holds the SSH key and known_hosts a detached launcher uses; the launcher removes its own when it ends,
launcher/cli/train.py). One left by a launcher that could not remove it (SIGKILL, a crash before it began) is
removed here, at the next start on this cluster: its key is older than its run's start record and that
run's launcher is gone, or it has no start record and is older than ORPHAN_AGE (a start that failed before
writing one). Only the files a key folder was given are removed, never through a link.

The launcher is `python -m mxlaunch.launcher train OPTIONS [--env-file /dev/fd/N] -- COMMAND` with this
interpreter: in its own session (setsid: no terminal, nothing reaches it when the SSH session ends), stdin
/dev/null, stdout and stderr to RUNS/.detached/<run>.log. Secrets never touch a command line or a disk: the
roles' environment (`env_file`) comes through a pipe N that only the launcher reads, and `environ` (the
values of its --env-worker/--env-server KEY) is set in the launcher's own environment.

Its start record RUNS/.detached/<run>.json (pid, process start time; launcher/jobs/launcher_record.py reads it)
is written here, before the launcher has a run directory of its own: `launch stop` and `launch runs` see it
from the first moment (the launcher writes RUN/launcher.json with the same pid later: exec keeps it).
"""
import datetime
import json
import os
import socket
import stat
import subprocess
import sys
import time

DETACHED_DIR = ".detached"  # mxlaunch.launcher.jobs.launcher_record.DETACHED_DIR
KEYS = ".mxlaunch/detach"  # in instance 0's home: KEYS/<cluster>/<run>/ holds a detached launcher's key
KEY_NAME = "id_key"  # and known_hosts (launcher/jobs/detached.py puts them there)
KEY_FILES = (KEY_NAME, "known_hosts")
ORPHAN_AGE = 600  # seconds: a key folder without a start record this old is a start that failed
RECORD_LIMIT = 65536


def process_start(pid):
    """As mxlaunch.launcher.jobs.launcher_record.process_start: /proc/PID/stat field 22, None if the process is gone (a
    zombie too)."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return None if fields[0] in (b"Z", b"X") else int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def machine():
    """As mxlaunch.launcher.jobs.launcher_record.machine: boot_id and hostname."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot_id = f.read().strip()
    except OSError:
        boot_id = None
    return {"boot_id": boot_id, "hostname": socket.gethostname()}


def remove_keys(folder):
    """A run's key folder: only the files put there (KEY_FILES, and their temporary names), then the folder if
    that emptied it. Never through a link, nothing else touched; a missing folder is fine."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return
    try:
        for name in KEY_FILES:
            for each in (name, name + ".tmp"):
                try:
                    os.unlink(each, dir_fd=fd)
                except OSError:
                    pass
    finally:
        os.close(fd)
    try:
        os.rmdir(folder)
    except OSError:
        pass  # not empty (something not ours is in it), or gone


def sweep_keys(keys, runs, now=None):
    """Remove the key folders of runs whose launcher is gone: the key is no newer than the run's start record
    (a resume being prepared has put a newer one) and that record's process is not running; or there is no
    start record at all and the key is older than ORPHAN_AGE (its start failed before the record was written;
    a start in progress writes one within seconds)."""
    now = time.time() if now is None else now
    for run in os.listdir(keys) if os.path.isdir(keys) else ():
        key, record = os.path.join(keys, run, KEY_NAME), os.path.join(runs, DETACHED_DIR, run + ".json")
        try:
            key_time = os.lstat(key).st_mtime
        except OSError:
            key_time = None
        try:
            if key_time is not None and key_time > os.stat(record).st_mtime:
                continue
            data = read_record(record)
        except FileNotFoundError:
            if key_time is None or now - key_time > ORPHAN_AGE:
                remove_keys(os.path.join(keys, run))
            continue
        except (OSError, ValueError):
            continue  # not ours to judge
        start = process_start(data["pid"]) if isinstance(data.get("pid"), int) else None
        if not (data.get("boot_id") == machine()["boot_id"] and start is not None
                and start == data.get("process_start")):
            remove_keys(os.path.join(keys, run))


def read_record(path):
    """A start record's JSON object, never through a link and at most RECORD_LIMIT bytes."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ValueError("not a regular file")
        data = json.loads(f.read(RECORD_LIMIT + 1).decode("utf-8"))
    if not isinstance(data, dict):
        raise ValueError("not a record")
    return data


def paths(run_dir):
    parent, name = os.path.split(os.path.normpath(run_dir))
    folder = os.path.join(parent, DETACHED_DIR)
    return folder, os.path.join(folder, name + ".log"), os.path.join(folder, name + ".json")


def write_record(path, pid, extra):
    data = dict(extra, pid=pid, process_start=process_start(pid), **machine(),
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
    resume = bool(config.get("resume"))
    if resume and not os.path.isfile(os.path.join(run_dir, "job.yaml")):
        raise SystemExit("launch: error: %s is not a run (no job.yaml): nothing to resume" % run_dir)
    if not resume and (os.path.lexists(run_dir) or os.path.lexists(record)):
        raise SystemExit("launch: error: run %s already exists" % run_dir)
    if config.get("keys"):
        sweep_keys(config["keys"], os.path.dirname(folder))
    # a resume appends to the run's console; a new run's is new (never through a planted link either way)
    out = os.open(console, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
                  | (os.O_APPEND if resume else os.O_EXCL), 0o600)
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
