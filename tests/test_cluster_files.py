"""`launch cluster put` and `exec` (issue 11, item 3), on real sshd hosts of the bed: SFTP copies that skip what
is already there, and remote commands whose exit status comes back. (The whole commands, cluster resolution
included, run in the cluster box: tests/test_box_cluster.py.)"""
import os
import socket
import subprocess
import threading
import time

import pytest

from mxlaunch.errors import UsageError
from mxlaunch.launcher.cli import cluster_files as files_cmd
from mxlaunch.infra.transport.ssh import SSHOptions, connect
from testkit import bed as testbed
from testkit.jobs import launch_argv
pytestmark = [pytest.mark.timeout(60)]


def test_put_plans_a_folder_into_dest_under_its_own_name(tmp_path):
    src = tmp_path / "digits"
    (src / "sub").mkdir(parents=True)
    (src / "a.rec").write_bytes(b"12345")
    (src / "sub" / "b.idx").write_bytes(b"1")
    copies = files_cmd.plan_copies(str(src), "/efs/data/")
    assert [(c.remote, c.size) for c in copies] == [("/efs/data/digits/a.rec", 5), ("/efs/data/digits/sub/b.idx", 1)]
    assert [c.remote for c in files_cmd.plan_copies(str(src / "a.rec"), "/efs/data")] == ["/efs/data/a.rec"]


def test_put_refuses_links_inside_src_by_name_unless_told_to_follow_them(tmp_path):
    src = tmp_path / "data"
    (src / "sub").mkdir(parents=True)
    (src / "a.rec").write_bytes(b"abc")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "b.rec").write_bytes(b"b")
    (src / "linked").symlink_to(outside)  # a folder
    (src / "sub" / "c.rec").symlink_to(src / "a.rec")  # a file
    (src / "dangling").symlink_to(tmp_path / "gone")
    (src / "sub" / "loop").symlink_to(src)
    with pytest.raises(UsageError) as refused:
        files_cmd.plan_copies(str(src), "/efs/data/")
    assert ("holds 4 symbolic link(s) that put does not copy: data/dangling, data/linked, data/sub/c.rec, "
            "data/sub/loop (give -L/--follow-links" in refused.value.format_message())
    with pytest.raises(UsageError) as refused:
        files_cmd.plan_copies(str(src), "/efs/data/", follow_links=True)
    assert "holds 2 symbolic link(s) that put does not copy: data/dangling, data/sub/loop" in refused.value.format_message()
    (src / "dangling").unlink()
    (src / "sub" / "loop").unlink()
    copies = files_cmd.plan_copies(str(src), "/efs/data/", follow_links=True)
    assert [(c.remote, c.size) for c in copies] == [("/efs/data/data/a.rec", 3), ("/efs/data/data/linked/b.rec", 1),
                                                    ("/efs/data/data/sub/c.rec", 3)]
    assert [c.remote for c in files_cmd.plan_copies(str(src / "linked"), "/efs/x")] == ["/efs/x/linked/b.rec"]


def test_put_refuses_fifos_and_sockets_by_name_also_behind_links_and_as_src(tmp_path):
    """Before: they were skipped and the put reported success."""
    src = tmp_path / "data"
    (src / "sub").mkdir(parents=True)
    (src / "a.rec").write_bytes(b"abc")
    os.mkfifo(src / "sub" / "pipe")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(src / "sock"))
        with pytest.raises(UsageError) as refused:
            files_cmd.plan_copies(str(src), "/efs/data/")
        assert ("holds 2 file(s) that put does not copy: data/sock, data/sub/pipe (FIFOs, sockets or devices"
                in refused.value.format_message())
    (src / "sock").unlink()
    os.mkfifo(tmp_path / "elsewhere")
    (src / "sub" / "pipe").unlink()
    (src / "sub" / "pipe").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(UsageError, match=r"holds 1 file\(s\) that put does not copy: data/sub/pipe"):
        files_cmd.plan_copies(str(src), "/efs/data/", follow_links=True)
    with pytest.raises(UsageError, match=r"holds 1 file\(s\) that put does not copy: elsewhere"):
        files_cmd.plan_copies(str(tmp_path / "elsewhere"), "/efs/data/")
    # the command: one line, exit 2, before any cluster is looked up (nothing is uploaded)
    proc = subprocess.run(launch_argv("cluster", "put", "no-such-cluster", str(src), "-L"), capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "data/sub/pipe" in proc.stderr, proc.stderr


def test_exec_quotes_an_argv_exactly_and_runs_one_word_as_a_command_line():
    assert files_cmd.remote_command(("ls", "a b", "$HOME"), "/efs/v/bin") == \
        "PATH=/efs/v/bin:\"$PATH\"; export PATH; ls 'a b' '$HOME'"
    assert files_cmd.remote_command(("cd /efs && ls",), "/efs/v/bin").endswith("; cd /efs && ls")


class _Instance:
    """A fake connection whose command runs until its group is signalled (bounded)."""

    def __init__(self, i, began, on_start):
        self.i, self.began, self.on_start, self.ended = i, began, on_start, threading.Event()

    def stream(self, command, out, err, started):
        started(str(1000 + self.i))
        self.began.append(self.i)
        self.on_start()
        self.ended.wait(30)
        return 143

    def kill_group(self, pid, signal_name="KILL"):
        assert pid == str(1000 + self.i)
        self.ended.set()


def test_exec_all_on_more_instances_than_threads_starts_no_queued_command_after_ctrl_c(monkeypatch):
    """40 instances, 32 threads: Ctrl-C while the first 32 run stops them, and the 8 queued never start
    (before: each started as soon as a thread was free). The Ctrl-C comes where the main thread waits for the
    results (a signal can be lost just before a thread blocks: not what is tested here)."""
    began, running = [], threading.Event()
    before = set(threading.enumerate())

    class Pending:
        def __init__(self, future):
            self.future = future

        def result(self):
            assert running.wait(10)
            raise KeyboardInterrupt

        def cancel(self):
            return self.future.cancel()

    class Pool(files_cmd.ThreadPoolExecutor):
        def submit(self, *args, **kwargs):
            return Pending(super().submit(*args, **kwargs))

    def on_start():
        if len(began) >= 32:
            running.set()
    monkeypatch.setattr(files_cmd, "ThreadPoolExecutor", Pool)
    hosts = [f"10.0.0.{i}" for i in range(40)]
    connections = {h: _Instance(i, began, on_start) for i, h in enumerate(hosts)}
    with pytest.raises(KeyboardInterrupt):
        files_cmd._exec_all("c", list(range(40)), hosts, connections, "sleep 600")
    for thread in set(threading.enumerate()) - before:  # the pool's threads end once nothing is queued
        thread.join(10)
        assert not thread.is_alive()
    assert sorted(began) == list(range(32)) and all(c.ended.is_set() for c in list(connections.values())[:32])


bed = testbed.bed_fixture(1)


@pytest.fixture
def conn(bed):
    c = connect(bed.hosts[0], SSHOptions(key=bed.key, known_hosts=bed.known_hosts, use_agent=False))
    yield c
    c.close()


@pytest.mark.bed
@pytest.mark.usefixtures("no_agent")
def test_put_twice_copies_nothing_the_second_time_and_a_changed_file_again(conn, tmp_path):
    src = tmp_path / "data"
    src.mkdir()
    (src / "train.rec").write_bytes(os.urandom(300_000))
    (src / "train.idx").write_bytes(b"0\t0\n")
    dest = str(tmp_path / "efs")  # the host's view; the bed's hosts share this machine's files
    copies = files_cmd.plan_copies(str(src), dest)
    with conn.client.open_sftp() as sftp:
        assert files_cmd.copy_files(sftp, copies) == (2, 300_004)
        assert (tmp_path / "efs" / "data" / "train.rec").read_bytes() == (src / "train.rec").read_bytes()
        assert int(os.stat(tmp_path / "efs" / "data" / "train.rec").st_mtime) == copies[0].mtime
        assert files_cmd.copy_files(sftp, files_cmd.plan_copies(str(src), dest)) == (0, 0)
        later = time.time() + 100
        os.utime(src / "train.idx", (later, later))
        assert files_cmd.copy_files(sftp, files_cmd.plan_copies(str(src), dest)) == (1, 4)
    assert sorted(os.listdir(tmp_path / "efs" / "data")) == ["train.idx", "train.rec"]  # no .part left


@pytest.mark.bed
@pytest.mark.usefixtures("no_agent")
def test_exec_returns_the_remote_exit_status_and_passes_the_output_on(conn):
    out, err = [], []
    status = conn.stream(files_cmd.remote_command(("sh", "-c", "echo hi; echo oops >&2; exit 7"),
                                                              "/nonexistent"), out.append, err.append)
    assert (status, out, err) == (7, ["hi"], ["oops"])
    assert conn.stream(files_cmd.remote_command(("true",), "/x"), out.append, err.append) == 0
