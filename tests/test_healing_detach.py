"""Acceptance of issue 13, item 5, in the box: `launch train --cluster NAME --detach` returns within 5 s (timed
here, around the command's own process) with the run id, the launcher runs on instance 0; `launch runs --cluster`
lists the run, `launch logs --cluster RUN --follow` streams its workers' lines from instance 0, `launch stop
--cluster RUN` ends it (exit 0), the follow then ends by itself, and no role or launcher is left on any host.
Then `launch train --cluster NAME --detach --resume RUN --num-epochs 2` (within 5 s too) runs it, detached
again, from its epoch-1 checkpoint to its end: summary.json and metrics.jsonl in its run directory on EFS, nothing left on any host.

Uses the session's installed cluster (tests/fixtures_box.py `healing_cluster`) and leaves it running."""
import json
import os
import subprocess
import sys
import time

import pytest

from digits_recipe import fit_args, read_metrics
from fixtures_box import NO_IMDS
from testkit.jobs import wait_for
from testkit.streams import Output

pytestmark = [pytest.mark.bed, pytest.mark.aws, pytest.mark.slow, pytest.mark.timeout(600)]
RUNS = "/efs/mxlaunch/work/runs"  # mxlaunch.launcher.jobs.detached.RUNS, as the hosts see it
DETACH_LIMIT = 5.0  # the promise: the command returns within 5 s


def detach(box, name, data, prefix, *extra):
    """`launch train --cluster NAME --detach` (1 worker, 1 server) timed from outside: (run id, seconds)."""
    started = time.monotonic()
    code, out, err = box.launch("train", "--cluster", name, "--detach", "-n", 1, "-s", 1, *NO_IMDS,
                                "--env", "OMP_NUM_THREADS=1",
                                "--", "trainer", *fit_args(data, prefix, 16, *extra), timeout=60)
    seconds = time.monotonic() - started
    assert code == 0, err
    run = out.strip()
    assert run and "\n" not in run, out  # the run id alone on stdout
    assert f"launch stop --cluster {name} {run}" in err and f"launch logs --cluster {name} {run} --follow" in err
    return run, seconds


def on_efs(box, path: str) -> str:
    """A path the hosts see under /efs, as this machine sees it."""
    return os.path.join(box.bed.shared, os.path.relpath(path, "/efs"))


def status_of(box, name, run) -> str:
    code, out, err = box.launch("runs", "--cluster", name)
    assert code == 0, err
    rows = [line.split() for line in out.splitlines()[1:]]
    return next((" ".join(r[6:-3]) for r in rows if r and r[0] == run), "")  # id, date, time, mode, hosts, workers


def left_on_hosts(box) -> dict:
    """Every process but sshd's on each box host: sessions, guards, roles, launchers."""
    found = {}
    for i in range(len(box.bed.members)):
        for pid in box.bed.job_pids(i):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if not cmdline.startswith("sshd") and "/sshd " not in cmdline:
                found.setdefault(i, []).append(cmdline[:200])
    return found


def test_detach_follow_stop_then_a_detached_resume_to_its_end(healing_cluster):
    box, name, data = healing_cluster.box, healing_cluster.name, healing_cluster.data
    tag = str(os.getpid())

    # a long job, detached: the command returns at once with the run id; its launcher runs on instance 0
    run, seconds = detach(box, name, data, f"/efs/ckpt/detach-{tag}/digits", "--num-epochs", 50)
    assert seconds < DETACH_LIMIT, f"launch train --detach took {seconds:.1f}s"
    run_dir = on_efs(box, f"{RUNS}/{run}")
    follow = subprocess.Popen([sys.executable, "-m", "mxlaunch.launcher", "logs", "--cluster", name, run, "--follow"],
                              env=box.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                              start_new_session=True)
    try:
        wait_for(lambda: status_of(box, name, run) == "running", 60, interval=0.5,
                 what=f"launch runs --cluster {name} to list {run} as running")
        record = json.load(open(os.path.join(run_dir, "launcher.json")))
        # streamed from instance 0: the worker's own lines (1 worker: its lines carry no prefix)
        out = Output(follow.stdout)
        seen = []
        while not any("Epoch[1] Batch" in line for line in seen):  # epoch 0's checkpoint is written by then
            seen.append(out.readline(timeout=120).decode(errors="replace"))

        code, said, err = box.launch("stop", "--cluster", name, run, timeout=90)
        assert code == 0, err
        assert f"stopped run {RUNS}/{run}" in said and "summary: terminated (exit 143)" in said, said
        assert follow.wait(timeout=30) == 0  # the run ended: the follow ends by itself
        summary = json.load(open(os.path.join(run_dir, "summary.json")))
        assert (summary["reason"], summary["status"]) == ("terminated", 143)
        assert status_of(box, name, run) == "terminated"
        assert record["pid"] == json.load(open(os.path.join(run_dir, "launcher.json")))["pid"]
        wait_for(lambda: not left_on_hosts(box), 10, what=f"no process on any host (left: {left_on_hosts(box)})")
        code, _, err = box.launch("stop", "--cluster", name, "no-such-run")
        assert code == 2 and "is not a run" in err, err
    finally:
        if follow.poll() is None:
            follow.kill()
        follow.wait(10)

    # the stopped run resumed, detached, to its end (2 epochs: its second): its job.yaml (on EFS) names --hosts;
    # the launcher on instance 0 takes the cluster's hosts as they are now (the healing tests replace instances)
    # and the run's newest checkpoint (epoch 1); summary.json and metrics.jsonl end up in its run directory on EFS
    started = time.monotonic()
    code, out, err = box.launch("train", "--cluster", name, "--detach", "--resume", run, "--num-epochs", 2, timeout=60)
    assert code == 0 and out.strip() == run, err
    assert time.monotonic() - started < DETACH_LIMIT, f"the detached resume took {time.monotonic() - started:.1f}s"
    code, _, err = box.launch("logs", "--cluster", name, run, "--follow", "--role", "worker-0", timeout=240)
    assert code == 0, err  # ends when the run does
    summary = json.load(open(os.path.join(run_dir, "summary.json")))
    console = on_efs(box, f"{RUNS}/.detached/{run}.log")
    assert (summary["reason"], summary["status"]) == ("ok", 0), (summary, open(console).read()[-3000:])
    assert [m["epoch"] for m in read_metrics(os.path.join(run_dir, "metrics.jsonl"))] == [0, 1]
    assert status_of(box, name, run) == "ok"
    wait_for(lambda: not left_on_hosts(box), 10, what=f"no process on any host (left: {left_on_hosts(box)})")
