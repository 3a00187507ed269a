"""Benchmark of `launch train --local` with a trivial dist_sync push/pull job (testkit/pushpull.py).

For n = 1, 2, 4 workers (1 server, OMP_NUM_THREADS=1), median of --repeat runs:
  started    invoking the launcher -> every role's process is running (found by the job's marker in /proc)
  connected  invoking the launcher -> every worker finished its first push/pull (ps-lite fully connected)
  e2e        invoking the launcher -> launcher exited 0 after --rounds push/pull rounds
  teardown   SIGKILL of one worker -> no process of the job left (and launcher exit status 1)

    python bench/launch_local.py [--workers 1,2,4] [--repeat 3] [--rounds 20] [--before DIR]

--before DIR also times the launcher importable from DIR (run from outside the checkout, e.g. an older
commit unpacked with `git archive`, its folders mapped into DIR/mxlaunch as pyproject.toml does), run for run
alternately with this one, so both see the same load: how a change of the launcher moved the numbers.
"""
import argparse
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time

# testkit/ (the test support) is not installed: it is found beside bench/, in this checkout
sys.path.append(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from testkit.jobs import PUSHPULL, job_id_of, job_processes, read_log, role_pid, start_launch, wait_for  # noqa: E402


def one_run(workers, rounds, kill_worker, workdir, pythonpath=None):
    run_dir = tempfile.mkdtemp(dir=workdir)
    shutil.rmtree(run_dir)
    job = [PUSHPULL, "--rounds", str(100000 if kill_worker else rounds), "--round-seconds",
           "0.02" if kill_worker else "0"]
    saved = os.environ.get("PYTHONPATH")
    if pythonpath:  # the launcher (and its roleguard) from another tree; the roles' pushpull is the same
        os.environ["PYTHONPATH"] = pythonpath
    t0 = time.monotonic()
    # every role by `import mxnet`, as the figures of docs/benchmarks.md were taken; also the same role code for
    # both trees (pushpull's lighter roles import trainer/ps_scheduler.py from whichever tree PYTHONPATH names)
    proc = start_launch("train", "--local", "-n", str(workers), "-s", "1", "--run-dir", run_dir,
                        "--env", "OMP_NUM_THREADS=1", "--env", "PUSHPULL_MXNET_IMPORT=1", "--", sys.executable,
                        *job, cwd=workdir)
    if pythonpath:
        os.environ.pop("PYTHONPATH") if saved is None else os.environ.__setitem__("PYTHONPATH", saved)
    job_id = wait_for(lambda: job_id_of(run_dir), 30, interval=0.005, what="job.yaml")
    roles = workers + 2
    wait_for(lambda: sum(1 for _, kind in job_processes(job_id).values() if kind == "role") == roles, 60,
             interval=0.01, what="every role running")
    started = time.monotonic() - t0
    wait_for(lambda: all("round=0 " in read_log(run_dir, f"worker-{i}") for i in range(workers)), 60,
             interval=0.01, what="every worker connected")
    connected = time.monotonic() - t0
    result = {"started": started, "connected": connected}
    if kill_worker:
        victim = role_pid(job_id, f"worker-{workers - 1}")
        killed = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: not job_processes(job_id), 10, interval=0.005, what="teardown")
        result["teardown"] = time.monotonic() - killed
        proc.communicate(timeout=30)
        assert proc.returncode == 1, proc.returncode
    else:
        proc.communicate(timeout=120)
        assert proc.returncode == 0, proc.returncode
        result["e2e"] = time.monotonic() - t0
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--before", metavar="DIR", help="also time the launcher importable from DIR")
    parser.add_argument("--no-kill", action="store_true", help="skip the teardown runs")
    args = parser.parse_args()
    workdir = tempfile.mkdtemp(prefix="bench-launch-")  # also the launcher's cwd: never the checkout's mxlaunch/
    load_before = os.getloadavg()[0]
    rows = []
    trees = [("this tree", None)] + ([("before", os.path.abspath(args.before))] if args.before else [])
    try:
        for n in [int(x) for x in args.workers.split(",")]:
            runs = {label: [] for label, _ in trees}
            kills = {label: [] for label, _ in trees}
            for _ in range(args.repeat):  # alternate the trees run by run: both see the same load
                for label, path in trees:
                    runs[label].append(one_run(n, args.rounds, False, workdir, path))
                    if not args.no_kill:
                        kills[label].append(one_run(n, args.rounds, True, workdir, path))

            def med(key, source):
                return statistics.median(r[key] for r in source) if source else float("nan")
            for label, _ in trees:
                rows.append((f"{n} ({label})" if args.before else n, med("started", runs[label]),
                             med("connected", runs[label]), med("e2e", runs[label]), med("teardown", kills[label]),
                             max((r["teardown"] for r in kills[label]), default=float("nan"))))
            print(f"n={n} done", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"launch train --local, 1 server, pushpull {args.rounds} rounds; median of {args.repeat} runs "
          f"(teardown: of {args.repeat} more); {os.cpu_count()} CPUs; 1-min load average before/after: {load_before:.1f}/{os.getloadavg()[0]:.1f}")
    print()
    print("| workers | all roles started (s) | all workers connected (s) | end-to-end (s) "
          "| teardown after worker SIGKILL (s) | worst teardown (s) |")
    print("|---|---|---|---|---|---|")
    for n, started, connected, e2e, teardown, worst in rows:
        print(f"| {n} | {started:.2f} | {connected:.2f} | {e2e:.2f} | {teardown:.3f} | {worst:.3f} |")


if __name__ == "__main__":
    main()
