"""What the GPU library loader (mxlaunch-gpu-libs.pth, mxlaunch/gpu_libs.py) costs every Python start-up.

The wheel of mxlaunch puts the .pth into site-packages, so every interpreter of the environment runs it, whether
or not it ever imports mxnet. This makes two venvs from this interpreter's base Python, without pip (nothing else
in them runs at start-up): `plain`, and `loader` holding only mxlaunch's wheel built from this checkout (no
dependencies: start-up never needs them). `--before REF` adds a third, `before`, with the wheel of another
commit. It then times `python -c pass` in each, the venvs taking turns run by run (so that a change in the
machine's load falls on all of them alike), and prints the median wall time and the median CPU time (user +
system, the kernel's accounting of each reaped child: the steadier figure on a loaded machine) of each, and each
median's ratio to `plain`'s.

    .venv/bin/python bench/gpu_loader_startup.py [--runs 50] [--before REF] [--keep DIR]

`--keep DIR` makes the venvs in DIR and leaves them there (to time them again with another tool).
"""
import argparse
import glob
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASE_PYTHON = os.path.join(sys.base_prefix, "bin", "python3")


def build_wheel(source, out):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", out,
                    source], check=True, capture_output=True, timeout=600)
    (wheel,) = glob.glob(os.path.join(out, "mxlaunch-*.whl"))
    return wheel


def make_venv(path, wheel=None):
    subprocess.run([BASE_PYTHON, "-m", "venv", "--without-pip", path], check=True, timeout=120)
    python = os.path.join(path, "bin", "python")
    if wheel:
        subprocess.run([sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps", "--no-index",
                        wheel], check=True, capture_output=True, timeout=300)
    return python


def source_of(ref, where):
    """This checkout at commit `ref`, as files in `where` (git archive: what the commit holds)."""
    os.makedirs(where)
    archive = subprocess.run(["git", "-C", REPO, "archive", ref], check=True, capture_output=True, timeout=120).stdout
    subprocess.run(["tar", "-x", "-C", where], input=archive, check=True, timeout=120)
    return where


def time_once(python):
    """(wall s, CPU s) of one `python -c pass`."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run([python, "-c", "pass"], check=True, stdin=subprocess.DEVNULL, timeout=60)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def report(times, runs):
    """Each venv's medians (wall, CPU) in ms, with their ratios to plain's."""
    plain = [statistics.median(column) for column in zip(*times["plain"])]
    print(f"python -c pass, median of {runs} runs each, taking turns ({sys.version.split()[0]}):")
    for name, values in times.items():
        wall, cpu = (statistics.median(column) for column in zip(*values))
        walls = [w for w, _ in values]
        print(f"  {name:7s} wall {wall * 1000:7.2f} ms ({min(walls) * 1000:.2f}-{max(walls) * 1000:.2f}) "
              f"{wall / plain[0]:.2f}x plain   cpu {cpu * 1000:6.2f} ms {cpu / plain[1]:.2f}x plain")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--before", metavar="REF", help="also time the loader of this commit")
    parser.add_argument("--keep", metavar="DIR", help="make the venvs in DIR and keep them")
    args = parser.parse_args()
    work = args.keep or tempfile.mkdtemp(prefix="mxlaunch-loader-bench-")
    os.makedirs(work, exist_ok=True)
    try:
        pythons = {"plain": make_venv(os.path.join(work, "plain")),
                   "loader": make_venv(os.path.join(work, "loader"), build_wheel(REPO, os.path.join(work, "w1")))}
        if args.before:
            old = source_of(args.before, os.path.join(work, "src-before"))
            pythons["before"] = make_venv(os.path.join(work, "before"), build_wheel(old, os.path.join(work, "w0")))
        times = {name: [] for name in pythons}
        for name, python in pythons.items():  # warm-up: the page cache, and pyc files written once
            time_once(python)
        for _ in range(args.runs):
            for name, python in pythons.items():
                times[name].append(time_once(python))
        report(times, args.runs)
        if args.keep:
            print("venvs kept: " + ", ".join(f"{name} {python}" for name, python in pythons.items()))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
