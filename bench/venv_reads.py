"""Where a GPU cluster's environment should live: one venv on EFS, or a venv on each instance's local disk.

What a role start costs is what `import mxnet` reads of the venv (the trainer, every server and the scheduler
import it): with one venv on EFS each instance reads that over NFS on its first role start (later starts hit its
page cache); with local venvs each instance instead reads the whole wheelhouse from EFS once and writes the
unpacked venv to its disk. This measures, for a venv of `mxlaunch[gpu]` (the one tests/test_gpu_env.py caches,
or --venv), with a cold page cache (root: the cache is dropped before each cold run):

  venv bytes       every file of the venv (what a local install writes per instance)
  wheel bytes      the wheels of --wheelhouse (what a local install reads from EFS per instance), if given
  cold start read  bytes of the venv resident in the page cache after one cold `import mxnet` (what a role
                   start reads from the file system: mmapped library pages actually touched, plus readahead)
  cold/warm import seconds, median of --repeat

    sudo .venv/bin/python bench/venv_reads.py [--venv DIR] [--wheelhouse DIR] [--repeat 3]

The driver's libcuda.so.1 is a stub built from tests/data/libcuda_stub.c (no GPU here): the CUDA libraries
load as on a GPU instance, no kernel runs. Dropping the page cache slows everything else on the machine for a
moment: run it on a quiet machine.
"""
import argparse
import glob
import os
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.path.expanduser("~/.cache/mxlaunch-tests")


def files_under(root):
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            if os.path.isfile(path) and not os.path.islink(path):
                yield path


def resident_bytes(paths):
    """Bytes of `paths` in the page cache (fincore), summed."""
    total, paths = 0, list(paths)
    for start in range(0, len(paths), 500):
        out = subprocess.run(["fincore", "--bytes", "--noheadings", "--raw", "--output", "RES",
                              *paths[start:start + 500]], capture_output=True, text=True, timeout=120).stdout
        total += sum(int(word) for word in out.split() if word.isdigit())
    return total


def drop_caches():
    subprocess.run(["sync"], check=True, timeout=120)
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def timed_import(python, env):
    started = time.monotonic()
    subprocess.run([python, "-c", "import mxnet"], env=env, check=True, timeout=300, capture_output=True)
    return time.monotonic() - started


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--venv", help="a venv with mxlaunch[gpu] (default: the newest test cache)")
    parser.add_argument("--wheelhouse", help="the wheels a local install would read from EFS")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("venv_reads: needs root (it drops the page cache before each cold start)")
    venv = args.venv or max(glob.glob(os.path.join(CACHE, "gpu-venv-*")), key=os.path.getmtime, default=None)
    if not venv:
        sys.exit("venv_reads: no GPU venv: run tests/test_gpu_env.py once, or give --venv")
    python = os.path.join(venv, "bin", "python")
    files = list(files_under(venv))
    with tempfile.TemporaryDirectory() as stub:
        subprocess.run(["cc", "-shared", "-fPIC", "-Wl,-soname,libcuda.so.1", "-o", os.path.join(stub, "libcuda.so.1"),
                        os.path.join(REPO, "tests", "data", "libcuda_stub.c")], check=True, timeout=60)
        env = dict(os.environ, LD_LIBRARY_PATH=stub, OMP_NUM_THREADS="1")
        cold, warm, read = [], [], []
        for _ in range(args.repeat):
            drop_caches()
            cold.append(timed_import(python, env))
            read.append(resident_bytes(files))
            warm.append(timed_import(python, env))
    gib = 1024 ** 3
    print(f"venv {venv}: {len(files)} files")
    print(f"venv bytes            {sum(os.path.getsize(p) for p in files) / gib:.2f} GiB")
    if args.wheelhouse:
        wheels = glob.glob(os.path.join(args.wheelhouse, "*.whl"))
        print(f"wheel bytes           {sum(os.path.getsize(p) for p in wheels) / gib:.2f} GiB ({len(wheels)} wheels)")
    print(f"cold start read       {statistics.median(read) / gib:.2f} GiB (median of {args.repeat})")
    print(f"import mxnet cold     {statistics.median(cold):.2f} s")
    print(f"import mxnet warm     {statistics.median(warm):.2f} s")


if __name__ == "__main__":
    main()
