"""`launch train --hosts` end to end on the bed: real sshd hosts, real MXNet dist_sync roles, real faults.

"Nothing left" is checked the strict way: no process at all in any bed namespace but its listening sshd
(`ip netns pids`), which covers roles, their guards and the SSH sessions, whatever their environment.
Teardown is timed from outside: from the moment the test made the fault to the first look that finds
every bed host empty.
"""
import json
import os
import signal
import time

import pytest

from mxlaunch.infra.transport.ssh import SSHOptions, connect_all
from testkit import bed as testbed
from testkit.jobs import (LONG_JOB, PUSHPULL, PY, QUIET_ENV, TEARDOWN_LIMIT, TORTURE_ARGS, finish, job_id_of, masked_plan,
                                   job_processes, launched, read_log, role_pid, run_launch, seconds_until_gone,
                                   ssh_args, summary)
from testkit.scan import SecretScan, secret_with_marker

pytestmark = [pytest.mark.bed, pytest.mark.usefixtures("no_agent")]

bed = testbed.bed_fixture(3)
ROLES = {"scheduler", "server-0", "worker-0", "worker-1"}


def bed_busy(bed):
    return {i: bed.job_pids(i) for i in range(len(bed.members)) if bed.job_pids(i)}


def seconds_until_bed_is_clean(bed, since, limit=10.0):
    """Seconds from `since` (time.monotonic() of the fault) to the first look finding every host empty."""
    testbed.wait_for(lambda: not bed_busy(bed), limit, interval=0.02, what=f"an empty bed (left: {bed_busy(bed)})")
    return time.monotonic() - since


def wait_running(bed, run_dir, timeout=90):
    """Every role started and both workers past their first round; returns the job id."""
    job_id = testbed.wait_for(lambda: job_id_of(run_dir), 30, what="job.yaml")
    testbed.wait_for(lambda: all("round=1 " in read_log(run_dir, f"worker-{r}") for r in (0, 1)), timeout,
                     what="both workers pushing and pulling")
    return job_id


def commands_since(bed, counts):
    """The session commands every host recorded after `counts` ({host: how many there were})."""
    return [c for i, n in counts.items() for c in bed.session_commands(i)[n:]]


@pytest.mark.timeout(120)
def test_dist_sync_across_three_hosts_logs_and_summary(bed, tmp_path, monkeypatch):
    """The scheduler's host is named by an ~/.ssh/config alias (HostName, User, IdentityFile): roles still
    get IP addresses for DMLC_PS_ROOT_URI / DMLC_NODE_HOST, which ps-lite needs. First contact with
    --accept-new-host-keys: the keys are recorded (under the address really connected to)."""
    a0, a1, a2 = (m.address for m in bed.members)
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "config").write_text(f"Host head\n  HostName {a0}\n  User root\n  IdentityFile {bed.key}\n")
    monkeypatch.setenv("HOME", str(home))
    hostfile = tmp_path / "hosts"
    hostfile.write_text(f"head slots=0   # scheduler and server\nroot@{a1}\nroot@{a2}\n")
    run_dir = str(tmp_path / "ok")
    known = tmp_path / "known_hosts"  # first contact: --accept-new-host-keys records every host's key
    args = ssh_args(bed, "--run-dir", run_dir, *QUIET_ENV, "--accept-new-host-keys")
    args[args.index("--hosts") + 1] = str(hostfile)
    args[args.index("--known-hosts") + 1] = str(known)
    rc, out, err = run_launch(*args, "--", PY, PUSHPULL, "--rounds", "3", timeout=100)
    ended = time.monotonic()
    assert rc == 0, err
    assert sorted(known.read_text().splitlines()) == sorted(f"{m.address} {m.host_key_line}" for m in bed.members)
    hosts = {r["name"]: r["host"] for r in summary(run_dir)["roles"]}
    high, low = sorted((a1, a2), reverse=True)  # ps-lite ranks by address, descending as text
    assert hosts == {"scheduler": "head", "server-0": "head", "worker-0": high, "worker-1": low}
    # worker i is kvstore rank i
    logs = {i: read_log(run_dir, f"worker-{i}") for i in (0, 1)}
    assert all("round=2 value=3" in log and "done" in log for log in logs.values())
    assert [logs[i].split("rank=")[1].split()[0] for i in (0, 1)] == ["0", "1"]
    for i, addr in ((0, high), (1, low)):
        assert f"[worker {i} @{addr}] pushpull worker rank=" in out
    assert f"Bind to role=scheduler, id=1, ip={a0}, port=" in read_log(run_dir, "scheduler")  # the planned address
    assert seconds_until_bed_is_clean(bed, since=ended) < TEARDOWN_LIMIT


@pytest.mark.timeout(120)
def test_arguments_and_env_arrive_exactly_and_env_is_on_no_command_line_then_sigterm(bed, tmp_path):
    """The secret is looked for by its marker (any quoting keeps it), in every process's command line and
    environment, from before the launch until the job is gone, and in every command sshd was asked to run.
    Only the launcher's own command line (where the user typed it) and the roles' environment may hold it."""
    marker, secret = secret_with_marker()
    env_value = "a b $HOME;c 'd' \"e\" ü,v=w"
    dump = os.path.join(bed.shared, "dump")  # workers on other hosts write to the shared directory
    run_dir = str(tmp_path / "torture")
    recorded = {i: len(bed.session_commands(i)) for i in range(3)}
    with SecretScan(marker) as scan, \
            launched(*ssh_args(bed, "--run-dir", run_dir, *QUIET_ENV, "--env", f"TORTURE_PLAIN={env_value}",
                               "--env", f"TORTURE_SECRET_TOKEN={secret}",
                               "--env-worker", "TORTURE_WORKER=only, workers"),
                     "--", *LONG_JOB, "--dump", dump, "--", *TORTURE_ARGS, run_dir=run_dir) as proc:
        job_id = wait_running(bed, run_dir)
        roles = {name for name, kind in job_processes(job_id).values() if kind == "role"}
        assert roles == ROLES
        for rank in (0, 1):
            with open(f"{dump}.{rank}.json", encoding="utf-8") as f:
                got = json.load(f)
            assert got["argv"] == [*LONG_JOB[2:], "--dump", dump, "--", *TORTURE_ARGS]
            assert got["env"] == {"TORTURE_PLAIN": env_value, "TORTURE_SECRET_TOKEN": secret,
                                  "TORTURE_WORKER": "only, workers"}
        os.kill(proc.pid, signal.SIGTERM)
        sent = time.monotonic()
        assert seconds_until_gone(job_id, since=sent) < TEARDOWN_LIMIT  # every guard and role, on every host
        rc, out, err = finish(proc)
        assert rc == 143, err
        assert seconds_until_bed_is_clean(bed, since=time.monotonic()) < TEARDOWN_LIMIT  # sessions too
    assert scan.roles_seen(job_id) == ROLES  # the scan saw every role (on every host) while it ran
    assert not scan.leaks(job_id, launcher_pid=proc.pid)
    commands = commands_since(bed, recorded)
    assert len([c for c in commands if c.startswith(PY)]) >= len(ROLES)  # each role's session was recorded
    assert not [c for c in commands if marker in c]
    masked_plan(run_dir, marker, env_value)


@pytest.mark.timeout(60)
def test_the_scans_see_a_secret_on_a_role_command_line_or_in_a_session_command(bed, tmp_path):
    """The checks above can fail: a secret passed as the roles' argument is seen on their command lines by
    the /proc scan (roles that live 0.3 s), and one put in an SSH command is in sshd's record."""
    marker, secret = secret_with_marker()
    run_dir = str(tmp_path / "leak")
    with SecretScan(marker) as scan, \
            launched(*ssh_args(bed, "--run-dir", run_dir), "--", "/bin/sh", "-c", "sleep 0.3; exit 0", "sh", secret,
                     run_dir=run_dir) as proc:
        rc, out, err = finish(proc, timeout=50)
    assert rc == 0, err
    leaks = scan.leaks(job_id_of(run_dir), launcher_pid=proc.pid)
    assert {s.role for s in leaks if s.where == "cmdline" and s.argv0 == "/bin/sh"} == ROLES
    recorded = {0: len(bed.session_commands(0))}
    results = connect_all(bed.hosts[:1], SSHOptions(key=bed.key, known_hosts=bed.known_hosts, config_path=None))
    try:
        assert results[bed.hosts[0]].run(["true", secret], timeout=10)[0] == 0
    finally:
        results.close()
    assert [c for c in commands_since(bed, recorded) if marker in c]


@pytest.mark.timeout(120)
def worker_host(bed, i: int) -> int:
    """The bed host of worker-i under ssh_args (one worker on each of hosts 1 and 2): worker-i is MXNet
    rank i, and ps-lite ranks by address, descending as text."""
    return sorted((1, 2), key=lambda h: bed.members[h].address, reverse=True)[i]


def test_killed_worker_on_its_host_stops_every_host_and_is_named(bed, tmp_path):
    run_dir = str(tmp_path / "kill")
    with launched(*ssh_args(bed, "--run-dir", run_dir, *QUIET_ENV), "--", *LONG_JOB, run_dir=run_dir) as proc:
        job_id = wait_running(bed, run_dir)
        victim = role_pid(job_id, "worker-1")
        host = worker_host(bed, 1)
        assert victim in bed.pids(host)  # worker 1 really runs on its own host
        os.kill(victim, signal.SIGKILL)
        killed = time.monotonic()
        assert seconds_until_bed_is_clean(bed, since=killed) < TEARDOWN_LIMIT
        rc, out, err = finish(proc)
        assert rc == 1
        assert "worker 1" in err and bed.members[host].address in err and "signal 9" in err


@pytest.mark.timeout(120)
def test_cut_ssh_connection_kills_that_hosts_roles_and_the_job(bed, tmp_path):
    run_dir = str(tmp_path / "cut")
    with launched(*ssh_args(bed, "--run-dir", run_dir, *QUIET_ENV), "--", *LONG_JOB, run_dir=run_dir) as proc:
        wait_running(bed, run_dir)
        # the SSH connection to worker 0's host, seen from that host: its per-connection sshd processes
        host = worker_host(bed, 0)
        sessions = [p for p in bed.job_pids(host) if open(f"/proc/{p}/cmdline", "rb").read().startswith(b"sshd")]
        assert sessions
        for pid in sessions:
            os.kill(pid, signal.SIGKILL)
        cut = time.monotonic()
        assert seconds_until_bed_is_clean(bed, since=cut) < TEARDOWN_LIMIT
        rc, out, err = finish(proc)
        assert rc != 0
        assert "worker 0 (MXNet rank 0)" in err
        assert f"lost the SSH connection to root@{bed.members[host].address}" in err.strip().splitlines()[-1]


@pytest.mark.timeout(120)
def test_silent_partition_of_a_host_is_detected_and_the_job_stopped(bed, tmp_path):
    """No FIN, no RST: the launcher's ping gets no answer within 8 s, it stops every other host and exits
    naming the lost host. The cut-off host cannot be told anything: its roles go once the network heals
    (the launcher's FIN or RST then reaches its sshd, whose closing pipes stop the guard)."""
    from mxlaunch.infra.transport.ssh_runner import PING_INTERVAL, PING_TIMEOUT
    run_dir = str(tmp_path / "partition")
    try:
        with launched(*ssh_args(bed, "--run-dir", run_dir, *QUIET_ENV), "--", *LONG_JOB, run_dir=run_dir) as proc:
            wait_running(bed, run_dir)
            bed.partition(2)
            cut = time.monotonic()
            rc, out, err = finish(proc, timeout=PING_INTERVAL + PING_TIMEOUT + 20)
            detected = time.monotonic() - cut
            assert rc == 1
            assert detected < PING_INTERVAL + PING_TIMEOUT + 4
            assert (f"lost the SSH connection to root@{bed.members[2].address} (no answer for {PING_TIMEOUT:g}s)"
                    in err.strip().splitlines()[-1])
            testbed.wait_for(lambda: not any(bed.job_pids(i) for i in (0, 1)) or None, TEARDOWN_LIMIT,
                             interval=0.02, what="every reachable host clean")
            bed.heal(2)
            healed = time.monotonic()
            testbed.wait_for(lambda: not bed.job_pids(2) or None, 40, interval=0.05, what="the healed host clean")
            print(f"partition: detected after {detected:.1f}s; healed host clean {time.monotonic() - healed:.1f}s "
                  f"after healing")
    finally:
        bed.heal(2)


@pytest.mark.timeout(120)
def test_sigkill_of_the_launcher_leaves_nothing_on_any_host(bed, tmp_path):
    run_dir = str(tmp_path / "sigkill")
    with launched(*ssh_args(bed, "--run-dir", run_dir, *QUIET_ENV), "--", *LONG_JOB, run_dir=run_dir) as proc:
        wait_running(bed, run_dir)
        assert all(bed.job_pids(i) for i in range(3))
        os.kill(proc.pid, signal.SIGKILL)
        killed = time.monotonic()
        assert seconds_until_bed_is_clean(bed, since=killed) < TEARDOWN_LIMIT, bed_busy(bed)
        proc.wait(10)
