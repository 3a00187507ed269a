"""Acceptance of issue 11: the whole cluster path on the cluster in a box (tests/fixtures_box.py
`healing_cluster`, the session's one installed cluster): up with the real install (a wheelhouse made here with
`pip download`, --extra cpu, one venv on /efs) -> put the digits -> exec -> a --hosts job as `ubuntu`. Training
on the cluster itself (-n 3 -s 3 to >= 97 %, then --resume with more epochs) is tests/test_healing_replace.py's
job, which also loses an instance on the way; `down` leaving nothing is checked by the fixture at the end.

The hosts see neither the checkout nor this run's tmp directories: every path a role uses is on /efs or
under its own run directory there, and what the launcher keeps comes back over SSH."""
import contextlib
import os
import select
import signal
import subprocess
import sys
import time

import pytest

from digits_recipe import fit_args, read_metrics
from testkit import bed

pytestmark = [pytest.mark.bed, pytest.mark.aws, pytest.mark.slow, pytest.mark.timeout(900)]
WORKDIR = "/efs/mxlaunch/work"  # the cluster's workdir (ubuntu's, by the user data)


def test_up_installs_once_then_put_and_exec(healing_cluster, digits_dir):
    box, name = healing_cluster.box, healing_cluster.name
    # up --wait ssh: one install on instance 0, from the wheelhouse alone; every instance verified
    err = healing_cluster.up_err
    assert err.count("installing mxlaunch[cpu] into /efs/mxlaunch/venv") == 1 and f"on {name}-0" in err
    assert "imports mxnet and mxlaunch on 3 instance(s)" in err

    # put: the digits RecordIO onto EFS (the fixture's put); a second put copies nothing
    assert "copied 4 file(s)" in healing_cluster.put_out
    code, out, err = box.launch("cluster", "put", name, digits_dir, timeout=120)  # to the default, /efs/data/
    assert code == 0 and "copied 0 file(s)" in out and "4 already there" in out, err

    # exec: the remote exit status; --all prefixes every instance's output
    code, _, _ = box.launch("cluster", "exec", name, "2", "--", "sh", "-c", "exit 5")
    assert code == 5
    code, out, err = box.launch("cluster", "exec", name, "--all", "--", "whoami")
    assert code == 0 and sorted(out.splitlines()) == [f"[{name}-{i}] ubuntu" for i in range(3)], err


def test_rank_0_needs_no_launcher_path_under_hosts_as_ubuntu(healing_cluster, tmp_path):
    """Regression: under --hosts, rank 0 must not need the launcher's run directory on its host. Every role
    used to get the launcher's own absolute run directory ($LAUNCH_RUN_DIR) and rank 0 called os.makedirs on
    it on its host; on a real cluster that path does not exist there and `ubuntu` may not create it, which
    killed the whole dist_sync job. The root SSH bed hid it (one file system); the box's hosts do not.
    Failed on the code before the fix: "trainer: error: PermissionError: [Errno 13] Permission denied:
    '/tmp/pytest-of-root/pytest-N'" from worker 1 (MXNet rank 0), every other role stopped."""
    box, name = healing_cluster.box, healing_cluster.name
    state = box.cluster_dir(name)
    with open(os.path.join(state, "hosts")) as f:  # the cluster's hostfile: no worker on its first host
        lines = [line.split()[0] for line in f if line.strip() and not line.startswith("#")]
    hostfile = tmp_path / "hosts"
    hostfile.write_text("".join(f"{h} slots={s}\n" for h, s in zip(lines, (0, 1, 1))))
    run_dir = tmp_path / "run"  # the launcher's: no host can see it, and ubuntu could not make it there
    code, out, err = box.launch("train", "--hosts", hostfile, "-n", 2, "-s", 1, "--ssh-key",
                                os.path.join(state, "id_key"), "--known-hosts", os.path.join(state, "known_hosts"),
                                "--python", "/efs/mxlaunch/venv/bin/python", "--workdir", WORKDIR, "--run-dir",
                                run_dir, "--env", "OMP_NUM_THREADS=1", "--",
                                "trainer", *fit_args(healing_cluster.data, f"{WORKDIR}/ckpt/nonroot/digits", 16,
                                                     "--num-epochs", 1), timeout=240)
    assert code == 0, err[-3000:]
    assert [m["epoch"] for m in read_metrics(run_dir / "metrics.jsonl")] == [0]  # fetched back


def _sleepers(box, marker: str) -> list:
    """Processes on any bed host whose command line is `marker`."""
    return [p for m in box.bed.members for p in box.bed.job_pids(m.index) if _cmdline(p).strip() == marker]


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


@pytest.mark.parametrize("where", [["1"], ["--all"]])
def test_one_ctrl_c_stops_exec_on_every_instance_it_runs_on(healing_cluster, where):
    box, name = healing_cluster.box, healing_cluster.name
    marker = "sleep 297"  # this test's own remote command
    expected = 3 if where == ["--all"] else 1
    proc = subprocess.Popen([sys.executable, "-m", "mxlaunch.launcher", "cluster", "exec", name, *where, "--", "sh",
                             "-c", f"echo started; exec {marker}"], env=box.env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True, stdin=subprocess.DEVNULL)
    try:
        out, deadline = b"", time.monotonic() + 60
        while out.count(b"started") < expected and time.monotonic() < deadline and proc.poll() is None:
            if select.select([proc.stdout], [], [], 1)[0]:
                out += os.read(proc.stdout.fileno(), 4096)
        assert out.count(b"started") == expected, (out, proc.stderr.read() if proc.poll() is not None else "")
        # `echo started` comes just before the shell execs the sleep: on a loaded machine the exec can be later
        bed.wait_for(lambda: len(_sleepers(box, marker)) == expected, 10, what=f"{expected} {marker!r} running")
        proc.send_signal(signal.SIGINT)  # one Ctrl-C
        assert proc.wait(timeout=15) == 130
        bed.wait_for(lambda: not _sleepers(box, marker), 10, what=f"no {marker!r} left on any instance")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        for pid in _sleepers(box, marker):  # a failed check must not leave this test's commands to the next test
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
