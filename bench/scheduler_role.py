"""The trainer's scheduler role against MXNet's own, in the same job, timed by farm-bench.

A `launch train --local -n 2 -s 1` job of one tiny synthetic epoch (`trainer fit --benchmark 1 --num-examples 64`)
is timed twice, the two taking turns (farm-bench --vs, pair by pair): A as it is, its scheduler the trainer's
(trainer/ps_scheduler.py: MXNet's library alone); B the same job whose scheduler is `import mxnet` with
DMLC_ROLE=scheduler (a user's own script), every other role alike. farm-bench (on PATH) prints the medians of CPU
seconds, wall seconds and the ratios A/B.

    .venv/bin/python bench/scheduler_role.py [--runs 8]
"""
import argparse
import os
import shlex
import shutil
import subprocess
import sys
import tempfile

MXNET_SCHEDULER = """#!/bin/sh
if [ "$DMLC_ROLE" = scheduler ]; then exec "$BENCH_PYTHON" -c "import mxnet"; fi
exec "$BENCH_TRAINER" "$@"
"""
JOB = "fit --benchmark 1 --num-layers 8 --num-examples 64 --batch-size 16 --num-epochs 1"


def main():
    parser = argparse.ArgumentParser(prog="scheduler_role.py", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=8, help="pairs of jobs timed (default 8)")
    args = parser.parse_args()
    if not shutil.which("farm-bench"):
        sys.exit("scheduler_role.py: error: farm-bench is not on PATH")
    bin_dir = os.path.dirname(sys.executable)
    launch = f"{bin_dir}/launch train --local -n 2 -s 1 --env OMP_NUM_THREADS=1"
    with tempfile.TemporaryDirectory() as work:  # the jobs' run directories, and B's role script
        script = os.path.join(work, "mxnet_scheduler.sh")
        with open(script, "w") as f:
            f.write(MXNET_SCHEDULER)
        os.chmod(script, 0o755)
        a = f"exec {launch} -- {bin_dir}/trainer {JOB} >>{work}/a.log 2>&1"
        b = (f"exec {launch} --env BENCH_PYTHON={sys.executable} --env BENCH_TRAINER={bin_dir}/trainer "
             f"-- {script} {JOB} >>{work}/b.log 2>&1")
        subprocess.run(["farm-bench", "-n", str(args.runs), "--timeout", "600", "--vs", f"sh -c {shlex.quote(b)}",
                        "--", "sh", "-c", a], cwd=work, check=True)
        for name in ("a", "b"):
            with open(os.path.join(work, f"{name}.log")) as f:
                print(f"{name.upper()}: {sum(line.startswith('ok: ') for line in f)} jobs ended ok")


if __name__ == "__main__":
    main()
