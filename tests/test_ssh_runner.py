"""`launch train --hosts` end to end on the bed: real sshd hosts, real MXNet dist_sync roles, real faults.

"Nothing left" is checked the strict way: no process at all in any bed namespace but its listening sshd
(`ip netns pids`), which covers roles, their guards and the SSH sessions, whatever their environment.
"""
import json
import os
import signal
import sys
import time

import pytest

from mxlaunch.testing import bed as testbed
from mxlaunch.testing.jobs import (PUSHPULL, QUIET_ENV, command_lines, job_id_of, job_processes, read_log, role_pid,
                          run_launch, start_launch)

pytestmark = [pytest.mark.skipif(testbed.why_unavailable() is not None, reason=str(testbed.why_unavailable()))]

bed = testbed.bed_fixture(3)
PY = sys.executable
TEARDOWN_LIMIT = 2.0
LONG_JOB = [PY, PUSHPULL, "--rounds", "100000", "--round-seconds", "0.05"]


@pytest.fixture(autouse=True)
def no_agent(monkeypatch):
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)


def ssh_args(bed, run_dir, *extra):
    # scheduler + server on host 0 (slots=0: no worker there), one worker on each of hosts 1 and 2
    return ["train", "--hosts", bed.hostfile([0, 1, 1]), "-n", "2", "-s", "1", "--python", PY,
            "--ssh-key", bed.key, "--known-hosts", bed.known_hosts, "--run-dir", run_dir, *QUIET_ENV, *extra]


def bed_busy(bed):
    return {i: bed.job_pids(i) for i in range(len(bed.members)) if bed.job_pids(i)}


def seconds_until_bed_is_clean(bed, limit=10.0):
    started = time.monotonic()
    testbed.wait_for(lambda: not bed_busy(bed), limit, interval=0.02, what=f"an empty bed (left: {bed_busy(bed)})")
    return time.monotonic() - started


def wait_running(bed, run_dir, timeout=90):
    """Every role started and both workers past their first round; returns the job id."""
    job_id = testbed.wait_for(lambda: job_id_of(run_dir), 30, what="job.yaml")
    testbed.wait_for(lambda: all("round=1 " in read_log(run_dir, f"worker-{r}") for r in (0, 1)), timeout,
                     what="both workers pushing and pulling")
    return job_id


def finish(proc, timeout=30):
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")


def summary(run_dir):
    with open(os.path.join(run_dir, "summary.json")) as f:
        return json.load(f)


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
    args = ssh_args(bed, run_dir, "--accept-new-host-keys")
    args[args.index("--hosts") + 1] = str(hostfile)
    args[args.index("--known-hosts") + 1] = str(known)
    rc, out, err = run_launch(*args, "--", PY, PUSHPULL, "--rounds", "3", timeout=100)
    assert rc == 0, err
    assert sorted(known.read_text().splitlines()) == sorted(f"{m.address} {m.host_key_line}" for m in bed.members)
    hosts = {r["name"]: r["host"] for r in summary(run_dir)["roles"]}
    assert hosts == {"scheduler": "head", "server-0": "head", "worker-0": a1, "worker-1": a2}
    # ps-lite gives kvstore ranks in arrival order: worker i's log holds some rank, together both ranks
    logs = {i: read_log(run_dir, f"worker-{i}") for i in (0, 1)}
    assert all("round=2 value=3" in log and "done" in log for log in logs.values())
    assert {log.split("rank=")[1].split()[0] for log in logs.values()} == {"0", "1"}
    for i, addr in ((0, a1), (1, a2)):
        assert f"[worker {i} @{addr}] pushpull worker rank=" in out
    assert f"Bind to role=scheduler, id=1, ip={a0}, port=" in read_log(run_dir, "scheduler")  # the planned address
    assert seconds_until_bed_is_clean(bed) < TEARDOWN_LIMIT


TORTURE_ARGS = ["a b", "it's", 'say "hi"', "$HOME", "a;b && c", "ünïcødé ✓", "x,y,z", "", "--weird=1 2",
                "back\\slash", "*", "tab\there", "new\nline"]


@pytest.mark.timeout(120)
def test_arguments_and_env_arrive_exactly_and_env_is_on_no_command_line_then_sigterm(bed, tmp_path):
    secret = "s3cr3t value; $(rm -rf /) `x` 'q' \"dq\" ünï,comma=eq"
    env_value = "a b $HOME;c 'd' \"e\" ü,v=w"
    dump = os.path.join(bed.shared, "dump")  # workers on other hosts write to the shared directory
    run_dir = str(tmp_path / "torture")
    proc = start_launch(*ssh_args(bed, run_dir, "--env", f"TORTURE_PLAIN={env_value}",
                                  "--env", f"TORTURE_SECRET_TOKEN={secret}",
                                  "--env-worker", "TORTURE_WORKER=only, workers"),
                        "--", PY, PUSHPULL, "--rounds", "100000", "--round-seconds", "0.05", "--dump", dump,
                        "--", *TORTURE_ARGS)
    try:
        job_id = wait_running(bed, run_dir)
        # While every role runs: no process on this machine, in any namespace (they share the PID namespace),
        # has an env value on its command line, but the launcher on whose command line the user typed them.
        scanned = command_lines(except_pid=proc.pid)
        for cmdline in scanned:
            assert secret.encode() not in cmdline and env_value.encode() not in cmdline
        assert len(scanned) > 20
        roles = {name for name, kind in job_processes(job_id).values() if kind == "role"}
        assert roles == {"scheduler", "server-0", "worker-0", "worker-1"}
        for rank in (0, 1):
            with open(f"{dump}.{rank}.json", encoding="utf-8") as f:
                got = json.load(f)
            assert got["argv"] == ["--rounds", "100000", "--round-seconds", "0.05", "--dump", dump, "--",
                                   *TORTURE_ARGS]
            assert got["env"] == {"TORTURE_PLAIN": env_value, "TORTURE_SECRET_TOKEN": secret,
                                  "TORTURE_WORKER": "only, workers"}
        with open(os.path.join(run_dir, "job.yaml"), encoding="utf-8") as f:
            assert secret not in f.read()
        os.kill(proc.pid, signal.SIGTERM)
        rc, out, err = finish(proc)
        assert rc == 143, err
        assert seconds_until_bed_is_clean(bed) < TEARDOWN_LIMIT
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


@pytest.mark.timeout(120)
def test_killed_worker_on_its_host_stops_every_host_and_is_named(bed, tmp_path):
    run_dir = str(tmp_path / "kill")
    proc = start_launch(*ssh_args(bed, run_dir), "--", *LONG_JOB)
    try:
        job_id = wait_running(bed, run_dir)
        victim = role_pid(job_id, "worker-1")
        assert victim in bed.pids(2)  # worker 1 really runs on host 2
        os.kill(victim, signal.SIGKILL)
        killed = time.monotonic()
        testbed.wait_for(lambda: not any(bed.job_pids(i) for i in range(3)) or None, 10, interval=0.02,
                         what="every host clean")
        assert time.monotonic() - killed < TEARDOWN_LIMIT, bed_busy(bed)
        rc, out, err = finish(proc)
        assert rc == 1
        assert "worker 1" in err and bed.members[2].address in err and "signal 9" in err
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


@pytest.mark.timeout(120)
def test_cut_ssh_connection_kills_that_hosts_roles_and_the_job(bed, tmp_path):
    run_dir = str(tmp_path / "cut")
    proc = start_launch(*ssh_args(bed, run_dir), "--", *LONG_JOB)
    try:
        wait_running(bed, run_dir)
        # the SSH connection to host 1, seen from that host: its per-connection sshd processes
        sessions = [p for p in bed.job_pids(1) if open(f"/proc/{p}/cmdline", "rb").read().startswith(b"sshd")]
        assert sessions
        for pid in sessions:
            os.kill(pid, signal.SIGKILL)
        cut = time.monotonic()
        testbed.wait_for(lambda: not any(bed.job_pids(i) for i in range(3)) or None, 10, interval=0.02,
                         what="every host clean")
        assert time.monotonic() - cut < TEARDOWN_LIMIT, bed_busy(bed)
        rc, out, err = finish(proc)
        assert rc != 0
        assert "worker 0 (MXNet rank" in err
        assert f"lost the SSH connection to root@{bed.members[1].address}" in err.strip().splitlines()[-1]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


@pytest.mark.timeout(120)
def test_silent_partition_of_a_host_is_detected_and_the_job_stopped(bed, tmp_path):
    """No FIN, no RST: the launcher's ping gets no answer within 8 s, it stops every other host and exits
    naming the lost host. The cut-off host cannot be told anything: its roles go once the network heals
    (the launcher's FIN or RST then reaches its sshd, whose closing pipes stop the guard)."""
    from mxlaunch.launcher.ssh_runner import PING_INTERVAL, PING_TIMEOUT
    run_dir = str(tmp_path / "partition")
    proc = start_launch(*ssh_args(bed, run_dir), "--", *LONG_JOB)
    try:
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
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


@pytest.mark.timeout(120)
def test_sigkill_of_the_launcher_leaves_nothing_on_any_host(bed, tmp_path):
    run_dir = str(tmp_path / "sigkill")
    proc = start_launch(*ssh_args(bed, run_dir), "--", *LONG_JOB)
    try:
        wait_running(bed, run_dir)
        assert all(bed.job_pids(i) for i in range(3))
        os.kill(proc.pid, signal.SIGKILL)
        killed = time.monotonic()
        testbed.wait_for(lambda: not any(bed.job_pids(i) for i in range(3)) or None, 10, interval=0.02,
                         what="every host clean")
        assert time.monotonic() - killed < TEARDOWN_LIMIT, bed_busy(bed)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
