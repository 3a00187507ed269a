"""mxlaunch.infra.transport.ssh against real sshd hosts of the bed: keys, agent, ssh config, host-key checking, failures."""
import os
import subprocess
import time

import pytest

from testkit import bed as testbed
from mxlaunch.infra.transport.hosts import Host
from mxlaunch.exits import Exit
from mxlaunch.infra.transport.ssh import SSHConnectError, SSHOptions, connect_all, resolve

pytestmark = [pytest.mark.bed, pytest.mark.timeout(60), pytest.mark.usefixtures("no_agent")]

bed = testbed.bed_fixture(3)


def opts(bed, **kw):
    base = dict(key=bed.key, known_hosts=bed.known_hosts, config_path=None, connect_timeout=5)
    base.update(kw)
    return SSHOptions(**base)


def keygen(path):
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True, timeout=10,
                   stdin=subprocess.DEVNULL)
    return str(path)


def test_one_connection_per_host_in_parallel_and_arguments_arrive_exactly(bed):
    hosts = list(bed.hosts) + [bed.hosts[0]]  # a repeated host still gets one connection
    results = connect_all(hosts, opts(bed))
    try:
        assert list(results) == list(bed.hosts) and not results.failed
        for m, conn in zip(bed.members, results.succeeded.values()):
            assert conn.ip == m.address and conn.alive
            argv = ["printf", "%s|", "a b", "it's", '"q"', "$HOME", "*", ""]
            assert conn.run(argv, timeout=10) == (0, "a b|it's|\"q\"|$HOME|*||", "")
            assert conn.run("echo err >&2; exit 3", timeout=10) == (3, "", "err\n")
        # one TCP connection per host on the server side: count sshd session processes per namespace
        for i in range(3):
            sessions = [c for c in bed.cmdlines(i) if c and c[0].startswith("sshd:") and "@" in " ".join(c)]
            assert len(sessions) == 1, bed.cmdlines(i)
    finally:
        results.close()


def test_run_is_bounded(bed):
    results = connect_all(bed.hosts[:1], opts(bed))
    try:
        started = time.monotonic()
        rc, _, _ = results[bed.hosts[0]].run(["sleep", "30"], timeout=0.5)
        assert rc == -1 and time.monotonic() - started < 3
        # and the command is gone: without a pty closing the channel would not end it
        testbed.wait_for(lambda: not [c for c in bed.cmdlines(0) if c[:1] == ["sleep"]] or None, 3,
                         what="the timed-out sleep to be killed")
    finally:
        results.close()
        bed.kill_jobs(0)


def test_wrong_key_is_refused_with_one_line_per_host(bed, tmp_path):
    wrong = keygen(tmp_path / "wrong")
    results = connect_all(bed.hosts[:2], opts(bed, key=wrong))
    results.close()
    assert not results.succeeded
    with pytest.raises(SSHConnectError) as err:
        results.raise_if_failed()
    assert err.value.exit_code == Exit.SSH
    assert err.value.format_message() == "; ".join(
        f"root@{m.address}:22: authentication failed as root (tried {wrong} and ssh-agent)" for m in bed.members[:2])


def test_passphrase_protected_key_says_to_use_the_agent(bed, tmp_path):
    locked = str(tmp_path / "locked")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "a passphrase", "-f", locked], check=True,
                   timeout=10, stdin=subprocess.DEVNULL)
    results = connect_all(bed.hosts[:1], opts(bed, key=locked))
    results.close()  # nothing should connect; if something did, no session outlives the test
    assert results.lines() == [f"{bed.hosts[0].target}: key {locked} is protected by a passphrase: add it to "
                               f"ssh-agent (ssh-add) and leave --ssh-key out"]


def test_unknown_host_key_is_refused_and_nothing_recorded(bed, tmp_path):
    known = tmp_path / "known_hosts"
    known.write_text("")
    results = connect_all(bed.hosts[:1], opts(bed, known_hosts=str(known)))
    results.close()  # nothing should connect; if something did, no session outlives the test
    line = results.lines()[0]
    assert "host key ssh-ed25519 SHA256:" in line and "is not in known_hosts" in line
    assert "--accept-new-host-keys" in line
    assert known.read_text() == ""


def test_accept_new_records_the_key_and_is_then_checked(bed, tmp_path):
    known = tmp_path / "sub" / "known_hosts"  # the directory is created too
    results = connect_all(bed.hosts, opts(bed, known_hosts=str(known), accept_new=True))
    results.close()
    assert not results.failed, results.lines()
    recorded = sorted(known.read_text().splitlines())
    assert recorded == sorted(f"{m.address} {m.host_key_line}" for m in bed.members)
    strict = connect_all(bed.hosts, opts(bed, known_hosts=str(known)))
    strict.close()
    assert not strict.failed, strict.lines()


def test_a_changed_host_key_is_refused_even_with_accept_new(bed, tmp_path):
    known = tmp_path / "known_hosts"
    known.write_text(f"{bed.members[0].address} {bed.members[1].host_key_line}\n")  # host 1's key for host 0
    results = connect_all(bed.hosts[:1], opts(bed, known_hosts=str(known), accept_new=True))
    results.close()  # nothing should connect; if something did, no session outlives the test
    assert "does NOT match the one in known_hosts" in results.lines()[0]
    assert known.read_text().count("\n") == 1


def test_down_host_fails_fast_while_others_connect(bed):
    bed.stop_sshd(2)
    try:
        started = time.monotonic()
        results = connect_all(bed.hosts, opts(bed))
        elapsed = time.monotonic() - started
        results.close()
    finally:
        bed.start_sshd(2)
    assert set(results.succeeded) == set(bed.hosts[:2])
    assert results.lines() == [f"root@{bed.members[2].address}:22: cannot connect to root@{bed.members[2].address}:22: "
                               f"connection refused (is sshd running on port 22?)"]
    assert elapsed < 3


def test_silent_address_times_out_within_the_bound(bed):
    # an address of the bed's own subnet where no host exists: packets go nowhere
    silent = Host(bed.subnet.rsplit(".", 1)[0] + ".250", user="root")
    started = time.monotonic()
    results = connect_all([silent], opts(bed, connect_timeout=1))
    results.close()  # nothing should connect; if something did, no session outlives the test
    assert time.monotonic() - started < 4
    assert results.lines()[0].startswith(f"{silent.target}: cannot connect to root@{silent.address}:22: ")
    assert "timed out after 1s" in results.lines()[0] or "No route to host" in results.lines()[0]


def test_ssh_config_hostname_user_port_identityfile(bed, tmp_path):
    config = tmp_path / "config"
    config.write_text(f"Host node1\n  HostName {bed.members[1].address}\n  User root\n  Port 22\n"
                      f"  IdentityFile {bed.key}\n")
    endpoint = resolve(Host("node1"), SSHOptions(config_path=str(config)),
                       __import__("paramiko").SSHConfig.from_path(str(config)))
    assert (endpoint.hostname, endpoint.user, endpoint.port, endpoint.key_files) == (
        bed.members[1].address, "root", 22, (bed.key,))
    results = connect_all([Host("node1")], SSHOptions(known_hosts=bed.known_hosts, config_path=str(config)))
    try:
        assert not results.failed, results.lines()
        conn = results[Host("node1")]
        assert conn.ip == bed.members[1].address
        assert conn.run(["ip", "-4", "-o", "addr", "show", "eth0"])[1].count(bed.members[1].address) == 1
    finally:
        results.close()


def test_ssh_agent_keys_are_used(bed, tmp_path, monkeypatch):
    sock = str(tmp_path / "agent.sock")
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", sock], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             stdin=subprocess.DEVNULL)
    try:
        testbed.wait_for(lambda: os.path.exists(sock), 5, what="ssh-agent socket")
        env = dict(os.environ, SSH_AUTH_SOCK=sock)
        subprocess.run(["ssh-add", "-q", bed.key], env=env, check=True, timeout=10, capture_output=True)
        monkeypatch.setenv("SSH_AUTH_SOCK", sock)
        # no --ssh-key and no default key files that work: only the agent can authenticate
        monkeypatch.setenv("HOME", str(tmp_path))
        results = connect_all(bed.hosts[:1], SSHOptions(known_hosts=bed.known_hosts, config_path=None))
        results.close()
        assert not results.failed, results.lines()
        monkeypatch.delenv("SSH_AUTH_SOCK")
        without = connect_all(bed.hosts[:1], SSHOptions(known_hosts=bed.known_hosts, config_path=None))
        without.close()
        assert without.lines() == [
            f"{bed.hosts[0].target}: no key to authenticate as root: pass --ssh-key, set IdentityFile in "
            f"~/.ssh/config, or add a key to ssh-agent"]
    finally:
        agent.kill()
        agent.wait(timeout=5)


def test_ipv6_hosts_in_brackets_with_a_port_and_bare(bed):
    from mxlaunch.infra.transport.hosts import parse_hosts
    m0, m1 = bed.members[0], bed.members[1]
    hosts = parse_hosts(f"root@[{m0.address6}]:22,root@{m1.address6}")
    assert hosts == (Host(m0.address6, user="root", port=22), Host(m1.address6, user="root"))
    results = connect_all(hosts, opts(bed))
    try:
        assert not results.failed, results.lines()
        for host, m in zip(hosts, (m0, m1)):
            conn = results[host]
            assert conn.ip == m.address6
            assert f"inet6 {m.address6}/64" in conn.run(["ip", "-6", "-o", "addr", "show", "eth0"])[1]
    finally:
        results.close()


def test_more_roles_than_sshd_max_sessions_get_an_extra_connection(bed):
    bed.set_sshd_option(1, "MaxSessions", "2")
    bed.stop_sshd(1)
    bed.start_sshd(1)
    results = connect_all(bed.hosts[1:2], opts(bed))
    try:
        conn = results[bed.hosts[1]]
        channels = [conn.open_channel(["sh", "-c", f"echo {i}; exec cat"]) for i in range(5)]
        assert [c.makefile("rb").readline() for c in channels] == [f"{i}\n".encode() for i in range(5)]
        # 5 concurrent sessions on 3 connections (2 + 2 + 1), all to the same host
        sessions = [c for c in bed.cmdlines(1) if c and c[0].startswith("sshd:") and "@" in " ".join(c)]
        assert len(sessions) == 3, bed.cmdlines(1)
        for c in channels:
            c.close()
    finally:
        results.close()
        bed.set_sshd_option(1, "MaxSessions", "100")
        bed.stop_sshd(1)
        bed.start_sshd(1)
