"""`launch stop RUN_DIR` (launcher/cli/stop.py) on real local launchers, and the pieces of `launch train --detach`
that run without a cluster: the starter (infra/transport/remote/detach_starter.py) starting a real launcher in its own session
with its environment through a pipe, and what launcher/jobs/detached.py hands it."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from mxlaunch.launcher.jobs import launcher_record as runstate, modes
from mxlaunch.launcher.jobs.request import TrainRequest
from mxlaunch.launcher.cli import stop as stop_cmd
from mxlaunch.infra.transport.hosts import Host
from mxlaunch.launcher.jobs.plan import JobSpec
from mxlaunch.infra.transport.remote import detach_starter as starter
from mxlaunch.infra.transport.ssh import SSHOptions
from mxlaunch.infra.transport.target import JobTarget
from testkit import procs
from testkit.jobs import (end_launch, finish, job_id_of, job_processes, launch_argv, parsed_train, start_launch,
                          summary, wait_for)

pytestmark = pytest.mark.timeout(120)
SLEEPER = ["/bin/sh", "-c", "echo up; exec sleep 600", "sh"]  # every role: runs until stopped


def stop(*args, timeout=60):
    proc = subprocess.run(launch_argv("stop", *map(str, args)), capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)
    return proc.returncode, proc.stdout, proc.stderr


def wait_running(run_dir, roles=3):
    """The launcher has recorded itself and every role runs (bounded)."""
    wait_for(lambda: runstate.state(run_dir) == runstate.RUNNING and job_id_of(run_dir)
             and len([k for _, k in job_processes(job_id_of(run_dir)).values() if k == "role"]) >= roles, 30,
             what=f"the job of {run_dir} to run")


def test_stop_ends_a_launcher_started_in_another_process(tmp_path):
    run_dir = str(tmp_path / "run")
    proc = start_launch("train", "--local", "-n", "1", "-s", "1", "--run-dir", run_dir, "--", *SLEEPER)
    try:
        wait_running(run_dir)
        job_id = job_id_of(run_dir)
        code, out, err = stop(run_dir)
        assert code == 0, err
        assert "stopped run" in out and "summary: terminated (exit 143)" in out, out
        # stop returned once the launcher had ended: its status and summary are there, no process of the job is
        assert proc.poll() == 143
        data = summary(run_dir)
        assert (data["reason"], data["status"]) == ("terminated", 143)
        assert not job_processes(job_id)
        assert runstate.state(run_dir) == runstate.ENDED
        # stopping it again: it had ended, which is what was asked
        code, out, err = stop(run_dir)
        assert code == 0 and "had already ended (summary: terminated (exit 143))" in out, (out, err)
    finally:
        end_launch(proc, run_dir)


def test_a_launcher_gone_without_a_summary_is_nothing_to_stop(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True).stdout.strip()
    (tmp_path / "job.yaml").write_text("job_id: x\n")
    with open(runstate.launcher_path(str(tmp_path)), "w") as f:
        json.dump({"pid": int(dead), "process_start": 1}, f)
    code, out, err = stop(tmp_path)
    assert code == 0 and "already gone, without a summary.json" in out, (out, err)


def test_a_reused_pid_is_never_signalled(tmp_path):
    """The record's pid now belongs to another process (its start time differs): it is left alone."""
    other = subprocess.Popen(["sleep", "60"])
    try:
        (tmp_path / "job.yaml").write_text("job_id: x\n")
        with open(runstate.launcher_path(str(tmp_path)), "w") as f:
            json.dump({"pid": other.pid, "process_start": runstate.process_start(other.pid) - 1}, f)
        code, out, err = stop(tmp_path)
        assert code == 0 and "already gone" in out, (out, err)
        assert other.poll() is None
    finally:
        other.kill()
        other.wait(10)


def _plant(runs, run, pid, plant, started="2030-01-01T00:00:00.000+00:00"):
    """A start record of run `run` naming `pid`, as another user who owns RUNS can leave it: a file of theirs
    (uid 65534), or one in a .detached folder everybody can write to."""
    folder = runs / runstate.DETACHED_DIR
    folder.mkdir(exist_ok=True)
    record = folder / f"{run}.json"
    record.write_text(json.dumps({"pid": pid, "process_start": runstate.process_start(pid), **runstate.machine(),
                                  "started": started}))
    if plant == "owner":
        os.chown(record, 65534, 65534)
    else:
        folder.chmod(0o777)
    return record


PLANTS = [pytest.param("owner", marks=pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")), "folder"]


@pytest.mark.parametrize("plant", PLANTS)
def test_a_planted_start_record_is_not_trusted_and_nothing_is_signalled(tmp_path, plant):
    """Another user who owns WORKDIR/runs can write RUNS/.detached/<run>.json naming any process of this user's:
    a record is taken only from this user's own file, in a folder no other user can write to."""
    victim = subprocess.Popen(["sleep", "60"])
    try:
        run_dir = tmp_path / "runs" / "r"
        run_dir.mkdir(parents=True)
        (run_dir / "job.yaml").write_text("job_id: r\n")
        record = _plant(tmp_path / "runs", "r", victim.pid, plant)
        code, out, err = stop(run_dir, "--timeout", "1")
        assert code == 1 and err.count("\n") == 1 and not out, (code, out, err)
        assert "launcher record is not trusted" in err and "nothing signalled" in err and str(record.parent) in err
        assert victim.poll() is None
    finally:
        victim.kill()
        victim.wait(10)


@pytest.mark.parametrize("plant", PLANTS)
def test_a_planted_newer_start_record_is_passed_over_for_the_users_own(tmp_path, plant):
    """The newer record is the launcher's (a detached resume records itself anew): a planted one is never the
    newer, it is passed over in one warning line and the launcher of this user's launcher.json is stopped."""
    victim, launcher = subprocess.Popen(["sleep", "60"]), subprocess.Popen(["sleep", "60"])
    try:
        run_dir = tmp_path / "runs" / "r"
        run_dir.mkdir(parents=True)
        (run_dir / "job.yaml").write_text("job_id: r\n")
        with open(runstate.launcher_path(str(run_dir)), "w") as f:
            json.dump({"pid": launcher.pid, "process_start": runstate.process_start(launcher.pid),
                       "started": "2026-01-01T00:00:00.000+00:00"}, f)
        _plant(tmp_path / "runs", "r", victim.pid, plant)
        code, out, err = stop(run_dir, "--timeout", "10")
        assert code == 0 and f"its launcher (pid {launcher.pid})" in out, (code, out, err)
        assert err.count("\n") == 1 and "launch stop: warning:" in err and "passed over" in err, err
        assert launcher.wait(10) == -signal.SIGTERM and victim.poll() is None
    finally:
        for proc in (victim, launcher):
            proc.kill()
            proc.wait(10)


@pytest.mark.parametrize("make", [lambda p: p / "missing", lambda p: p])  # no such path; a folder without a job
def test_a_bad_run_dir_is_one_line_and_2(tmp_path, make):
    code, out, err = stop(make(tmp_path))
    assert code == 2 and err.count("\n") == 1 and "is not a run (no job.yaml and no launcher record)" in err, err


def test_a_launcher_that_ignores_sigterm_is_killed_after_the_timeout(tmp_path):
    stubborn = subprocess.Popen([sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, "
                                 "signal.SIG_IGN); print('ok', flush=True); time.sleep(60)"], stdout=subprocess.PIPE)
    try:
        assert stubborn.stdout.readline() == b"ok\n"  # its handler is set
        (tmp_path / "job.yaml").write_text("job_id: x\n")
        with open(runstate.launcher_path(str(tmp_path)), "w") as f:
            json.dump({"pid": stubborn.pid, "process_start": runstate.process_start(stubborn.pid)}, f)
        code, out, err = stop(tmp_path, "--timeout", "0.5")
        assert code == 1 and "did not end within 0.5s of SIGTERM and was killed (SIGKILL)" in err, err
        assert stubborn.wait(5) == -signal.SIGKILL
    finally:
        stubborn.kill()
        stubborn.wait(10)


def _ended_run(tmp_path, summary_text=None, pid=None):
    """A run directory made by hand whose launcher is gone (a pid that ended), or that records `pid`."""
    if pid is None:
        pid = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                                 text=True, check=True).stdout)
    (tmp_path / "job.yaml").write_text("job_id: x\n")
    if summary_text is not None:
        (tmp_path / "summary.json").write_text(summary_text)
    with open(runstate.launcher_path(str(tmp_path)), "w") as f:
        json.dump({"pid": pid, "process_start": 1}, f)
    return tmp_path


@pytest.mark.parametrize("text", ["[]", "null", '{"reason": "ok"'])  # JSON that is no summary; one cut short
def test_an_unreadable_summary_of_an_ended_run_is_said_so(tmp_path, text):
    code, out, err = stop(_ended_run(tmp_path, text))
    assert code == 0 and "had already ended (its summary.json is unreadable)" in out, (code, out, err)


@pytest.mark.parametrize("pid", [0, True, 2 ** 31])  # never -1 here: a regression would signal every process
def test_a_record_whose_pid_is_no_process_id_signals_nothing(tmp_path, pid):
    """kill(0) signals the caller's process group (kill(-1): every process): a damaged launcher.json holding no
    process id is refused. Its own session: without the refusal, pid 0 would end only that `launch stop`."""
    proc = subprocess.run(launch_argv("stop", str(_ended_run(tmp_path, pid=pid))), capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL, start_new_session=True)
    assert proc.returncode == 1 and "no readable launcher record (launcher.json missing or damaged)" in proc.stderr, \
        (proc.returncode, proc.stderr)


@pytest.mark.parametrize("pid", [-1, 0])
def test_without_a_pidfd_only_the_recorded_live_process_is_signalled(pid):
    """pidfd_open refuses these pids (as an old kernel refuses every pid): kill() is then all there is, so the
    record must name a process that lives and is the recorded one, else it is gone."""
    with pytest.raises(ProcessLookupError):
        stop_cmd._open(runstate.LauncherRecord(pid=pid, process_start=1))


# ------------------------------------------------------------------- the starter, on this machine

def test_the_starter_detaches_a_real_launcher_that_stop_ends(tmp_path):
    """What `--detach` runs on instance 0, here: the launcher in its own session, stdin /dev/null, console to
    RUNS/.detached/<run>.log, recorded before it has a run directory; the roles' environment through a pipe
    (on no command line); `launch stop` ends it through that record's pid."""
    runs = tmp_path / "runs"
    run_dir = str(runs / "20260101-000000-abcd0123")
    secret = procs.mark_session()[:8] + "s3cr3tMARK"
    config = {"run_dir": run_dir, "cwd": str(tmp_path), "env_file": f"DETACH_SECRET={secret}\n",
              "environ": {"DETACH_WORKER": "w1"}, "extra": {"cluster": "here"},
              "options": ["--local", "-n", "1", "-s", "1", "--run-dir", run_dir, "--env-worker", "DETACH_WORKER"],
              "command": SLEEPER}
    started = subprocess.run([sys.executable, "-m", "mxlaunch.infra.transport.remote.detach_starter"], input=json.dumps(config),
                             capture_output=True, text=True, timeout=30)
    assert started.returncode == 0, started.stderr
    pid = json.loads(started.stdout)["pid"]
    try:
        console, record = runstate.detached_paths(run_dir)
        assert json.loads(started.stdout)["console"] == console
        # the starter (standard library only) writes the launcher record's shape: read as one, it is this launcher
        written = runstate.read_record(record)
        assert (written.pid, written.cluster, written.console) == (pid, "here", console)
        assert os.getsid(pid) == pid  # its own session: no terminal, no SIGHUP from whoever started it
        assert os.readlink(f"/proc/{pid}/fd/0") == "/dev/null"
        assert oct(os.stat(console).st_mode & 0o777) == "0o600"
        wait_running(run_dir)
        roles = job_processes(job_id_of(run_dir))
        for role_pid, (name, kind) in roles.items():
            if kind == "role":
                env = procs.environ(role_pid)
                assert env[b"DETACH_SECRET"] == secret.encode(), name
                # (local roles inherit the launcher's environment: only the workers' is asserted)
                assert env.get(b"DETACH_WORKER") == b"w1" or not name.startswith("worker"), name
        for p in [pid, *roles]:
            with open(f"/proc/{p}/cmdline", "rb") as f:
                assert secret.encode() not in f.read()
        code, out, err = stop(run_dir)
        assert code == 0 and "summary: terminated (exit 143)" in out, (out, err)
        assert not job_processes(job_id_of(run_dir)) and not runstate.is_alive(runstate.read_record(record))
        assert "run directory" in open(console).read()  # the launcher's console went to its file
    finally:
        if runstate.process_start(pid) is not None:
            os.kill(pid, signal.SIGKILL)


def test_the_starter_refuses_a_run_that_exists(tmp_path):
    (tmp_path / "runs" / "r1").mkdir(parents=True)
    config = {"run_dir": str(tmp_path / "runs" / "r1"), "options": [], "command": ["true"]}
    started = subprocess.run([sys.executable, "-m", "mxlaunch.infra.transport.remote.detach_starter"], input=json.dumps(config),
                             capture_output=True, text=True, timeout=30)
    assert started.returncode != 0 and "already exists" in started.stderr


def test_logs_shows_a_detached_launchers_console_until_it_has_role_logs(tmp_path):
    from click.testing import CliRunner
    from mxlaunch.launcher.cli import logs as logs_cmd
    run_dir = str(tmp_path / "r1")
    console, record = runstate.detached_paths(run_dir)
    os.makedirs(os.path.dirname(console))
    open(console, "w").write("launch: error: preflight failed on 10.0.0.2\n")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True).stdout.strip()
    json.dump({"pid": int(dead), "process_start": 1}, open(record, "w"))
    result = CliRunner().invoke(logs_cmd.logs, [run_dir, "--follow"])
    assert result.exit_code == 1 and "preflight failed on 10.0.0.2" in result.output
    assert "ended before it started the job" in result.output
    result = CliRunner().invoke(logs_cmd.logs, [run_dir])
    assert result.exit_code == 0 and result.output == "launch: error: preflight failed on 10.0.0.2\n"


def test_runs_lists_a_detached_launcher_that_has_no_run_directory_yet(tmp_path):
    from mxlaunch.launcher.cli import runs as runs_cmd
    run_dir = str(tmp_path / "20260101-000000-abcd0123")
    os.makedirs(os.path.dirname(runstate.detached_paths(run_dir)[1]), exist_ok=True)
    runstate.record_detached(run_dir, os.getpid())
    (row,) = runs_cmd.list_runs(str(tmp_path))
    assert (row.id, row.status) == ("20260101-000000-abcd0123", "starting")


# --------------------------------------------------------------------- what --detach hands over

def _spec(**kw):
    hosts = (Host("10.0.0.1", user="ubuntu", slots=1), Host("10.0.0.2", user="ubuntu", slots=1))
    return JobSpec(command=("/efs/mxlaunch/venv/bin/trainer", "fit", "--data-train", "t.rec", "--gpus", "0,1"), num_workers=2, num_servers=1,
                   hosts=hosts, local=False, workdir="/efs/mxlaunch/work", **kw).validate()


def test_the_detached_launchers_options_hold_the_resolved_job_and_no_secret():
    from mxlaunch.launcher.jobs import detached as detach
    target = JobTarget(hosts=_spec().hosts, python="/efs/mxlaunch/venv/bin/python", workdir="/efs/mxlaunch/work",
                       ssh=SSHOptions(key="/k", user="ubuntu"))
    spec = _spec(env=(("MXNET_USE_FUSION", "0"), ("TOKEN", "s3cr3t")), env_worker=(("W", "s3cr3t-w"),),
                 timeout=3600.0)
    environ, env_keys = detach._environ(spec)
    request = TrainRequest(cluster="heal", detach=True, grace=2.5, max_restarts=3, restart_delay=0.25,
                           scheduler_port=29000, verbose=True, watch_spot=False)
    options = detach.launcher_options(target, spec, "/efs/mxlaunch/work/runs/r1", "/home/ubuntu/k", "/home/ubuntu/kh",
                                      request)
    assert options[:2] == ["--hosts", "ubuntu@10.0.0.1,ubuntu@10.0.0.2"] and env_keys["env_worker"] == ["W"]
    assert environ == {"W": "s3cr3t-w"} and not any("s3cr3t" in o for o in options)
    assert detach._env_file_text(spec.env) == "MXNET_USE_FUSION=0\nTOKEN=s3cr3t\n"
    # the detached launcher is this same `launch train`: its own parser reads the job as resolved here
    detached = parsed_train(options)
    assert (detached.hosts, detached.num_workers, detached.num_servers, detached.run_dir, detached.python) == (
        "ubuntu@10.0.0.1,ubuntu@10.0.0.2", 2, 1, "/efs/mxlaunch/work/runs/r1", "/efs/mxlaunch/venv/bin/python")
    assert (detached.ssh_key, detached.known_hosts, detached.ssh_user, detached.workdir, detached.timeout) == (
        "/home/ubuntu/k", "/home/ubuntu/kh", "ubuntu", "/efs/mxlaunch/work", 3600.0)
    assert (detached.env_worker, detached.env_server, detached.watch_spot) == (("W",), (), False)
    assert (detached.grace, detached.max_restarts, detached.restart_delay, detached.scheduler_port,
            detached.verbose, detached.detached_from, detached.detach) == (2.5, 3, 0.25, 29000, True, "heal", False)


@pytest.mark.parametrize("spec,why", [
    (dict(env=(("K", "a\nb"),)), "--env K: a value with a line break"),
    (dict(env=(("K", "a "),)), "trailing whitespace"),
    (dict(env_worker=(("PYTHONPATH", "/x"),)), "--env-worker PYTHONPATH: with --detach it would change"),
    (dict(env_worker=(("K", "1"),), env_server=(("K", "2"),)), "different values"),
])
def test_what_a_detached_launcher_cannot_carry_is_refused_by_its_key(spec, why):
    from mxlaunch.errors import UsageError
    from mxlaunch.launcher.jobs import detached as detach
    with pytest.raises(UsageError, match=why):
        s = _spec(**spec)
        detach._env_file_text(s.env)
        detach._environ(s)


@pytest.mark.parametrize("run", ["", "../x", "a/b", ".detached", "-x"])
def test_a_run_id_is_a_plain_name(run):
    from mxlaunch.errors import UsageError
    from mxlaunch.launcher.jobs import detached as detach
    with pytest.raises(UsageError, match="expected a run id"):
        detach.run_dir_of(run)


@pytest.mark.parametrize("args,why", [
    (["--local"], "give --cluster NAME"), (["--cluster", "c", "--dry-run"], "--dry-run shows the plan"),
    (["--cluster", "c", "--run-dir", "x"], "--run-dir: a detached run's directory"),
])
def test_detach_usage_errors(args, why):
    proc = subprocess.run(launch_argv("train", *args, "-n", "1", "--detach", "--", "true"), capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode == 2 and why in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr


def test_a_detached_launcher_that_cannot_restart_names_repair():
    def fails(request):
        raise modes.JobFailed("could not restart the job: 10.0.0.2: timed out (run directory /r; `launch "
                              "train --resume /r` once the hosts are back)", 255)

    with pytest.raises(modes.JobFailed) as caught:
        modes.detached_run(TrainRequest(detached_from="heal"), run=fails)
    assert "`launch cluster repair heal`" in caught.value.message and "--resume" in caught.value.message
