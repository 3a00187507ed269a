"""The multi-host test bed itself: hosts reachable from here and from each other, and a clean teardown."""
import os
import subprocess
import sys
import textwrap

import pytest

from testkit import bed as testbed
pytestmark = [pytest.mark.bed, pytest.mark.timeout(60)]

bed = testbed.bed_fixture(3)
PROBE = "import socket,sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3); print('ok')"


def ssh(bed, i, command):
    """The stock OpenSSH client, host keys checked strictly against the bed's known_hosts."""
    return subprocess.run(
        ["ssh", "-i", bed.key, "-o", f"UserKnownHostsFile={bed.known_hosts}", "-o", "StrictHostKeyChecking=yes",
         "-o", "BatchMode=yes", "-o", "ConnectTimeout=5", f"root@{bed.members[i].address}", command],
        capture_output=True, text=True, timeout=20, stdin=subprocess.DEVNULL)


def test_every_host_answers_ssh_from_the_root_namespace_with_its_own_address_and_key(bed):
    assert len({m.address for m in bed.members}) == 3
    assert len({m.host_key_line for m in bed.members}) == 3
    for i, m in enumerate(bed.members):
        proc = ssh(bed, i, "ip -4 -o addr show dev eth0")
        assert proc.returncode == 0, proc.stderr
        assert f"inet {m.address}/24" in proc.stdout
        assert all(h.address.startswith(bed.subnet.rsplit(".", 1)[0] + ".") for h in bed.hosts)


def test_hosts_reach_each_other_and_the_launcher_but_nothing_outside(bed):
    for i in range(3):
        for j in range(3):
            proc = bed.exec(i, sys.executable, "-c", PROBE, bed.members[j].address, "22")
            assert proc.stdout.strip() == "ok", (i, j, proc.stderr)
    routes = bed.exec(0, "ip", "-4", "route").stdout
    assert "default" not in routes  # no way out of the machine


def test_the_same_file_system_and_interpreter_on_every_host(bed):
    marker = os.path.join(bed.shared, "marker")
    with open(marker, "w") as fh:
        fh.write("efs\n")
    for i in range(3):
        proc = ssh(bed, i, f"cat {marker}; {sys.executable} -c 'import mxlaunch; print(1)'")
        assert proc.stdout.split() == ["efs", "1"], proc.stderr


def test_unknown_host_key_is_refused_by_a_strict_client(bed, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    proc = subprocess.run(
        ["ssh", "-i", bed.key, "-o", f"UserKnownHostsFile={empty}", "-o", "StrictHostKeyChecking=yes",
         "-o", "BatchMode=yes", f"root@{bed.members[0].address}", "true"],
        capture_output=True, text=True, timeout=20, stdin=subprocess.DEVNULL)
    assert proc.returncode == 255 and "Host key verification failed" in proc.stderr


def test_stopped_sshd_refuses_and_restarts(bed):
    bed.stop_sshd(2)
    proc = bed.exec(0, sys.executable, "-c", PROBE, bed.members[2].address, "22")
    assert proc.returncode != 0 and "Connection refused" in proc.stderr
    bed.start_sshd(2)
    assert ssh(bed, 2, "echo back").stdout.strip() == "back"


def test_down_kills_what_runs_in_the_namespaces_and_leaves_nothing():
    b = testbed.up(2)
    try:
        # a detached process inside a namespace, the kind a broken launcher would orphan
        subprocess.run(["ip", "netns", "exec", b.members[1].netns, "setsid", "-f", "sleep", "300"],
                       timeout=10, check=True, stdin=subprocess.DEVNULL)
        sleeper = testbed.wait_for(lambda: [p for p in b.job_pids(1)], 5, what="sleep in the namespace")
        sshd = [m.sshd_pid for m in b.members]
    finally:
        assert b.down() == []
    assert testbed.leftovers(b.name) == []
    assert not any(testbed._pid_alive(p) for p in sleeper + sshd)
    assert not os.path.exists(b.dir)


def test_teardown_happens_even_when_the_test_fails(tmp_path):
    """A failing test that used the fixture: pytest reports the failure and the bed is still gone."""
    inner = tmp_path / "test_inner.py"
    inner.write_text(textwrap.dedent("""
        from testkit import bed as testbed
        bed = testbed.bed_fixture(1)
        def test_fails(bed):
            open(%r, "w").write(bed.name)
            assert False, "boom"
    """ % str(tmp_path / "name")))
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(inner)],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 1 and "boom" in proc.stdout
    name = (tmp_path / "name").read_text()
    assert name.startswith("mxb")
    assert testbed.leftovers(name) == []


def test_each_test_gets_the_bed_clean_and_one_that_leaves_a_process_errors(tmp_path):
    """The fixture's own check: a process left in a namespace is killed after the test that left it, that
    test reports an error naming it, and the next test of the module finds the bed clean."""
    inner = tmp_path / "test_inner.py"
    inner.write_text(textwrap.dedent("""
        import subprocess
        from testkit import bed as testbed
        bed = testbed.bed_fixture(1)
        def test_leaves_a_process(bed):
            open(%r, "w").write(bed.name)
            subprocess.run(["ip", "netns", "exec", bed.members[0].netns, "setsid", "-f", "sleep", "301"],
                           check=True, timeout=10, stdin=subprocess.DEVNULL)
        def test_then_finds_it_clean(bed):
            assert bed.job_pids(0) == []
    """ % str(tmp_path / "name")))
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(inner)],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout
    assert "2 passed, 1 error" in proc.stdout, proc.stdout
    assert "ERROR at teardown of test_leaves_a_process" in proc.stdout and "sleep 301" in proc.stdout
    assert testbed.leftovers((tmp_path / "name").read_text()) == []


def test_a_bed_whose_owner_was_killed_is_swept_by_the_next_run(tmp_path):
    code = ("import os, signal; from testkit import bed as testbed; b = testbed.up(2); "
            "print(b.name, flush=True); os.kill(os.getpid(), signal.SIGKILL)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert proc.returncode == -9
    name = proc.stdout.strip()
    assert testbed.leftovers(name)  # the killed run left its namespaces and links behind
    assert name in testbed.sweep_stale()
    assert testbed.leftovers(name) == []
    assert not any(p.startswith(name) for p in os.listdir(testbed.STATE_ROOT))
