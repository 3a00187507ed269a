"""What the launcher fetches from a job's hosts (metrics.jsonl from the roles' run directory, under a WORKDIR/runs
that another user of the host may own): never through a planted link, only the user's own regular file in the
user's own directory, bounded in size and time, and one warning line when a copy is refused. Real sshd hosts
(the bed), the real remote reader."""
from __future__ import annotations

import os
import sys
import time

import pytest

from mxlaunch.infra.transport import ssh_runner
from mxlaunch.infra.transport.ssh import SSHOptions, connect_all
from testkit import bed as testbed

pytestmark = [pytest.mark.bed, pytest.mark.timeout(120), pytest.mark.usefixtures("no_agent")]
PYTHON = sys.executable  # the bed's hosts share this file system: the same interpreter path works there
NOBODY = 65534

bed = testbed.bed_fixture(1)


@pytest.fixture
def worker(bed):
    results = connect_all(bed.hosts[:1], SSHOptions(key=bed.key, known_hosts=bed.known_hosts, config_path=None))
    results.raise_if_failed()
    conn = results[bed.hosts[0]]
    yield conn
    conn.close()


def fetch(conn, tmp_path, remote):
    """fetch_run_files into a new local run directory: (what it fetched, the warnings it gave, local dir)."""
    local = tmp_path / "local"
    local.mkdir(exist_ok=True)
    warnings = []
    started = time.monotonic()
    fetched = ssh_runner.fetch_run_files([conn], str(local), str(remote), python=PYTHON, warn=warnings.append)
    assert time.monotonic() - started < ssh_runner.FETCH_TIMEOUT * 2 + 10
    return fetched, warnings, local


def remote_dir(tmp_path):
    remote = tmp_path / "work" / "runs" / "r1"
    remote.mkdir(parents=True)
    return remote


def test_the_users_own_metrics_are_fetched_byte_for_byte(worker, tmp_path):
    remote = remote_dir(tmp_path)
    data = b'{"epoch": 0, "validation-accuracy": 0.5}\n{"note": "\xff not utf-8"}\n'
    (remote / "metrics.jsonl").write_bytes(data)
    fetched, warnings, local = fetch(worker, tmp_path, remote)
    assert fetched == [str(local / "metrics.jsonl")] and not warnings
    assert (local / "metrics.jsonl").read_bytes() == data


def test_a_profile_may_be_larger_than_metrics_and_what_a_job_did_not_write_is_no_warning(worker, tmp_path):
    remote = remote_dir(tmp_path)
    profile = os.urandom(1024) * (ssh_runner.FETCH_LIMIT // 1024 + 1)  # past metrics.jsonl's bound
    (remote / "rank0_worker.json").write_bytes(profile)
    local = tmp_path / "local"
    local.mkdir()
    warnings = []
    fetched = ssh_runner.fetch_run_files([worker], str(local), str(remote), python=PYTHON, warn=warnings.append,
                                         names=("metrics.jsonl", "rank0_worker.json"))
    assert fetched == [str(local / "rank0_worker.json")] and not warnings
    assert (local / "rank0_worker.json").read_bytes() == profile


def test_a_metrics_link_to_another_file_is_never_followed(worker, tmp_path):
    """Another user who owns WORKDIR/runs points metrics.jsonl at the victim's own files."""
    remote = remote_dir(tmp_path)
    notes = tmp_path / "notes.txt"
    notes.write_text("the victim's notes\n")
    (remote / "metrics.jsonl").symlink_to(notes)
    fetched, warnings, local = fetch(worker, tmp_path, remote)
    assert fetched == [] and not (local / "metrics.jsonl").exists()
    assert len(warnings) == 1 and "metrics.jsonl is a symbolic link: not fetched" in warnings[0], warnings


def test_a_metrics_link_to_dev_zero_ends_at_once_and_writes_nothing(worker, tmp_path):
    """Before: 267 MB in 45 s, until the disk was full."""
    remote = remote_dir(tmp_path)
    (remote / "metrics.jsonl").symlink_to("/dev/zero")
    fetched, warnings, local = fetch(worker, tmp_path, remote)
    assert fetched == [] and os.listdir(local) == [] and len(warnings) == 1, warnings


def test_a_fifo_or_a_file_past_the_bound_is_refused_in_one_line(worker, tmp_path):
    remote = remote_dir(tmp_path)
    os.mkfifo(remote / "metrics.jsonl")
    fetched, warnings, local = fetch(worker, tmp_path, remote)
    assert fetched == [] and len(warnings) == 1 and "not a regular file" in warnings[0], warnings
    (remote / "metrics.jsonl").unlink()
    with open(remote / "metrics.jsonl", "wb") as f:
        f.truncate(ssh_runner.FETCH_LIMIT + 1)  # sparse: costs nothing to make
    fetched, warnings, local = fetch(worker, tmp_path, remote)
    assert fetched == [] and not (local / "metrics.jsonl").exists()
    assert len(warnings) == 1 and f"larger than {ssh_runner.FETCH_LIMIT} bytes" in warnings[0], warnings


def test_a_run_directory_that_is_a_link_or_another_users_is_not_read(worker, tmp_path):
    planted = tmp_path / "planted"
    planted.mkdir()
    (planted / "metrics.jsonl").write_text('{"epoch": 0}\n')
    runs = tmp_path / "work" / "runs"
    runs.mkdir(parents=True)
    (runs / "r1").symlink_to(planted)
    fetched, warnings, _ = fetch(worker, tmp_path, runs / "r1")
    assert fetched == [] and len(warnings) == 1 and "symbolic link or not a directory" in warnings[0], warnings
    (runs / "r1").unlink()
    (runs / "r1").mkdir()
    (runs / "r1" / "metrics.jsonl").write_text('{"epoch": 0}\n')
    os.chown(runs / "r1", NOBODY, NOBODY)  # someone else made it first
    fetched, warnings, _ = fetch(worker, tmp_path, runs / "r1")
    assert fetched == [] and len(warnings) == 1 and "not this user's own directory" in warnings[0], warnings


def test_a_host_that_does_not_answer_is_given_up_after_the_bound_and_its_reader_ended(worker, bed, tmp_path,
                                                                                      monkeypatch):
    """A hung file system: the reader there is ended, and the launcher goes on after FETCH_TIMEOUT."""
    monkeypatch.setattr(ssh_runner, "FETCH_TIMEOUT", 2.0)
    stuck = tmp_path / "stuck-python"
    stuck.write_text("#!/bin/sh\nexec sleep 300\n")
    stuck.chmod(0o755)
    remote = remote_dir(tmp_path)
    warnings = []
    started = time.monotonic()
    names = ("metrics.jsonl", "rank0_worker.json", "rank1_worker.json", "rank0_server.json")
    fetched = ssh_runner.fetch_run_files([worker], str(tmp_path), str(remote), python=str(stuck),
                                         warn=warnings.append, names=names)
    assert time.monotonic() - started < 10 and fetched == []
    # asked once for every file: one bound spent, one line (it was a bound and a line per file)
    assert warnings == [f"{', '.join(names)} on {worker.host.target}: no answer within 2s: not fetched"], warnings
    testbed.wait_for(lambda: not any("sleep" in " ".join(c) for c in bed.cmdlines(0)), 10,
                     what="the stuck reader to be ended on the host")
