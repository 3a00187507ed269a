"""The checkpoint search (launcher/jobs/checkpoints.py) and its program on the hosts (infra/transport/remote/checkpoint_scan.py):
which files are checkpoints and in what order, the newest whole one on this machine, the newest every worker
host has; the program run exactly as shipped (`python -S -c SOURCE`: request in, reply out); and on the bed,
one exec per host that reads the files there: no SFTP at all."""
import json
import os
import struct
import subprocess
import sys

import pytest

from mxlaunch.errors import CommandError
from mxlaunch.launcher.jobs import checkpoints
from mxlaunch.infra.transport import ssh
from mxlaunch.launcher.jobs.checkpoints import Checkpoint
from mxlaunch.infra.transport.hosts import Host
from mxlaunch.launcher.jobs.plan import JobSpec
from mxlaunch.infra.transport.remote import checkpoint_scan, source
from mxlaunch.infra.transport.ssh import SSHOptions
from mxlaunch.infra.transport.target import ssh_target
from testkit import bed as testbed
pytestmark = pytest.mark.timeout(60)

WHOLE = struct.pack("<QQQQ", 0x112, 0, 0, 0)  # a whole MXNet .params file holding no arrays
CUT = WHOLE[:-3]  # a writer killed mid-save


def files(folder, cut=(), **times):
    """m-symbol.json and each named params file (whole unless in `cut`), its mtime `times[name]` if given."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "m-symbol.json").write_text("{}")
    for name, mtime in times.items():
        path = folder / (name.replace("_", "-") + ".params")
        path.write_bytes(CUT if name in cut else WHOLE)
        os.utime(path, (mtime, mtime))


# ---------------------------------------------------------------------------------------- the rules
def test_checkpoints_order_by_epoch_then_batch_and_mid_epoch_ones_are_found(tmp_path):
    names = ["m-symbol.json", "m-0003.params", "m-0003-000012.params", "m-0003-000007.params", "m-0004.params.tmp-9",
             "m-0003-000000.params", "m-0002-000040.params", "other-0009.params", "m-0003-000012.states"]
    assert checkpoint_scan.points_in(names, "m") == {(2, 40), (3, 0), (3, 7), (3, 12)}
    assert checkpoint_scan.points_in(names[1:], "m") == set()  # no symbol file: no checkpoint
    assert Checkpoint(3, 12) < Checkpoint(4) and Checkpoint(3) < Checkpoint(3, 7)
    assert (str(Checkpoint(3, 12)), str(Checkpoint(3))) == ("epoch 3 batch 12", "epoch 3")
    assert Checkpoint(3, 12).params("/c/m") == "/c/m-0003-000012.params"
    assert Checkpoint(3).params("m") == "m-0003.params"
    # on disk: a cut-short newest one is skipped for the previous whole one
    files(tmp_path, cut=("m_0003_000012",), m_0003=1, m_0003_000007=1, m_0003_000012=1)
    assert checkpoints.newest_local(str(tmp_path / "m")) == Checkpoint(3, 7)
    spec = JobSpec(command=("t",), num_workers=1, num_servers=1, hosts=(Host.loopback(),), workdir=str(tmp_path))
    assert checkpoints.newest_everywhere(type("T", (), {"local": True})(), spec, "m") == (Checkpoint(3, 7), {})


def test_a_remote_job_resumes_from_the_newest_point_every_worker_host_has():
    hosts = (Host("10.0.0.1", slots=1), Host("10.0.0.2", slots=1))
    spec = JobSpec(command=("t",), num_workers=2, num_servers=1, hosts=hosts, local=False, workdir="/efs/w")
    listing = {hosts[0]: {Checkpoint(2), Checkpoint(2, 30)},
               hosts[1]: {Checkpoint(2), Checkpoint(2, 30), Checkpoint(3)}}
    found = checkpoints.newest_everywhere(type("T", (), {"local": False})(), spec, "ck/m", lambda t, h, p: listing)
    assert found == (Checkpoint(2, 30), listing)


def test_a_damaged_array_header_costs_no_more_memory_than_the_file_and_the_previous_checkpoint_is_taken(tmp_path):
    # one array whose ndim says 2**31 - 1: reading its shape as written would allocate 17 GB
    damaged = struct.pack("<QQQIii", 0x112, 0, 1, checkpoint_scan.V2_MAGIC, 0, 2 ** 31 - 1) + bytes(64)
    files(tmp_path, m_0001=1, m_0002=2)
    (tmp_path / "m-0002.params").write_bytes(damaged)
    with open(tmp_path / "m-0002.params", "rb") as stream:
        with pytest.raises(checkpoint_scan.Incomplete, match="ndim"):
            checkpoint_scan.check(stream, len(damaged))
    assert checkpoints.newest_local(str(tmp_path / "m")) == Checkpoint(1)


# ------------------------------------------------------------------------------ the program as shipped
def scan(requests, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-S", "-c", source("checkpoint_scan")], cwd=cwd, capture_output=True,
                          text=True, timeout=30, input="".join(json.dumps(r) + "\n" for r in requests))


def replies(proc) -> list:
    assert proc.returncode == 0, proc.stderr
    return [checkpoint_scan.parse_reply(line) for line in proc.stdout.splitlines()]


def test_the_program_lists_with_stamps_then_names_the_first_whole_one_it_is_asked_about(tmp_path):
    files(tmp_path / "ck", cut=("m_0003",), m_0001=1000, m_0002_000005=2000, m_0003=3000)
    (tmp_path / "ck" / "m-0004.params.tmp-7").write_bytes(WHOLE)
    listed, whole = replies(scan([{"prefix": "ck/m"}, {"check": [[3, 0], [2, 5], [1, 0]]}], cwd=tmp_path))
    assert sorted(listed["found"]) == [[1, 0, 1000, len(WHOLE)], [2, 5, 2000, len(WHOLE)], [3, 0, 3000, len(CUT)]]
    assert whole == {"whole": [2, 5]}  # 3 is cut short; 1 is never read
    assert replies(scan([{"prefix": "ck/m"}, {"check": [[3, 0]]}], cwd=tmp_path))[1] == {"whole": None}
    # stdin's end after the listing: nothing more to do; no directory: no checkpoint
    assert len(replies(scan([{"prefix": str(tmp_path / "ck" / "m")}], cwd="/"))) == 1
    assert replies(scan([{"prefix": "nowhere/m"}], cwd=tmp_path)) == [{"found": []}]


def test_parse_reply_takes_only_the_programs_marked_lines():
    assert checkpoint_scan.parse_reply(f'{checkpoint_scan.MARKER} {{"whole": null}}') == {"whole": None}
    assert checkpoint_scan.parse_reply(f"{checkpoint_scan.MARKER} {{not json") is None
    assert checkpoint_scan.parse_reply('{"whole": null}') is None


# ------------------------------------------------------------------------------- on the bed, over SSH
bed = testbed.bed_fixture(2)


@pytest.fixture
def no_sftp(monkeypatch):
    """Every exec on a connection counted; an SFTP session fails the test."""
    execs = []
    real = ssh.Connection.open_channel

    def counted(self, argv, timeout=None):
        execs.append(self.host)
        return real(self, argv, timeout)

    def refused(self, timeout=60.0):
        raise AssertionError("the checkpoint search opened an SFTP session")
    monkeypatch.setattr(ssh.Connection, "open_channel", counted)
    monkeypatch.setattr(ssh.Connection, "sftp", refused)
    return execs


@pytest.mark.bed
@pytest.mark.usefixtures("no_agent")
def test_each_host_reads_its_own_files_in_one_exec_and_an_older_runs_whole_file_hides_nothing(bed, tmp_path, no_sftp):
    """Host 0 holds an older run's whole epoch 9 and this job's cut-short epoch 2 and whole epoch 1: the
    filter (`mine`) goes first, so host 0 checks 2, then 1, in the same exec. Host 1's files are elsewhere."""
    files(tmp_path / "a", cut=("m_0002",), m_0009=1000, m_0001=2000, m_0002=2000)
    files(tmp_path / "b", m_0001=2000)
    target = ssh_target(bed.hosts, str(tmp_path), "/usr/bin/python3", SSHOptions(key=bed.key,
                                                                              known_hosts=bed.known_hosts))
    older = checkpoints.Older({h: frozenset({(Checkpoint(9), (1000, len(WHOLE)))}) for h in bed.hosts})
    asked = []

    def mine(where, point, stamp):
        asked.append((where, point))
        return older.mine(where, point, stamp)
    found = checkpoints.remote_points(target, bed.hosts[:1], str(tmp_path / "a" / "m"), mine)
    assert found == {bed.hosts[0]: {Checkpoint(1)}} and no_sftp == [bed.hosts[0]]
    assert sorted(point for _, point in asked) == [Checkpoint(1), Checkpoint(2), Checkpoint(9)]
    assert {where for where, _ in asked} == {bed.hosts[0]}
    assert checkpoints.remote_points(target, bed.hosts[:1], str(tmp_path / "a" / "m")) == {
        bed.hosts[0]: {Checkpoint(1), Checkpoint(2), Checkpoint(9)}}  # without the filter: 9 is the newest whole
    stamps = checkpoints.remote_stamps(target, bed.hosts, str(tmp_path / "b" / "m"))  # both hosts at once
    assert stamps == {h: {Checkpoint(1): (2000, len(WHOLE))} for h in bed.hosts}  # mtime in whole seconds
    assert len(no_sftp) == 1 + 1 + 2  # one exec per host and search


@pytest.mark.bed
@pytest.mark.usefixtures("no_agent")
def test_a_host_whose_interpreter_is_missing_fails_the_search_in_one_line_naming_it(bed, tmp_path):
    target = ssh_target(bed.hosts, str(tmp_path), "/nonexistent/python3", SSHOptions(key=bed.key,
                                                                                  known_hosts=bed.known_hosts))
    with pytest.raises(CommandError) as caught:
        checkpoints.remote_points(target, bed.hosts, str(tmp_path / "m"))
    message = caught.value.format_message()
    assert "\n" not in message and all(f"{h.target}: interpreter /nonexistent/python3 not found" in message
                                       for h in bed.hosts)
