"""Benchmark (not a test): `launch train --hosts` on 1, 2, 4, 8 hosts of the SSH test bed (root only).

Per bed size N (one worker per host, one server, the scheduler on host 0; MXNet's pushpull job):
  connect      parallel SSH connect + authenticate to every host (launcher.ssh.connect_all)
  fan-out      SSHRunner alone: N+2 roles of `sleep` (no MXNet) -> every role's process started, then
  stop         ... every role stopped through its guard and reported (the runner's own cost, no CPU load)
  preflight    the preflight alone on every host (connect, interpreter + `import mxnet`, files, port)
  running      `launch train` start -> every role's process exists (preflight included)
  end-to-end   `launch train` of a trivial dist_sync job (3 push/pull rounds) until it exits 0
  teardown     SIGKILL of the last host's worker -> no process of the job left on any host
               (`ip netns pids`: roles, guards and SSH sessions), and the launcher's exit status

Every role imports MXNet, which costs CPU seconds: on a small machine the hosts share the cores, so the
times past `connect` grow with N because of CPU, not because of the fan-out (see the `cpus` line).

    sudo .venv/bin/python bench/launch_ssh.py [--sizes 1,2,4,8]

Progress goes to stderr, the table to stdout. Connects only to the bed it creates (private namespaces).
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# testkit/ (the test support) is not installed: it is found beside bench/, in this checkout
sys.path.append(str(ROOT))
from testkit import bed as testbed  # noqa: E402
from testkit.jobs import PUSHPULL, job_id_of, job_processes, read_log  # noqa: E402
from testkit.require import bed_unavailable  # noqa: E402

PY = sys.executable


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def launch_argv(bed, run_dir: str, *command: str):
    n = len(bed.members)
    return [PY, "-m", "mxlaunch.launcher", "train", "--hosts", bed.hostfile([1] * n), "-n", str(n), "-s", "1",
            "--python", PY, "--ssh-key", bed.key, "--known-hosts", bed.known_hosts, "--run-dir", run_dir,
            "--env", "OMP_NUM_THREADS=1", "--env", "PUSHPULL_MXNET_IMPORT=1", "--", *command]  # as recorded


def start(argv):
    return subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=dict(os.environ, NO_COLOR="1"), start_new_session=True)


def fan_out(bed, options, n):
    import queue

    from mxlaunch.launcher.jobs.plan import JobSpec, plan_job
    from mxlaunch.infra.transport.runner import RoleEnded, RoleLaunch, RoleStarted
    from mxlaunch.infra.transport.ssh import connect_all
    from mxlaunch.infra.transport.ssh_runner import SSHRunner

    spec = JobSpec(command=("/bin/sleep", "60"), num_workers=n, num_servers=1, hosts=tuple(bed.hosts), local=False)
    plan = plan_job(spec, "fanout", "/tmp/none", 23458)
    conns = connect_all(bed.hosts, options)
    runner = SSHRunner(conns.succeeded, PY)
    events = queue.SimpleQueue()
    try:
        t = time.monotonic()
        handles = [runner.start(RoleLaunch(role, spec.command, None), events) for role in plan.roles]
        started = 0
        while started < len(plan.roles):
            event = events.get(timeout=60)
            assert not isinstance(event, RoleEnded), event
            started += isinstance(event, RoleStarted)
        fan = time.monotonic() - t
        t = time.monotonic()
        for h in handles:
            h.stop()
        ended = 0
        while ended < len(plan.roles):
            ended += isinstance(events.get(timeout=30), RoleEnded)
        return fan, time.monotonic() - t
    finally:
        runner.close()


def measure(n: int) -> dict:
    from mxlaunch.launcher.jobs import preflight
    from mxlaunch.infra.transport.hosts import place
    from mxlaunch.launcher.jobs.plan import JobSpec, plan_job
    from mxlaunch.infra.transport.ssh import SSHOptions, connect_all

    bed = testbed.up(n)
    row = {"hosts": n}
    try:
        options = SSHOptions(key=bed.key, known_hosts=bed.known_hosts, config_path=None)
        t = time.monotonic()
        conns = connect_all(bed.hosts, options)
        row["connect"] = time.monotonic() - t
        assert not conns.failed, conns.lines()
        conns.close()

        row["fan-out"], row["stop"] = fan_out(bed, options, n)

        spec = JobSpec(command=(PY, PUSHPULL), num_workers=n, num_servers=1,
                       hosts=tuple(h for h in bed.hosts), local=False, workdir=str(ROOT))
        placement = place(spec.hosts, n, 1)
        t = time.monotonic()
        conns = connect_all(bed.hosts, options)
        report = preflight.run(conns, preflight.Checks.from_spec(spec, PY, placement),
                               plan=plan_job(spec, "bench", "/tmp/none", 23457))
        row["preflight"] = time.monotonic() - t
        conns.close()
        assert not report.failed, report.table()

        run_dir = os.path.join(bed.dir, "e2e")
        t = time.monotonic()
        proc = start(launch_argv(bed, run_dir, PY, PUSHPULL, "--rounds", "3"))
        job_id = testbed.wait_for(lambda: job_id_of(run_dir), 120, what="job.yaml")
        testbed.wait_for(lambda: sum(k == "role" for _, k in job_processes(job_id).values()) == n + 2
                         or proc.poll() is not None, 180, what="every role running")
        row["running"] = time.monotonic() - t
        _, err = proc.communicate(timeout=300)
        row["end-to-end"] = time.monotonic() - t
        assert proc.returncode == 0, err.decode()[-2000:]
        testbed.wait_for(lambda: not any(bed.job_pids(i) for i in range(n)), 10, what="clean bed")

        run_dir = os.path.join(bed.dir, "fault")
        proc = start(launch_argv(bed, run_dir, PY, PUSHPULL, "--rounds", "100000", "--round-seconds", "0.05"))
        testbed.wait_for(lambda: all("round=1 " in read_log(run_dir, f"worker-{r}") for r in range(n)), 240,
                         what="every worker pushing")
        job_id = job_id_of(run_dir)
        victim = next(p for p, (name, kind) in job_processes(job_id).items()
                      if name == f"worker-{n - 1}" and kind == "role")
        os.kill(victim, signal.SIGKILL)
        t = time.monotonic()
        testbed.wait_for(lambda: not any(bed.job_pids(i) for i in range(n)), 30, interval=0.01, what="clean bed")
        row["teardown"] = time.monotonic() - t
        proc.communicate(timeout=30)
        row["exit"] = proc.returncode
    finally:
        problems = bed.down()
        if problems:
            log(f"bed teardown problems: {problems}")
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,2,4,8")
    args = parser.parse_args()
    reason = bed_unavailable()
    if reason:
        sys.exit(f"bench/launch_ssh.py: {reason}")
    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        log(f"{n} host(s) ...")
        rows.append(measure(n))
        log(f"  {rows[-1]}")
    cols = ["hosts", "connect", "fan-out", "stop", "preflight", "running", "end-to-end", "teardown", "exit"]
    print(f"cpus: {os.cpu_count()}  (every host of the bed shares them)")
    print("| " + " | ".join(c + (" (s)" if c not in ("hosts", "exit") else "") for c in cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(f"{r[c]:.2f}" if isinstance(r[c], float) else str(r[c]) for c in cols) + " |")
    base = rows[0]
    for r in rows[1:]:
        print(f"{r['hosts']} hosts / {base['hosts']} host: connect x{r['connect'] / base['connect']:.2f}, "
              f"fan-out x{r['fan-out'] / base['fan-out']:.2f}, "
              f"running x{r['running'] / base['running']:.2f}, end-to-end x{r['end-to-end'] / base['end-to-end']:.2f}")


if __name__ == "__main__":
    main()
