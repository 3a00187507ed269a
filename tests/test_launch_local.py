"""`launch train --local` end to end: real MXNet dist_sync processes, real signals, real files.

Every fault is checked for what a user sees: exit status, the message naming the failing role, how soon
every role was gone after the fault, and that no process of the job is left (found by the job's own
LAUNCH_JOB_ID marker in /proc/*/environ, never by name).
"""
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time

import pytest
import yaml

from testkit.jobs import (LONG_JOB, PUSHPULL, QUIET_ENV, TEARDOWN_LIMIT, TORTURE_ARGS, end_launch, finish,
                                   job_id_of, job_processes, launch_argv, launched, masked_plan, read_log, role_pid, run_launch,
                                   seconds_until_gone, start_launch, summary, wait_for)
from testkit.scan import SecretScan, secret_with_marker

ROLES = {"scheduler", "server-0", "worker-0", "worker-1"}
AGREE = 0.5  # how far the launcher's own teardown figure may be from the one measured from outside


def last_end(run_dir):
    from datetime import datetime
    ends = [r["end"] for r in summary(run_dir)["roles"] if r["end"]]
    return max(datetime.fromisoformat(e).timestamp() for e in ends)


def assert_agrees(launcher_seconds, outside_seconds):
    """The launcher counts from when it noticed and stops at its last role's report; outside, the test
    counts from the fault to the last process of the job gone: a little more, never much more."""
    assert -0.1 <= outside_seconds - launcher_seconds <= AGREE, (launcher_seconds, outside_seconds)


def watch_teardown(job_id, roles=4, limit=60.0):
    """From outside, while a job runs into a fault of its own: (when a role was first seen gone, when no
    process of the job was left), both time.monotonic()."""
    wait_for(lambda: sum(k == "role" for _, k in job_processes(job_id).values()) == roles, 30,
             what=f"all {roles} roles of the job running")
    first_gone = wait_for(lambda: sum(k == "role" for _, k in job_processes(job_id).values()) < roles
                          and time.monotonic(), limit, interval=0.01, what="the fault")
    return first_gone, first_gone + seconds_until_gone(job_id, since=first_gone)


@pytest.fixture
def long_job(tmp_path):
    """A job of two workers and one server that runs until stopped: (launcher, run_dir, job_id). Whatever
    the test does, the launcher and every process of the job are gone afterwards."""
    run_dir = str(tmp_path / "run")
    with launched("train", "--local", "-n", "2", "-s", "1", "--run-dir", run_dir, *QUIET_ENV, "--", *LONG_JOB,
                  run_dir=run_dir) as proc:
        job_id = wait_for(lambda: job_id_of(run_dir), 20, what="job.yaml")
        # every worker is past its first push/pull: the whole job is up
        wait_for(lambda: all("round=1 " in read_log(run_dir, f"worker-{i}") for i in range(2)), 60,
                 what="every worker running")
        yield proc, run_dir, job_id


def assert_no_leftovers(job_id):
    left = job_processes(job_id)
    assert not left, f"processes of the job left behind: {left}"


# ------------------------------------------------------------------------------------------ success

@pytest.mark.timeout(90)
def test_two_workers_one_server_succeed_with_logs_and_summary(tmp_path):
    run_dir = str(tmp_path / "ok")
    # every role as a user's own script has it: the scheduler and the server by `import mxnet` too (pushpull's
    # run on MXNet's library alone elsewhere)
    rc, out, err = run_launch("train", "--local", "-n", "2", "-s", "1", "--run-dir", run_dir, *QUIET_ENV,
                              "--env", "PUSHPULL_MXNET_IMPORT=1", "--", sys.executable, PUSHPULL, "--rounds", "3")
    assert rc == 0, err
    for i in (0, 1):
        assert f"[worker {i}] pushpull worker rank={i} of 2 ready" in out  # worker-i is MXNet rank i
        assert "done" in read_log(run_dir, f"worker-{i}")
    # ps-lite's chatter: in the logs only (the scheduler says nothing else)
    assert "Bind to role=server" in read_log(run_dir, "server-0")
    assert "Bind to role=scheduler" in read_log(run_dir, "scheduler")
    assert "Bind to role" not in out and "is connected" not in out and "[scheduler] " not in out
    data = summary(run_dir)
    assert data["status"] == 0 and data["reason"] == "ok"
    assert {r["name"]: r["exit_code"] for r in data["roles"]} == {
        "scheduler": 0, "server-0": 0, "worker-0": 0, "worker-1": 0}
    assert all(isinstance(r["pid"], int) for r in data["roles"])
    for r in data["roles"]:  # the MXNet rank the launcher learnt is the one the program saw (kv.rank)
        if r["role"] == "worker":
            assert r["mxnet_rank"] == r["index"]
            assert f"pushpull worker rank={r['mxnet_rank']} of 2 ready" in read_log(run_dir, r["name"])
    assert out.strip().splitlines()[-1].startswith("ok: all 2 workers exited 0")  # the final line
    assert data["final_validation_accuracy"] is None and data["epochs"] == 0  # pushpull trains nothing
    rc, listed, err = run_launch("runs", "--dir", str(tmp_path), timeout=30)
    assert rc == 0, err
    assert listed.splitlines()[0].split() == ["id", "started", "mode", "hosts", "workers", "status", "epochs",
                                              "validation", "duration"]
    row = listed.splitlines()[1].split()
    assert row[0] == "ok" and row[3:7] == ["local", "1", "2", "ok"]
    with open(os.path.join(run_dir, "hosts")) as f:
        assert f.read().strip().splitlines()[-1].startswith("127.0.0.1")
    assert_no_leftovers(data["job_id"])


# ------------------------------------------------------------------------------------------ faults

@pytest.mark.timeout(90)
def test_worker_exit_code_fails_job_naming_it(tmp_path):
    run_dir = str(tmp_path / "fail")
    t0 = time.monotonic()
    with launched("train", "--local", "-n", "2", "-s", "1", "--run-dir", run_dir, *QUIET_ENV, "--", *LONG_JOB,
                  "--fail-rank", "1", "--fail-round", "10", "--fail-code", "3", run_dir=run_dir) as proc:
        job_id = wait_for(lambda: job_id_of(run_dir), 20, what="job.yaml")
        fault, gone = watch_teardown(job_id)
        rc, out, err = finish(proc, timeout=30)
    assert rc == 1
    assert gone - fault < TEARDOWN_LIMIT
    failing = [i for i in (0, 1) if "failing with code 3" in read_log(run_dir, f"worker-{i}")]
    assert len(failing) == 1
    data = summary(run_dir)
    first = data["first_failure"]
    assert first["name"] == f"worker-{failing[0]}" and first["exit_code"] == 3
    # named by the launcher's number (its log file) and by the MXNet rank ps-lite gave it (--fail-rank 1)
    assert f"worker {failing[0]} (MXNet rank 1) on 127.0.0.1" in err and "exit code 3" in err
    assert first["mxnet_rank"] == 1
    assert "failing with code 3" in err  # its last log lines
    assert err.strip().splitlines()[-1].startswith("launch: error: ")
    assert_agrees(data["teardown_seconds"], gone - fault)
    assert time.monotonic() - t0 < 60


@pytest.mark.timeout(90)
@pytest.mark.parametrize("victim", ["worker-1", "server-0", "scheduler"])
def test_sigkill_of_any_role_tears_the_job_down(long_job, victim):
    proc, run_dir, job_id = long_job
    pid = role_pid(job_id, victim)
    assert pid
    os.kill(pid, signal.SIGKILL)
    fault, fault_wall = time.monotonic(), time.time()
    assert seconds_until_gone(job_id, since=fault) < TEARDOWN_LIMIT
    outside = time.monotonic() - fault
    rc, out, err = finish(proc)
    assert rc == 1, err
    data = summary(run_dir)
    assert data["first_failure"]["name"] == victim
    assert data["first_failure"]["signal"] == 9
    label = victim.replace("-", " ")
    assert label in err and "signal 9 (SIGKILL)" in err
    assert_agrees(last_end(run_dir) - fault_wall, outside)


@pytest.mark.timeout(90)
@pytest.mark.parametrize("signum, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_to_launcher_stops_every_role(long_job, signum, status):
    proc, run_dir, job_id = long_job
    follower = start_launch("logs", run_dir, "--role", "worker-0", "--follow")  # ends when the job does
    try:
        wait_for(lambda: "round=" in read_log(run_dir, "worker-0"), 10, what="worker output")
        os.kill(proc.pid, signum)
        sent, sent_wall = time.monotonic(), time.time()
        outside = seconds_until_gone(job_id, since=sent)
        assert outside < TEARDOWN_LIMIT
        rc, out, err = finish(proc)
        assert rc == status
        followed, _ = follower.communicate(timeout=10)
        assert follower.returncode == 0 and followed.decode() == read_log(run_dir, "worker-0")
    finally:
        end_launch(follower)
    assert "every role was stopped" in err
    assert_agrees(last_end(run_dir) - sent_wall, outside)
    assert summary(run_dir)["reason"] in ("interrupted", "terminated")


@pytest.mark.timeout(90)
def test_sigkill_of_launcher_kills_every_role_and_ends_logs_follow(long_job):
    proc, run_dir, job_id = long_job
    assert len([k for _, k in job_processes(job_id).values() if k == "role"]) == 4
    follower = start_launch("logs", run_dir, "--follow", "--merge")
    try:
        os.kill(proc.pid, signal.SIGKILL)
        killed = time.monotonic()
        assert seconds_until_gone(job_id, since=killed) < TEARDOWN_LIMIT
        proc.wait(10)
        followed, complaint = follower.communicate(timeout=10)  # no summary.json ever comes: it sees the death
    finally:
        end_launch(follower)
    assert follower.returncode == 0
    assert f"launcher (pid {proc.pid}) is gone without writing summary.json" in complaint.decode()
    assert "[worker 1] pushpull worker rank=1" in followed.decode()
    rc, listed, err = run_launch("runs", "--dir", os.path.dirname(run_dir), timeout=30)
    assert rc == 0 and "launcher died" in listed, (listed, err)


@pytest.mark.timeout(90)
def test_timeout_bounds_the_job(tmp_path):
    run_dir = str(tmp_path / "slow")
    t0 = time.monotonic()
    with launched("train", "--local", "-n", "1", "-s", "1", "--run-dir", run_dir, "--timeout", "6", *QUIET_ENV,
                  "--", *LONG_JOB, run_dir=run_dir) as proc:
        job_id = wait_for(lambda: job_id_of(run_dir), 20, what="job.yaml")
        stopping, gone = watch_teardown(job_id, roles=3)
        rc, out, err = finish(proc, timeout=30)
    assert rc == 124
    assert "exceeded --timeout 6s" in err
    assert 6 <= gone - t0 < 6 + 6
    assert gone - stopping < TEARDOWN_LIMIT
    data = summary(run_dir)
    assert data["reason"] == "timeout"
    assert_agrees(data["teardown_seconds"], gone - stopping)


@pytest.mark.timeout(90)
def test_scheduler_port_taken_is_reported_and_retried_on_another(tmp_path):
    import socket
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()
    taken = squatter.getsockname()[1]
    run_dir = str(tmp_path / "port")
    try:
        rc, out, err = run_launch("train", "--local", "-n", "1", "-s", "1", "--run-dir", run_dir,
                                  "--scheduler-port", str(taken), *QUIET_ENV, "--", sys.executable, PUSHPULL,
                                  "--rounds", "2", timeout=60)
    finally:
        squatter.close()
    assert rc == 0, err
    data = summary(run_dir)
    assert f"scheduler could not bind port {taken}; restarting every role on port " in out, out
    # the job ran on the port of the last restart (another collision, with a parallel test's job, may add one)
    assert int(re.findall(r"restarting every role on port (\d+)", out)[-1]) == data["scheduler_port"], out
    assert data["scheduler_port"] != taken
    with open(os.path.join(run_dir, "job.yaml")) as f:
        assert yaml.safe_load(f)["scheduler"]["port"] == data["scheduler_port"]  # the record says where it ran
    # the failed attempt is kept in the log, before the bind that worked: ps-lite's own line for the failed bind
    # (its "bind failed" abort follows it only when the launcher's restart, which that line starts, lets it)
    binds = re.findall(r"Bind to role=scheduler, .*port=(-?\d+)", read_log(run_dir, "scheduler"))
    assert binds[0] == "-1" and binds[-1] == str(data["scheduler_port"]), binds


@pytest.mark.timeout(90)
def test_worker_i_is_mxnet_rank_i_run_after_run(tmp_path):
    """ps-lite ranks by (host, port): each worker's PORT makes the launch order the rank order. Three
    workers, four runs: by chance all right 1 time in 1296."""
    for attempt in range(4):
        run_dir = str(tmp_path / f"ranks{attempt}")
        rc, out, err = run_launch("train", "--local", "-n", "3", "-s", "1", "--run-dir", run_dir, *QUIET_ENV,
                                  "--", sys.executable, PUSHPULL, "--rounds", "1", timeout=60)
        assert rc == 0, err
        for i in range(3):
            assert f"pushpull worker rank={i} of 3 ready" in read_log(run_dir, f"worker-{i}"), attempt
        assert not summary(run_dir)["notes"]  # no restart was needed


@pytest.mark.timeout(60)
def test_verbose_shows_the_engine_lines_too(tmp_path):
    run_dir = str(tmp_path / "verbose")
    rc, out, err = run_launch("train", "--local", "-n", "1", "-s", "1", "--run-dir", run_dir, "-v", *QUIET_ENV,
                              "--", sys.executable, PUSHPULL, "--rounds", "1", timeout=60)
    assert rc == 0, err
    assert "[scheduler] " in out and "Bind to role=scheduler" in out and "is connected to others" in out
    with open(os.path.join(run_dir, "logs", "worker-0.log.times")) as f:  # one receive time per log line
        assert len(f.read().splitlines()) == len(read_log(run_dir, "worker-0").splitlines())


# ------------------------------------------------------------------------------------------ bytes

@pytest.mark.timeout(90)
def test_arguments_and_env_reach_the_worker_byte_for_byte(tmp_path):
    """The secret is looked for by its marker (any quoting keeps it), in every process's command line and
    environment, from before the launch until the job is gone. Only the launcher's own command line (where
    the user typed it) and the roles' environment may hold it."""
    marker, secret = secret_with_marker()
    env_value = "a b $HOME;c 'd' \"e\" ü,v=w"
    dump = str(tmp_path / "dump")
    run_dir = str(tmp_path / "torture")
    with SecretScan(marker) as scan, \
            launched("train", "--local", "-n", "2", "-s", "1", "--run-dir", run_dir, *QUIET_ENV,
                     "--env", f"TORTURE_PLAIN={env_value}", "--env", f"TORTURE_SECRET_TOKEN={secret}",
                     "--env-worker", "TORTURE_WORKER=only, workers", "--env-server", "TORTURE_SERVER=s",
                     "--", sys.executable, PUSHPULL, "--rounds", "40", "--round-seconds", "0.05",
                     "--dump", dump, "--", *TORTURE_ARGS, run_dir=run_dir) as proc:
        job_id = wait_for(lambda: job_id_of(run_dir), 20, what="job.yaml")
        wait_for(lambda: os.path.exists(f"{dump}.0.json") and os.path.exists(f"{dump}.1.json"), 60, what="dumps")
        assert {name for name, kind in job_processes(job_id).values() if kind == "role"} == ROLES
        rc, out, err = finish(proc, timeout=60)
        assert rc == 0, err
        seconds_until_gone(job_id, since=time.monotonic())
    assert scan.roles_seen(job_id) == ROLES  # the scan saw every role while it ran
    assert not scan.leaks(job_id, launcher_pid=proc.pid)
    for rank in (0, 1):
        with open(f"{dump}.{rank}.json", encoding="utf-8") as f:
            got = json.load(f)
        assert got["argv"] == ["--rounds", "40", "--round-seconds", "0.05", "--dump", dump, "--", *TORTURE_ARGS]
        assert got["env"] == {"TORTURE_PLAIN": env_value, "TORTURE_SECRET_TOKEN": secret,
                              "TORTURE_WORKER": "only, workers"}
    plan = masked_plan(run_dir, marker, env_value)
    assert plan["command"][-len(TORTURE_ARGS):] == TORTURE_ARGS


@pytest.mark.timeout(30)
def test_the_secret_scan_sees_the_marker_in_any_encoding_in_a_process_that_lives_0_3_s():
    marker, secret = secret_with_marker()
    encodings = [shlex.join(["x", secret]), json.dumps(secret), yaml.safe_dump(secret), secret]
    short = ["/bin/sh", "-c", "sleep 0.3; exit 0", "sh"]
    with SecretScan(marker) as scan:
        procs = [subprocess.Popen([*short, e]) for e in encodings]
        procs.append(subprocess.Popen(short, env={"NOT_A_ROLE": secret}))
        try:
            for p in procs:
                p.wait(10)
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait(10)
    seen = {(s.pid, s.where) for s in scan.leaks("no job", launcher_pid=-1)}
    assert {(p.pid, "cmdline") for p in procs[:-1]} | {(procs[-1].pid, "environ")} <= seen


@pytest.mark.timeout(60)
def test_the_secret_scan_sees_a_secret_on_the_roles_command_lines(tmp_path):
    """The scan of the test above can fail: roles given the secret as an argument (living 0.3 s) leak it."""
    marker, secret = secret_with_marker()
    run_dir = str(tmp_path / "leak")
    with SecretScan(marker) as scan, \
            launched("train", "--local", "-n", "2", "-s", "1", "--run-dir", run_dir, "--", "/bin/sh", "-c",
                     "sleep 0.3; exit 0", "sh", secret, run_dir=run_dir) as proc:
        rc, out, err = finish(proc, timeout=50)
    assert rc == 0, err
    leaks = scan.leaks(job_id_of(run_dir), launcher_pid=proc.pid)
    assert {s.role for s in leaks if s.where == "cmdline" and s.argv0 == "/bin/sh"} == ROLES


# ------------------------------------------------------------------------------------------ bad input

@pytest.mark.timeout(60)
@pytest.mark.parametrize("args, needle", [
    (["-n", "0", "--", "true"], "at least 1"),
    (["-n", "1", "-s", "0", "--", "true"], "-s/--num-servers must be at least 1"),
    (["-n", "1"], "missing command"),
    (["-n", "1", "--bogus", "--", "true"], "No such option"),
    (["-n", "1", "--env", "NOEQUALS", "--", "true"], "not set in this environment"),
    (["-n", "1", "--env", "DMLC_ROLE=worker", "--", "true"], "set by the launcher"),
    (["-n", "abc", "--", "true"], "abc"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, needle):
    rc, out, err = run_launch("train", "--local", "--run-dir", str(tmp_path / "r"), *args, timeout=30)
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("launch: error: ") and needle in lines[0], err
    assert "Traceback" not in err
    assert not os.path.exists(tmp_path / "r")


@pytest.mark.timeout(30)
def test_no_mode_is_a_usage_error(tmp_path):
    rc, out, err = run_launch("train", "-n", "1", "--", "true", timeout=30)
    assert rc == 2 and "exactly one of --local" in err and len(err.strip().splitlines()) == 1


@pytest.mark.timeout(30)
def test_dry_run_prints_the_plan_and_starts_nothing(tmp_path):
    run_dir = tmp_path / "dry"
    rc, out, err = run_launch("train", "--local", "-n", "2", "-s", "1", "--run-dir", str(run_dir), "--dry-run",
                              "--env", "API_TOKEN=hunter2", "--", sys.executable, "train.py", "--lr", "0.1", timeout=30)
    assert rc == 0, err
    plan = yaml.safe_load(out)
    assert [r["name"] for r in plan["roles"]] == ["scheduler", "server-0", "worker-0", "worker-1"]
    worker = plan["roles"][3]["env"]
    assert worker["DMLC_ROLE"] == "worker" and worker["DMLC_PS_ROOT_URI"] == "127.0.0.1"
    assert worker["DMLC_NODE_HOST"] == "127.0.0.1" and worker["DMLC_NUM_WORKER"] == "2"
    assert worker["DMLC_NUM_SERVER"] == "1" and worker["API_TOKEN"] == "***"
    assert plan["roles"][0]["env"]["OMP_NUM_THREADS"] == "1"
    assert plan["command"] == [sys.executable, "train.py", "--lr", "0.1"]
    assert "hunter2" not in out
    assert not run_dir.exists()


@pytest.mark.timeout(60)
def test_command_that_cannot_start_fails_fast(tmp_path):
    run_dir = str(tmp_path / "nocmd")
    rc, out, err = run_launch("train", "--local", "-n", "1", "-s", "1", "--run-dir", run_dir,
                              "--", "/nonexistent/program", timeout=30)
    assert rc == 1
    assert "cannot start /nonexistent/program" in err
    # every role starts at once: whichever reported first is named
    assert summary(run_dir)["first_failure"]["name"] in ROLES - {"worker-1"}
    assert_no_leftovers(summary(run_dir)["job_id"])


@pytest.mark.timeout(60)
def test_any_command_runs_as_every_role_with_coloured_prefixes_on_a_terminal(tmp_path):
    """Not only MXNet programs: every role runs the command; on a terminal the prefixes are coloured."""
    import pty
    import select
    run_dir = str(tmp_path / "plain")
    master, slave = pty.openpty()
    proc = subprocess.Popen(launch_argv("train", "--local", "-n", "2", "-s", "1", "--run-dir", run_dir, "--",
                                        "sh", "-c", 'echo "hello from $DMLC_ROLE"'),
                            stdout=slave, stderr=slave, env={k: v for k, v in os.environ.items() if k != "NO_COLOR"},
                            start_new_session=True)
    os.close(slave)
    chunks = []
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            if not select.select([master], [], [], max(0.0, deadline - time.monotonic()))[0]:
                continue
            try:
                data = os.read(master, 65536)  # EIO once the launcher (the only writer) has exited
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
        assert proc.wait(timeout=10) == 0
    finally:
        os.close(master)
        end_launch(proc, run_dir)
    out = b"".join(chunks).decode()
    for label, role in (("worker 0", "worker"), ("worker 1", "worker"), ("server 0", "server"),
                        ("scheduler", "scheduler")):
        assert f"[{label}]\x1b[0m hello from {role}" in out
        assert f"hello from {role}" in read_log(run_dir, label.replace(" ", "-"))
    assert "\x1b[" not in read_log(run_dir, "worker-0")  # log files stay plain text


@pytest.mark.timeout(60)
def test_a_used_run_directory_is_refused(tmp_path):
    run_dir = str(tmp_path / "used")
    rc, out, err = run_launch("train", "--local", "-n", "1", "-s", "1", "--run-dir", run_dir, "--", "true", timeout=30)
    assert rc == 0, err
    with open(os.path.join(run_dir, "job.yaml"), "rb") as f:
        before = f.read()
    rc, out, err = run_launch("train", "--local", "-n", "1", "-s", "1", "--run-dir", run_dir, "--", "true", timeout=30)
    assert rc == 2 and "already holds a job" in err and len(err.strip().splitlines()) == 1
    with open(os.path.join(run_dir, "job.yaml"), "rb") as f:
        assert f.read() == before
