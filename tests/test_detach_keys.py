"""What a detached launcher holds on instance 0 and whose record is whose (findings 4, 9, 10c of issue 13's
review): its key (the cluster's own only, no passphrase, 0600 in a 0700 folder of its run, removed when it
ends), launcher records tied to one machine and one boot, and `--resume RUN_DIR --hosts` moving a --hosts job
to other hosts (a detached run after `launch cluster repair`). Fakes and files only: no cluster, no SSH."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time

import paramiko
import pytest

from mxlaunch.launcher.jobs import where
from mxlaunch.errors import UsageError
from mxlaunch.launcher.jobs import rundir, launcher_record as runstate
from mxlaunch.launcher.jobs import modes
from mxlaunch.launcher.jobs.request import TrainRequest
from mxlaunch.infra.transport.remote import detach_starter as starter
from mxlaunch.infra.transport.ssh import SSHOptions
from mxlaunch.infra.transport.target import JobTarget
from testkit.jobs import launch_argv, parsed_train

pytestmark = pytest.mark.timeout(60)


def stop(*args):
    proc = subprocess.run(launch_argv("stop", *map(str, args)), capture_output=True, text=True, timeout=30,
                          stdin=subprocess.DEVNULL)
    return proc.returncode, proc.stdout, proc.stderr


@pytest.fixture
def sleeper():
    proc = subprocess.Popen(["sleep", "60"])
    yield proc
    proc.kill()
    proc.wait(10)


def _record(path, pid, **fields):
    data = {"pid": pid, "process_start": runstate.process_start(pid), **runstate.machine(),
            "started": "2026-01-01T00:00:00.000+00:00", **fields}
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump({k: v for k, v in data.items() if v is not ...}, f)


# ------------------------------------------------------------------ 10c: one machine, one boot, fail closed

def test_a_launcher_record_holds_its_machine_and_boot(tmp_path):
    runstate.record_launcher(str(tmp_path))
    data = json.load(open(runstate.launcher_path(str(tmp_path))))
    assert data["boot_id"] == open("/proc/sys/kernel/random/boot_id").read().strip()
    assert data["hostname"] == os.uname().nodename and runstate.is_alive(runstate.read_record(
        runstate.launcher_path(str(tmp_path))))


def test_stop_refuses_a_launcher_recorded_on_another_host_and_names_where_it_runs(tmp_path, sleeper):
    runs = tmp_path / "runs"
    run_dir = runs / "20260101-000000-abcd0123"
    run_dir.mkdir(parents=True)
    (run_dir / "job.yaml").write_text("job_id: x\n")
    # the same pid and start time as a live process here: only the host tells them apart
    _record(runstate.launcher_path(str(run_dir)), sleeper.pid, hostname="ip-10-0-0-1")
    _record(runstate.detached_paths(str(run_dir))[1], sleeper.pid, hostname="ip-10-0-0-1", cluster="heal",
            started="2025-01-01T00:00:00.000+00:00")
    assert runstate.state(str(run_dir)) == runstate.ELSEWHERE
    code, out, err = stop(run_dir)
    assert code == 10 and err.count("\n") == 1, (out, err)
    # instance 0 cannot tell whether the launcher still lives elsewhere: it says what can (tests/test_harden_lost.py)
    assert ("ran on 10.0.0.1, which is not this cluster's instance 0 any more (replaced, or stopped): not stopped "
            "from here; `launch stop --cluster heal 20260101-000000-abcd0123` asks AWS") in err
    assert sleeper.poll() is None
    os.remove(runstate.detached_paths(str(run_dir))[1])  # a run not detached: where to run the same command
    code, _, err = stop(run_dir)
    assert code == 10 and f"launch stop {run_dir} on ip-10-0-0-1" in err, err


def test_a_record_from_an_earlier_boot_or_without_a_start_time_matches_no_process(tmp_path, sleeper):
    (tmp_path / "job.yaml").write_text("job_id: x\n")
    path = runstate.launcher_path(str(tmp_path))
    for fields in ({"boot_id": "00000000-0000-0000-0000-000000000000"}, {"process_start": ...}):
        _record(path, sleeper.pid, **fields)
        assert not runstate.is_alive(runstate.read_record(path)) and runstate.state(str(tmp_path)) == runstate.GONE
        code, out, err = stop(tmp_path)
        assert code == 0 and "already gone" in out, (out, err)
        assert sleeper.poll() is None


def test_a_resumed_detached_runs_new_start_record_wins_over_its_old_launcher_json(tmp_path, sleeper):
    run_dir = str(tmp_path / "r1")
    os.makedirs(run_dir)
    _record(runstate.launcher_path(run_dir), 1, started="2026-01-01T00:00:00.000+00:00")
    _record(runstate.detached_paths(run_dir)[1], sleeper.pid, started="2026-01-02T00:00:00.000+00:00")
    assert runstate.read_launcher(run_dir).pid == sleeper.pid and runstate.state(run_dir) == runstate.RUNNING
    _record(runstate.launcher_path(run_dir), os.getpid(), started="2026-01-03T00:00:00.000+00:00")
    assert runstate.read_launcher(run_dir).pid == os.getpid()


# ------------------------------------------------------------------------------ 9: the key on instance 0

@pytest.fixture
def cluster_state(tmp_path, monkeypatch):
    """MXLAUNCH_HOME with cluster c1's own key, unencrypted (as `up` saves it)."""
    from mxlaunch.infra.cloud import local_state as state
    monkeypatch.setenv("MXLAUNCH_HOME", str(tmp_path / "home"))
    path = state.key_path("c1")
    path.parent.mkdir(parents=True)
    paramiko.ECDSAKey.generate().write_private_key_file(str(path))
    return path


def _target(key=None):
    return JobTarget(hosts=(), python="/v/bin/python", ssh=SSHOptions(key=key, user="ubuntu"))


def test_only_the_clusters_own_key_without_a_passphrase_goes_to_instance0(cluster_state, tmp_path):
    from mxlaunch.launcher.jobs import detached as detach
    assert detach.cluster_key("c1", _target(str(cluster_state))) == str(cluster_state)
    personal = tmp_path / "id_personal"
    paramiko.ECDSAKey.generate().write_private_key_file(str(personal))
    with pytest.raises(UsageError, match=r"--ssh-key .*id_personal: --detach copies only cluster c1's own key"):
        detach.cluster_key("c1", _target(str(personal)))
    with pytest.raises(UsageError, match="cluster c2 uses a key pair of your own"):
        detach.cluster_key("c2", _target(str(personal)))
    paramiko.ECDSAKey.generate().write_private_key_file(str(cluster_state), password="secret")
    with pytest.raises(UsageError, match="passphrase-protected"):
        detach.cluster_key("c1", _target(None))


class LocalSFTP:
    """The SFTP calls _private_folder/_put_private make, on this file system under a loose umask, recording
    each file's mode when its first byte is written."""

    def __init__(self, home):
        self.home, self.mode_at_write = str(home), {}

    def normalize(self, path):
        return self.home

    def mkdir(self, path, mode):
        os.mkdir(path, 0o777)  # what a server with umask 0 would do: the mode asked is not relied on

    def chmod(self, path, mode):
        os.chmod(path, mode)

    def lstat(self, path):
        return os.lstat(path)

    def open(self, path, mode):
        sftp = self

        class File:
            def __enter__(self):
                self.f = open(path, "wb")
                os.chmod(path, 0o666)
                return self

            def chmod(self, m):
                os.chmod(path, m)

            def write(self, data):
                sftp.mode_at_write.setdefault(path, stat.S_IMODE(os.stat(path).st_mode))
                self.f.write(data)

            def __exit__(self, *exc):
                self.f.close()

        return File()

    def posix_rename(self, a, b):
        os.rename(a, b)


def test_the_key_is_0600_before_its_first_byte_in_a_0700_folder_of_its_run(tmp_path):
    from mxlaunch.launcher.jobs import detached as detach
    sftp = LocalSFTP(tmp_path)
    folder = detach._private_folder(sftp, "c1", "r1")
    assert folder == str(tmp_path / ".mxlaunch" / "detach" / "c1" / "r1")
    key = detach._put_private(sftp, folder, "id_key", "KEY")
    assert sftp.mode_at_write == {key + ".tmp": 0o600} and open(key).read() == "KEY"
    for part in (tmp_path / ".mxlaunch", tmp_path / ".mxlaunch" / "detach", os.path.dirname(folder), folder):
        assert stat.S_IMODE(os.stat(part).st_mode) == 0o700, part


def test_a_detached_launcher_removes_its_key_folder_however_it_ends(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    mine = tmp_path / ".mxlaunch" / "detach" / "heal" / "r1"
    other = tmp_path / "id_rsa"  # a key given by hand to a --detached-from launcher: never touched

    def ends(how):
        def run(request):
            assert request.detached_from is None  # the job itself, run by this launcher
            if how:
                raise how
        return run

    for how in (None, modes.JobFailed("failed", 1), KeyboardInterrupt()):
        mine.mkdir(parents=True, exist_ok=True)
        (mine / "id_key").write_text("k")
        other.write_text("k")
        for key in (str(mine / "id_key"), str(other)):
            request = TrainRequest(detached_from="heal", ssh_key=key, run_dir="/efs/runs/r1")
            try:
                modes.detached_run(request, run=ends(how))
            except (modes.JobFailed, KeyboardInterrupt):
                pass
        assert not mine.exists() and other.exists(), how


def test_the_next_start_sweeps_the_key_folders_of_launchers_gone(tmp_path, sleeper):
    keys, runs = tmp_path / "keys" / "heal", tmp_path / "runs"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    for run in ("gone", "alive", "resuming", "starting"):
        (keys / run).mkdir(parents=True)
        (keys / run / "id_key").write_text("k")
    old = time.time() - 100
    for run, pid in (("gone", int(dead)), ("alive", sleeper.pid), ("resuming", int(dead))):
        _record(str(runs / ".detached" / f"{run}.json"), pid)
        if run != "resuming":  # a resume has just put a newer key beside the gone launcher's record
            os.utime(keys / run / "id_key", (old, old))
        else:
            os.utime(runs / ".detached" / f"{run}.json", (old, old))
    starter.sweep_keys(str(keys), str(runs))
    assert sorted(os.listdir(keys)) == ["alive", "resuming", "starting"]


def test_the_starter_resumes_a_run_appending_to_its_console(tmp_path):
    run_dir = tmp_path / "runs" / "r1"
    config = {"run_dir": str(run_dir), "options": ["--no-such-option"], "command": [], "resume": True}

    def start():
        return subprocess.run([sys.executable, "-m", "mxlaunch.infra.transport.remote.detach_starter"], input=json.dumps(config),
                              capture_output=True, text=True, timeout=30)

    refused = start()
    assert refused.returncode != 0 and "is not a run (no job.yaml): nothing to resume" in refused.stderr
    run_dir.mkdir(parents=True)
    (run_dir / "job.yaml").write_text("job_id: x\n")
    console, record = runstate.detached_paths(str(run_dir))
    with open(console, "w") as f:
        f.write("the first launcher's lines\n")
    _record(record, 1)
    started = start()
    assert started.returncode == 0, started.stderr
    assert json.load(open(record))["pid"] == json.loads(started.stdout)["pid"]
    assert open(console).read().startswith("the first launcher's lines\n")


# ---------------------------------------------------------- 4: a detached run resumed on the cluster as it is

def _hosts_job(tmp_path, hosts, target=None, mode="hosts"):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    job = {"command": ["trainer", "fit", "--data-train", "t.rec", "--model-prefix", "/efs/m"], "mode": mode, "num_workers": 2,
           "num_servers": 1, "hosts": hosts, "workdir": "/efs/work",
           "target": target or {"python": "/v/bin/python", "ssh": {"user": "ubuntu", "key": "/old/id_key"}}}
    (run_dir / "job.yaml").write_text(json.dumps(job))
    return str(run_dir)


def test_resume_moves_a_hosts_job_to_other_hosts_with_as_many_worker_slots(tmp_path):
    run_dir = _hosts_job(tmp_path, ["ubuntu@10.0.0.1 slots=1", "ubuntu@10.0.0.2 slots=1"])
    target = where.recorded_target(run_dir, None, SSHOptions(key="/new/id_key"), None,
                                  hosts="ubuntu@10.0.0.1,ubuntu@10.0.0.9")
    assert [h.address for h in target.hosts] == ["10.0.0.1", "10.0.0.9"] and target.ssh.key == "/new/id_key"
    with pytest.raises(UsageError, match="its job ran on 2 worker slots, these hosts offer 1"):
        where.recorded_target(run_dir, hosts="ubuntu@10.0.0.9")


@pytest.mark.parametrize("target,mode,why", [
    ({"cluster": "heal"}, "hosts", "ran on cluster heal, which --resume resolves again by itself"),
    (None, "local", "ran on this machine"),
])
def test_resume_moves_only_a_hosts_job(tmp_path, target, mode, why):
    run_dir = _hosts_job(tmp_path, ["10.0.0.1 slots=2"], target, mode)
    with pytest.raises(UsageError, match=why):
        where.recorded_target(run_dir, hosts="10.0.0.2 slots=2")


def test_a_detached_resume_starts_the_runs_launcher_on_the_hosts_as_they_are(monkeypatch, cluster_state):
    from mxlaunch.launcher.jobs import detached as detach
    from mxlaunch.infra.transport.hosts import parse_hosts

    seen = {}
    monkeypatch.setattr(detach, "_start", lambda name, target, hosts, run, options, config: seen.update(
        name=name, hosts=hosts, options=options("/k", "/kh"), config=config))
    target = JobTarget(hosts=parse_hosts("ubuntu@10.0.0.1,ubuntu@10.0.0.9"), python="/v/bin/python",
                       workdir="/efs/mxlaunch/work", ssh=SSHOptions(user="ubuntu"))
    request = TrainRequest(cluster="heal", detach=True, resume="20260101-000000-abcd0123", num_epochs=3,
                           env=(("TOKEN", "t"),), max_restarts=2)
    detach.resume(request, target, request.resume)
    assert seen["name"] == "heal" and seen["options"][:4] == [
        "--resume", f"{detach.RUNS}/20260101-000000-abcd0123", "--hosts", "ubuntu@10.0.0.1,ubuntu@10.0.0.9"]
    # what the launcher on instance 0 is: this same `launch train`, as its own parser reads these options
    detached = parsed_train(seen["options"])
    assert (detached.resume, detached.hosts, detached.num_epochs, detached.max_restarts, detached.detached_from,
            detached.ssh_key, detached.known_hosts, detached.ssh_user, detached.python) == (
        f"{detach.RUNS}/20260101-000000-abcd0123", "ubuntu@10.0.0.1,ubuntu@10.0.0.9", 3, 2, "heal", "/k", "/kh",
        "ubuntu", "/v/bin/python")
    assert seen["config"]["resume"] and seen["config"]["env_file"] == "TOKEN=t\n"
    assert "TOKEN" not in " ".join(seen["options"])
    with pytest.raises(UsageError, match="expected a run id"):
        detach.resume(request, target, "../etc")


@pytest.mark.parametrize("args,why", [
    (["--resume", "r", "--cluster", "c"], "--resume RUN_DIR takes the job from RUN_DIR/job.yaml"),
    (["--resume", "r", "--cluster", "c", "--hosts", "h", "--detach"], "--resume RUN_DIR takes the job"),
])
def test_resume_flag_checks(args, why):
    proc = subprocess.run(launch_argv("train", *args), capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and why in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr


def test_a_detached_launcher_that_cannot_restart_names_the_command_that_resumes_it(monkeypatch):
    def fails(request):
        raise modes.JobFailed("could not restart the job: 10.0.0.2: timed out", 255)

    request = TrainRequest(detached_from="heal", run_dir="/efs/mxlaunch/work/runs/20260101-000000-abcd0123")
    with pytest.raises(modes.JobFailed) as caught:
        modes.detached_run(request, run=fails)
    assert ("run `launch cluster repair heal`, then `launch train --cluster heal --detach --resume "
            "20260101-000000-abcd0123`") in caught.value.message
