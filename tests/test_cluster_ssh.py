"""The SSH steps of `launch cluster up --wait ssh` and of repair over the real transport, against real sshd hosts
of the bed: the cluster's ssh config maps each alias and private address to where the host answers (with the
cluster's user and key), the cluster's known_hosts learns a first-seen host key (and OpenSSH, which `launch
cluster ssh` runs, reads what was recorded) and refuses a changed one at once, files go up over SFTP skipping
what is there, and a host that does not answer is diagnosed (refused, unreachable) and found by repair's probe,
every wait within its bound. The whole path on hosts that look like EC2 instances: tests/test_box_cluster.py
and tests/test_healing_replace.py."""
from __future__ import annotations

import dataclasses
import os
import subprocess
import time
from pathlib import Path

import pytest

from mxlaunch.exits import Exit
from mxlaunch.infra.cloud import install, local_state as state, repair, wait
from mxlaunch.infra.transport import timeouts
from mxlaunch.infra.transport.ssh import SSHConnectError
from testkit import bed as testbed

pytest_plugins = ["fixtures_ssh"]
pytestmark = [pytest.mark.bed, pytest.mark.timeout(90), pytest.mark.usefixtures("no_agent")]

bed = testbed.bed_fixture(3)
NAME = "bedc"


def private(i: int) -> str:
    """Host i's "private address": a name only the cluster's ssh config knows (if the mapping failed, nothing
    would be contacted: it does not resolve)."""
    return f"{NAME}-private-{i}.invalid"


@pytest.fixture
def cluster(bed, tmp_path, monkeypatch):
    """Cluster NAME's local state as `up` writes it for the bed's hosts (user root, the bed's key), no known
    host key yet; its instances as `up` hands them to the install: (alias, public address)."""
    monkeypatch.setenv("MXLAUNCH_HOME", str(tmp_path / "home"))
    entries = [(f"{NAME}-{m.index}", private(m.index), m.address) for m in bed.members]
    state.write_ssh_config(NAME, entries, "root", Path(bed.key))
    state.write_meta(NAME, ssh_user="root", key_file=bed.key)
    return [(alias, address) for alias, _, address in entries]


def remote(**options) -> install.Remote:
    ssh = dataclasses.replace(state.ssh_options(NAME, "root", Path(state.read_meta(NAME).key_file)), **options)
    return install.Remote(ssh, echo=lambda line: None)


def recorded() -> list:
    return sorted(state.known_hosts_path(NAME).read_text().splitlines())


def test_first_seen_host_keys_are_recorded_for_openssh_too_and_a_changed_one_is_refused_at_once(bed, cluster):
    assert not state.known_hosts_path(NAME).exists()
    r = remote()
    try:
        r.wait_for(cluster, ["true"], "SSH answering", 30)
        found = r.run(cluster, ["sh", "-c", "ip -4 -o addr show dev eth0; whoami"])
    finally:
        r.close()
    for alias, address in cluster:  # each alias reached its own host, as the cluster's user
        assert found[alias].ok and f" {address}/" in found[alias].out and found[alias].out.split()[-1] == "root"
    assert recorded() == sorted(f"{m.address} {m.host_key_line}" for m in bed.members)
    # what `launch cluster ssh` runs reads the same files: with strict checking it knows every host already
    for alias, _ in cluster:
        proc = subprocess.run(["ssh", "-F", str(state.ssh_config_path(NAME)), "-o", "StrictHostKeyChecking=yes",
                               alias, "true"], capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
        assert proc.returncode == 0, proc.stderr
    # host 1 now answers with another key (as a man in the middle would): refused, nothing waits, nothing recorded
    before = state.known_hosts_path(NAME).read_text()
    state.known_hosts_path(NAME).write_text(before.replace(bed.members[1].host_key_line, bed.members[2].host_key_line))
    changed = state.known_hosts_path(NAME).read_text()
    r, started = remote(), time.monotonic()
    try:
        with pytest.raises(SSHConnectError) as err:
            r.wait_for(cluster, ["true"], "SSH answering", 30)
    finally:
        r.close()
    assert time.monotonic() - started < 10 and err.value.exit_code == Exit.SSH
    message = err.value.format_message()
    assert message.startswith(f"{NAME}-1: host key ssh-ed25519 SHA256:") and "does NOT match" in message, message
    assert state.known_hosts_path(NAME).read_text() == changed


def test_files_go_up_over_sftp_once_with_their_mtime(bed, cluster, tmp_path):
    local = tmp_path / "house"
    local.mkdir()
    for n, name in enumerate(("a.whl", "b.whl")):
        (local / name).write_bytes(os.urandom(100_000 + n))
        os.utime(local / name, (1_600_000_000 + n, 1_600_000_000 + n))
    dest = os.path.join(bed.shared, "efs", "wheels")  # the hosts share this machine's files: seen here as there
    files = sorted(local.iterdir())
    r = remote()
    try:
        assert r.upload(f"{NAME}-0", files, dest) == ["a.whl", "b.whl"]
        assert sorted(os.listdir(dest)) == ["a.whl", "b.whl"]  # no partial file left behind
        for f in files:
            there = os.stat(os.path.join(dest, f.name))
            assert (there.st_size, int(there.st_mtime)) == (f.stat().st_size, int(f.stat().st_mtime))
            assert Path(dest, f.name).read_bytes() == f.read_bytes()
        assert r.upload(f"{NAME}-1", files, dest) == []  # another instance, the same EFS: nothing to copy
        os.utime(local / "b.whl", (1_700_000_000, 1_700_000_000))
        assert r.upload(f"{NAME}-0", files, dest) == ["b.whl"]
        assert int(os.stat(os.path.join(dest, "b.whl")).st_mtime) == 1_700_000_000
    finally:
        r.close()


def test_a_host_that_does_not_answer_is_diagnosed_within_the_bound(bed, cluster, monkeypatch):
    monkeypatch.setattr(timeouts, "POLL", 0.2)
    silent = bed.subnet.rsplit(".", 1)[0] + ".250"  # an address of the bed where no host is: nothing answers
    state.write_ssh_config(NAME, [(alias, private(n), address) for n, (alias, address) in enumerate(cluster)]
                           + [(f"{NAME}-3", private(3), silent)], "root", Path(bed.key))
    hosts = cluster + [(f"{NAME}-3", silent)]
    bed.stop_sshd(1)
    r, started = remote(connect_timeout=1.0), time.monotonic()
    try:
        with pytest.raises(wait.WaitTimeout) as err:
            r.wait_for(hosts, ["true"], "SSH answering", 3)
    finally:
        r.close()
        bed.start_sshd(1)
    assert time.monotonic() - started < 3 + 3 * 1.0 + 5
    message = err.value.format_message()
    assert message.startswith("timed out after 3s waiting for SSH answering: ") and err.value.exit_code == Exit.WAIT_TIMEOUT
    details = dict(part.split(": ", 1) for part in message.split("SSH answering: ", 1)[1].split("; "))
    assert sorted(details) == [f"{NAME}-1", f"{NAME}-3"]  # the others answered
    assert details[f"{NAME}-1"].startswith(f"port 22 refused: sshd not started yet (ssh: cannot connect to "
                                           f"root@{bed.members[1].address}:22: connection refused")
    assert details[f"{NAME}-3"].startswith("port 22 unreachable") and f"root@{silent}:22" in details[f"{NAME}-3"]


def test_repairs_probe_finds_the_instance_that_does_not_answer(bed, cluster, monkeypatch):
    monkeypatch.setattr(wait, "SLEEP", lambda seconds: None)  # the pause between tries: no host changes meanwhile
    bed.stop_sshd(2)
    started = time.monotonic()
    try:
        silent = repair.unreachable(NAME, [private(m.index) for m in bed.members])
    finally:
        bed.start_sshd(2)
    assert silent == [private(2)]
    assert time.monotonic() - started < repair.PROBE_ATTEMPTS * (timeouts.CONNECT + 2)
    assert recorded() == sorted(f"{m.address} {m.host_key_line}" for m in bed.members[:2])  # learnt as it went


def test_a_command_past_its_bound_is_ended_on_the_host(bed, cluster):
    r, started = remote(), time.monotonic()
    try:
        (outcome,) = r.run(cluster[:1], ["sleep", "60"], timeout=1).values()
    finally:
        r.close()
    assert (outcome.status, outcome.why) == (-1, "timed out after 1s")
    assert time.monotonic() - started < 1 + timeouts.CONNECT + timeouts.PID_WAIT + timeouts.KILL
    testbed.wait_for(lambda: not any(line[:2] == ["sleep", "60"] for line in bed.cmdlines(0)), 5,
                     what="the command ended on the host")
