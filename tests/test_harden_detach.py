"""Detached runs that can always be cleaned up and stopped safely: `launch stop` removes only the files a key
folder was given, never a path a record names; a detached start removes its key folder on every failure path,
and the next start sweeps one a crashed start left; the remote pid is taken only from the wrapper's own line,
never from what a shell start-up file prints (a real login shell on an instance-like bed host)."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from mxlaunch.errors import CommandError
from mxlaunch.infra.transport.remote import detach_starter as starter
from mxlaunch.launcher.jobs import detached
from mxlaunch.launcher.jobs import launcher_record as runstate
from testkit import require
from testkit.jobs import launch_argv

pytestmark = pytest.mark.timeout(120)
RUN = "20260101-000000-abcd0123"
IGNORES_TERM = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); time.sleep(120)"


@pytest.fixture
def stubborn():
    """A process that ignores SIGTERM: `launch stop` has to SIGKILL it, then removes the key folder itself."""
    proc = subprocess.Popen([sys.executable, "-c", IGNORES_TERM], stdout=subprocess.PIPE)
    assert proc.stdout.readline() == b"up\n"  # its SIGTERM handler is in place
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.wait(10)


def detached_run(runs, pid, **fields):
    """A detached run's directory and its start record (as the starter writes it) for process `pid`."""
    run_dir = runs / RUN
    run_dir.mkdir(parents=True)
    (run_dir / "job.yaml").write_text("job_id: abcd0123\nmode: hosts\n")
    record = runs / ".detached" / f"{RUN}.json"
    record.parent.mkdir()
    data = {"pid": pid, "process_start": runstate.process_start(pid), **runstate.machine(),
            "started": "2026-01-01T00:00:00.000+00:00", "cluster": "heal", **fields}
    record.write_text(json.dumps(data))
    return run_dir


def stop(run_dir, home, *args):
    proc = subprocess.run(launch_argv("stop", str(run_dir), *args), capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, HOME=str(home)), stdin=subprocess.DEVNULL)
    return proc.returncode, proc.stdout, proc.stderr


# ------------------------------------------------------------------- launch stop: only what it created

def test_stop_never_removes_a_directory_a_planted_record_names(tmp_path, stubborn):
    """Before: the record's cluster went into the key folder's path unchecked, and after SIGKILL that path
    was removed whole (here: HOME/../victim/RUN)."""
    home = tmp_path / "home"
    (home / ".mxlaunch" / "detach").mkdir(parents=True)  # a home where detached runs were started before
    victim = tmp_path / "victim" / RUN
    victim.mkdir(parents=True)
    (victim / "thesis.tex").write_text("years of work")
    run_dir = detached_run(tmp_path / "runs", stubborn.pid, cluster="../../../victim")
    code, out, err = stop(run_dir, home, "--timeout", "0.5")
    assert (victim / "thesis.tex").read_text() == "years of work"
    # a record naming a path for its cluster is damaged: not acted on, said in one line
    assert code == 1 and err.count("\n") == 1 and "no readable launcher record" in err, (out, err)
    assert stubborn.poll() is None


def test_stop_after_sigkill_removes_only_the_key_folders_own_files(tmp_path, stubborn):
    home = tmp_path / "home"
    folder = home / ".mxlaunch" / "detach" / "heal" / RUN
    folder.mkdir(parents=True)
    for name in ("id_key", "known_hosts", "id_key.tmp"):
        (folder / name).write_text("k")
    (folder / "notes.txt").write_text("mine")  # not something the launcher put there
    run_dir = detached_run(tmp_path / "runs", stubborn.pid)
    code, out, err = stop(run_dir, home, "--timeout", "0.5")
    assert code == 1 and "was killed (SIGKILL)" in err, (out, err)
    assert stubborn.wait(10) == -signal.SIGKILL
    assert sorted(os.listdir(folder)) == ["notes.txt"]


def test_removing_a_key_folder_never_goes_through_a_link(tmp_path):
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / "id_key").write_text("someone else's")
    keys = tmp_path / "keys" / "heal"
    keys.mkdir(parents=True)
    (keys / RUN).symlink_to(target)
    starter.remove_keys(str(keys / RUN))
    assert (target / "id_key").read_text() == "someone else's"


# ------------------------------------------------------------ a detached start cleans up on every failure

class LocalSFTP:
    """The SFTP requests of a detached start, on this machine's files under `home`."""

    def __init__(self, home, fail_on=None):
        self.home, self.fail_on = str(home), fail_on

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    def normalize(self, path):
        return self.home

    def mkdir(self, path, mode):
        os.mkdir(path, mode)

    def chmod(self, path, mode):
        os.chmod(path, mode)

    def lstat(self, path):
        return os.lstat(path)

    def listdir(self, path):
        return os.listdir(path)

    def remove(self, path):
        os.remove(path)

    def rmdir(self, path):
        os.rmdir(path)

    def posix_rename(self, a, b):
        os.rename(a, b)

    def open(self, path, mode):
        if self.fail_on and path.endswith(self.fail_on):
            raise socket.timeout("timed out")  # the connection stalls mid-way
        f = open(path, "wb")
        f.chmod = lambda m: os.chmod(path, m)
        return f


class Instance0:
    """The first host of a detached start: SFTP here, and the starter's reply as `reply` decides."""

    def __init__(self, home, reply, fail_on=None):
        self.home, self.reply, self.fail_on = home, reply, fail_on

    def sftp(self, timeout):
        return LocalSFTP(self.home, self.fail_on)

    def run(self, argv, timeout, stdin=None):
        assert os.path.isfile(json.loads(stdin)["options"][-1])  # the launcher was to get its known_hosts
        if isinstance(self.reply, BaseException):
            raise self.reply
        return self.reply


@pytest.mark.parametrize("reply, fail_on", [
    ((1, "", "launch: error: run exists"), None),  # the starter refused
    ((-1, "", ""), None),  # it did not answer in time
    (EOFError("the connection dropped"), None),
    (socket.timeout("timed out"), None),
    (KeyboardInterrupt(), None),  # Ctrl-C while it starts
    ((0, "Welcome!\n", ""), None),  # a reply that is not the starter's
    ((0, '{"pid": 1, "console": "/x"}\n', ""), None),  # a pid that is no launcher's
    ((0, '{"pid": 4242, "console": "/x"}\n', ""), "known_hosts.tmp"),  # the second file never arrives
], ids=["refused", "timeout", "eof", "socket-timeout", "ctrl-c", "garbage", "pid-1", "put-fails"])
def test_a_failed_detached_start_leaves_no_key_on_instance0(tmp_path, reply, fail_on):
    key = tmp_path / "cluster_key"
    key.write_text("PRIVATE KEY")
    first = Instance0(tmp_path / "home", reply, fail_on)
    (tmp_path / "home").mkdir()
    with pytest.raises((CommandError, EOFError, socket.timeout, KeyboardInterrupt, OSError)):
        detached._start_on(first, "/v/bin/python", "heal", RUN, str(key), "10.0.0.1 ssh-ed25519 AAAA\n",
                           lambda k, kh: ["--ssh-key", k, "--known-hosts", kh],
                           {"run_dir": f"{detached.RUNS}/{RUN}", "extra": {"cluster": "heal"}})
    assert not (tmp_path / "home" / ".mxlaunch" / "detach" / "heal" / RUN).exists()


def test_a_started_launcher_keeps_its_key(tmp_path):
    key = tmp_path / "cluster_key"
    key.write_text("PRIVATE KEY")
    (tmp_path / "home").mkdir()
    first = Instance0(tmp_path / "home", (0, 'motd\n{"pid": 4242, "console": "/efs/x.log"}\n', ""))
    run = detached._start_on(first, "/v/bin/python", "heal", RUN, str(key), "h k\n",
                             lambda k, kh: ["--ssh-key", k, "--known-hosts", kh],
                             {"run_dir": f"{detached.RUNS}/{RUN}", "extra": {"cluster": "heal"}})
    assert (run.pid, run.console) == (4242, "/efs/x.log")
    assert (tmp_path / "home" / ".mxlaunch" / "detach" / "heal" / RUN / "id_key").read_text() == "PRIVATE KEY"


def test_the_sweep_removes_a_key_folder_whose_start_never_wrote_a_record(tmp_path):
    """Before: a key folder without a start record was skipped for good ('being started')."""
    keys, runs = tmp_path / "keys" / "heal", tmp_path / "runs"
    for run in ("crashed", "starting"):
        (keys / run).mkdir(parents=True)
        (keys / run / "id_key").write_text("k")
    long_ago = time.time() - starter.ORPHAN_AGE - 60
    os.utime(keys / "crashed" / "id_key", (long_ago, long_ago))
    starter.sweep_keys(str(keys), str(runs))
    assert sorted(os.listdir(keys)) == ["starting"]  # one being started now keeps its key


# ------------------------------------------------ the remote pid: the wrapper's line, not a start-up file's

@pytest.fixture(scope="module")
def noisy_login(tmp_path_factory):
    """A connection as the login user of an instance-like bed host whose ~/.bashrc prints a number, a line and
    words without a newline first, as a careless start-up file does (bash runs it for every SSH command)."""
    require.need_bed()
    from mxlaunch.infra.transport.ssh import SSHOptions, connect_all
    from testkit import bed as beds
    from testkit.image import Image, boot, inside_argv

    image = Image()
    bed = beds.up(1, image=image)
    try:
        host = bed.members[0]
        boot(host.sshd_pid, image, open(bed.key + ".pub").read())
        subprocess.run(inside_argv(host.sshd_pid, image.user) + [
            "sh", "-c", 'printf "echo 999999\\necho hello from bashrc\\nprintf no-newline\\n" > "$HOME/.bashrc"'],
            check=True, timeout=30)
        options = SSHOptions(key=bed.key, known_hosts=bed.known_hosts, user=image.user, config_path=None)
        (target,) = bed.hosts
        connections = connect_all([target], options)
        connections.raise_if_failed()
        yield connections[target], bed
        connections.close()
    finally:
        bed.down()


def test_run_output_and_the_pid_skip_what_a_start_up_file_prints(noisy_login):
    conn, _ = noisy_login
    code, out, err = conn.run(["sh", "-c", 'echo "$$"; echo second'], timeout=30)
    assert code == 0, err
    pid, second = out.splitlines()
    assert second == "second" and int(pid) > 1 and "999999" not in out and "bashrc" not in out \
        and "no-newline" not in out


def test_stream_passes_what_a_start_up_file_prints_on_and_finds_the_pid_after_words_without_a_newline(noisy_login):
    """What the start-up file prints is passed on as it came, its last words without a newline too; the
    wrapper's pid line is not (before: those words began the wrapper's line, whose pid was then never found)."""
    conn, _ = noisy_login
    lines, pids = [], []
    assert conn.stream("echo first", lines.append, lines.append, started=pids.append) == 0
    # (the bed's shells may run the start-up file more than once: its words come before the pid line each time)
    assert lines[:2] == ["999999", "hello from bashrc"] and lines[-2:] == ["no-newline", "first"], lines
    assert "" not in lines and not any("@@mxlaunch-pid" in line for line in lines) and int(pids[0]) > 1, (lines, pids)


def test_a_command_past_its_bound_is_killed_by_its_own_pid_not_a_printed_number(noisy_login):
    """Before: the first line, 999999 here (1 in the wild: `kill -- -1` then signals every process of the
    user), was taken for the pid, and the command kept running."""
    conn, bed = noisy_login
    mark = f"mxlaunch-test-{os.getpid()}-{time.monotonic_ns()}"
    code, _, _ = conn.run(["sh", "-c", f'exec sleep 300 # {mark}'], timeout=2)
    assert code == -1
    deadline = time.monotonic() + 10
    while any(mark in open(f"/proc/{p}/cmdline", "rb").read().decode(errors="replace")
              for p in bed.job_pids(0) if os.path.exists(f"/proc/{p}/cmdline")):
        assert time.monotonic() < deadline, "the command outlived its bound"
        time.sleep(0.05)
    kills = [c for c in bed.session_commands(0) if c.startswith("kill ")]
    assert kills and all("999999" not in c and " -1 " not in c for c in kills), kills


def test_pid_lines_never_name_process_1_or_0():
    from mxlaunch.infra.transport.ssh import Connection

    class Channel:
        pid_marker = b"@@mxlaunch-pid-00"

    assert Connection.pid_in(Channel, b"@@mxlaunch-pid-00 4242") == "4242"
    for line in (b"1", b"@@mxlaunch-pid-00 1", b"@@mxlaunch-pid-00 0", b"@@mxlaunch-pid-01 4242", b"4242",
                 b"@@mxlaunch-pid-00 -1", b"@@mxlaunch-pid-00 42 42"):
        assert Connection.pid_in(Channel, line) is None, line
    assert Connection._split_pid(Channel, b"1\nnoise\n@@mxlaunch-pid-00 4242\nout\n") == ("4242", b"out\n")
