"""The `gpu` extra on this CPU machine: a venv with mxnet-cu112 and NVIDIA's CUDA 11 wheels, with mxlaunch
installed from this checkout as a cluster installs it (its wheel) and as a developer does (`pip install -e`),
imports MXNet with CUDA, cuDNN and NCCL and trains.

The driver's libcuda.so.1 is the one thing that cannot come from pip: a stub built here from
tests/data/libcuda_stub.c stands in for it (its folder on LD_LIBRARY_PATH, as the driver's folder is on a GPU
host's default search path). Nothing else is set: the CUDA libraries are found by mxlaunch/gpu_libs.py through
the mxlaunch-gpu-libs.pth that either install puts into site-packages.

About 2.1 GB of wheels, 3.7 GB installed, ~2 minutes here the first time. The venv with the pinned third-party
wheels is kept in the user's cache folder (its name is a hash of pyproject.toml's pins) and reused by later
runs; mxlaunch itself is reinstalled from a clean copy of this checkout every run (offline: the build's own
requirements are packed from this interpreter), so what is tested is always this code.
"""
from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys

import pytest

from testkit.checkout import clean_copy
from testkit.pins import pins_key
from testkit.system import free_port, wait_for
from testkit.wheels import pip_env, wheelhouse

from conftest import trainer_env

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CUDA_NEEDED = {"libcudart.so.11.0", "libcublas.so.11", "libcufft.so.10", "libcurand.so.10", "libcusolver.so.11",
               "libnvrtc.so.11.2", "libnvToolsExt.so.1", "libcudnn.so.8", "libnccl.so.2"}


def _tool(name: str) -> str:
    path = shutil.which(name)
    if not path:
        pytest.fail(f"{name} is missing: `make test` installs it (gcc, binutils)") if os.geteuid() == 0 \
            else pytest.skip(f"{name} is missing (`make test` as root installs it)")
    return path


def _pip(python: str, *args: str, timeout: float, env=None, into: str = "") -> None:
    """pip install with `python`'s pip; `into`: another venv's interpreter, the one installed for."""
    run = subprocess.run([python, "-m", "pip", *(["--python", into] if into else []), "install", "-q",
                          "--disable-pip-version-check", *args], capture_output=True, text=True, timeout=timeout,
                         env=env)
    assert run.returncode == 0, run.stderr[-3000:]


def _cached_venv(source: str) -> str:
    """A venv holding the gpu extra's third-party wheels, made once per set of pins and kept. Never changed once
    complete: every run installs mxlaunch into a venv of its own on top of it (_own_venv), so that runs of
    several checkouts at once never see each other's mxlaunch."""
    pins = pins_key("gpu")
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    venv = os.path.join(cache, "mxlaunch-tests", f"gpu-venv-{pins}")
    done = os.path.join(venv, ".complete")
    if not os.path.exists(done):
        shutil.rmtree(venv, ignore_errors=True)  # a half-made one from an interrupted run
        subprocess.run([sys.executable, "-m", "venv", venv], check=True, timeout=120)
        _pip(os.path.join(venv, "bin", "python"), f"{source}[gpu]", timeout=840)
        subprocess.run([os.path.join(venv, "bin", "python"), "-m", "pip", "uninstall", "-q", "-y", "mxlaunch"],
                       check=True, capture_output=True, timeout=120)  # only the third-party wheels stay
        open(done, "w").close()
    return venv


def _own_venv(folder: str, cached: str) -> str:
    """A venv of this run whose site-packages comes first and the cached venv's after it (a path line in a
    .pth: that folder is on sys.path, its own .pth files are not run): its interpreter."""
    subprocess.run([os.path.join(cached, "bin", "python"), "-m", "venv", "--without-pip", folder], check=True,
                   timeout=120)
    (own_site,) = glob.glob(os.path.join(folder, "lib", "python3*", "site-packages"))
    (cached_site,) = glob.glob(os.path.join(cached, "lib", "python3*", "site-packages"))
    with open(os.path.join(own_site, "zz-gpu-wheels.pth"), "w") as f:
        f.write(cached_site + "\n")
    return os.path.join(folder, "bin", "python")


@pytest.fixture(scope="module")
def gpu_venv(request, tmp_path_factory):
    """(python, site-packages of the third-party wheels, stub folder, checkout, site-packages of mxlaunch) of a
    venv with the gpu extra's wheels (pip install '<this checkout>[gpu]', cached) and mxlaunch installed from a
    clean copy of this checkout as its wheel or editable (the param), in a venv of this run's own."""
    cc, _ = _tool("cc"), _tool("readelf")
    stub_dir = tmp_path_factory.mktemp("driver")
    subprocess.run([cc, "-shared", "-fPIC", "-Wl,-soname,libcuda.so.1", "-o", str(stub_dir / "libcuda.so.1"),
                    os.path.join(REPO, "tests", "data", "libcuda_stub.c")], check=True, timeout=60)
    source = clean_copy(str(tmp_path_factory.mktemp("src") / "mxlaunch"))
    cached = _cached_venv(source)
    pip = os.path.join(cached, "bin", "python")
    python = _own_venv(str(tmp_path_factory.mktemp("venv") / request.param), cached)
    if request.param == "wheel":
        # built by this interpreter (its setuptools: no isolated build env to fill), then installed
        wheels = tmp_path_factory.mktemp("wheel")
        subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                        str(wheels), source], check=True, capture_output=True, timeout=300)
        (wheel,) = glob.glob(str(wheels / "mxlaunch-*.whl"))
        _pip(pip, "--no-deps", "--ignore-installed", wheel, timeout=300, into=python)  # never the cache's
    else:  # pip's own isolated build, its requirements from a wheelhouse packed here (no index)
        house = str(tmp_path_factory.mktemp("build-wheels"))
        wheelhouse(["setuptools"], house)
        _pip(pip, "--no-deps", "--ignore-installed", "--no-index", "--find-links", house, "-e", source,
             timeout=300, env=pip_env(), into=python)
    site = glob.glob(os.path.join(cached, "lib", "python3*", "site-packages"))[0]
    own_site = glob.glob(os.path.join(os.path.dirname(os.path.dirname(python)), "lib", "python3*",
                                      "site-packages"))[0]
    return python, site, str(stub_dir), source, own_site


def _gpu_env(stub_dir: str, **extra) -> dict:
    """A GPU host's environment: the driver's folder on the search path, no PYTHONPATH (only the install)."""
    env = trainer_env(LD_LIBRARY_PATH=stub_dir, **extra)
    env.pop("PYTHONPATH", None)
    return env


INSTALLS = pytest.mark.parametrize("gpu_venv", ["wheel", "editable"], indirect=True)


@INSTALLS
def test_every_library_of_libmxnet_resolves_from_the_venv_but_the_driver(gpu_venv):
    python, site, _, _, _ = gpu_venv
    libmxnet = os.path.join(site, "mxnet", "libmxnet.so")
    dynamic = subprocess.run(["readelf", "-d", libmxnet], capture_output=True, text=True, check=True).stdout
    needed = set(re.findall(r"\(NEEDED\)\s+Shared library: \[(.+?)\]", dynamic))
    assert CUDA_NEEDED | {"libcuda.so.1"} <= needed
    # the folders mxlaunch.gpu_libs loads from: with them (and nothing of the system's CUDA), only the driver is missing
    found = subprocess.run([python, "-c", "from mxlaunch import gpu_libs; print('\\n'.join(gpu_libs.library_paths().values()))"],
                           capture_output=True, text=True, check=True).stdout.split()
    assert CUDA_NEEDED <= {os.path.basename(p) for p in found} and all(p.startswith(site) for p in found)
    ldd = subprocess.run(["ldd", libmxnet], capture_output=True, text=True,
                         env={"LD_LIBRARY_PATH": os.pathsep.join(sorted({os.path.dirname(p) for p in found}))}).stdout
    missing = set(re.findall(r"^\s*(\S+) => not found", ldd, re.M))
    assert missing == {"libcuda.so.1"}, ldd


@INSTALLS
def test_import_mxnet_has_cuda_cudnn_nccl_with_nothing_set(gpu_venv, tmp_path, request):
    python, site, stub_dir, source, own_site = gpu_venv
    code = ("import sys, mxnet as mx; f = mx.runtime.Features(); "
            "print([f.is_enabled(x) for x in ('CUDA', 'CUDNN', 'NCCL')], mx.context.num_gpus(), "
            "float((mx.nd.ones((2, 2)) * 3).sum().asscalar())); print(sys.modules['mxlaunch.gpu_libs'].__file__)")
    run = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=120,
                         env=_gpu_env(stub_dir), cwd=tmp_path)  # cwd: not the checkout, as on a host
    assert run.returncode == 0, run.stderr[-2000:]
    features, loader = run.stdout.splitlines()
    assert features.split("] ", 1) == ["[True, True, True", "0 12.0"]
    # the loader that ran is the install's own: the checkout's file when editable, site-packages' otherwise
    home = source if request.node.callspec.params["gpu_venv"] == "editable" else own_site
    assert loader == os.path.join(home, "mxlaunch", "gpu_libs.py"), loader
    assert os.path.isfile(os.path.join(own_site, "mxlaunch-gpu-libs.pth"))


@pytest.mark.parametrize("gpu_venv", ["wheel"], indirect=True)
def test_trainer_on_the_gpu_wheel_refuses_missing_gpus_and_trains_on_cpu(gpu_venv, digits_dir, tmp_path):
    python, _, stub_dir, _, _ = gpu_venv
    trainer = os.path.join(os.path.dirname(python), "trainer")
    args = ["fit", "--network", "resnet", "--num-layers", "8", "--data-train", f"{digits_dir}/digits_train.rec",
            "--data-val", f"{digits_dir}/digits_val.rec", "--image-shape", "3,28,28", "--pad-size", "0",
            "--random-mirror", "0", "--batch-size", "16", "--num-epochs", "2", "--lr", "0.1"]
    no_gpu = subprocess.run([trainer, *args, "--gpus", "0"], capture_output=True, text=True, timeout=120,
                            env=_gpu_env(stub_dir), cwd=tmp_path)
    assert no_gpu.returncode == 2, no_gpu.stderr[-2000:]
    assert no_gpu.stderr.strip().splitlines()[-1] == \
        "trainer: error: --gpus asks for GPU 0 but this machine has 0 GPU(s)"
    fit = subprocess.run([trainer, *args], capture_output=True, text=True, timeout=300,
                         env=_gpu_env(stub_dir), cwd=tmp_path)
    assert fit.returncode == 0, fit.stderr[-2000:]
    accuracy = float(re.search(r"Epoch\[1\] Validation-accuracy=([\d.]+)", fit.stderr).group(1))
    assert accuracy > 0.5  # two epochs of resnet-8 on the real digits (the demo's batch): far above chance (0.1)


@pytest.mark.parametrize("gpu_venv", ["wheel"], indirect=True)
def test_the_trainers_scheduler_runs_on_the_gpu_wheels_library(gpu_venv, tmp_path):
    """trainer/ps_scheduler.py loads libmxnet.so itself (no `import mxnet`): on the GPU build its CUDA libraries
    must have been made loadable first, by the same hook. It binds (ps-lite's line), then waits for the nodes."""
    python, _, stub_dir, _, _ = gpu_venv
    port = free_port()
    env = _gpu_env(stub_dir, DMLC_ROLE="scheduler", DMLC_PS_ROOT_URI="127.0.0.1", DMLC_PS_ROOT_PORT=str(port),
                   DMLC_NODE_HOST="127.0.0.1", DMLC_NUM_WORKER="1", DMLC_NUM_SERVER="1", PS_VERBOSE="1")
    log = tmp_path / "scheduler.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([os.path.join(os.path.dirname(python), "trainer"), "fit"], stdout=out,
                                stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
    try:
        wait_for(lambda: "Bind to role=scheduler" in log.read_text() or proc.poll() is not None, 60,
                 what="the scheduler's bind line")
        assert proc.poll() is None, log.read_text()[-2000:]
        assert f"port={port}" in log.read_text()
    finally:
        proc.kill()
        proc.wait(timeout=30)


# ------------------------------------------------------------------------------- the loader's own behaviour

# Started in every Python of the environment, the loader may load nothing but itself until mxnet is imported.
START_UP = "import sys; print(' '.join(sorted(sys.modules)))"


@pytest.mark.parametrize("gpu_venv", ["wheel"], indirect=True)
def test_start_up_loads_the_loader_and_nothing_else(gpu_venv, tmp_path):
    """Before: ctypes, glob, re (and what they import) in every start-up: 1.93x a plain venv's time. What the .pth
    line itself loads, apart from the other .pth files the environment may hold: both interpreters without site,
    site-packages on the path, one of them running the line as site would."""
    python, site, _, _, own_site = gpu_venv
    line = open(os.path.join(own_site, "mxlaunch-gpu-libs.pth")).read()
    path = f"import site, sys; sys.path += [{own_site!r}, {site!r}]; "  # site's own imports, not its .pth processing

    def modules(run_line: bool) -> set:
        code = path + (f"exec({line!r}); " if run_line else "") + START_UP
        return set(subprocess.run([python, "-S", "-c", code], capture_output=True, text=True, check=True,
                                  timeout=60, cwd=tmp_path).stdout.split())

    assert modules(True) - modules(False) == {"mxlaunch", "mxlaunch.gpu_libs"}


# an import hook after the loader that provides `mxnet` itself (as a test double, a vendored build, ... would)
HOOK = """
import importlib.abc, importlib.util, sys
class Hook(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path=None, target=None):
        return importlib.util.spec_from_loader(name, self) if name == "mxnet" else None
    def create_module(self, spec):
        return None
    def exec_module(self, module):
        module.PROVIDED_BY = "hook"
at = sys.meta_path.index(sys.modules["mxlaunch.gpu_libs"]._PreloadBeforeMxnet)
sys.meta_path.insert(at + 1, Hook())
import mxnet
print(getattr(mxnet, "PROVIDED_BY", "the real mxnet"))
"""


def test_the_loader_leaves_the_next_finder_its_turn():
    """Before: the loader removed itself from sys.meta_path while Python iterated it, so the finder right after
    it was skipped for `mxnet`. Here with this checkout's own environment (its .pth), no GPU wheels needed."""
    run = subprocess.run([sys.executable, "-c", HOOK], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == "hook"


@INSTALLS
def test_a_folder_named_nvidia_in_the_working_directory_hides_nothing(gpu_venv, tmp_path):
    """Before: the first nvidia/ on sys.path won, and sys.path starts with the working directory."""
    python, site, stub_dir, _, _ = gpu_venv
    for name in ("cublas/lib/libcublas.so.11", "cuda_runtime/lib/libcudart.so.11.0"):
        (tmp_path / "nvidia" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "nvidia" / name).write_bytes(b"not a library")
    code = ("from mxlaunch import gpu_libs; import mxnet as mx; "
            "print('\\n'.join(gpu_libs.library_paths().values())); print(mx.runtime.Features().is_enabled('CUDA'))")
    run = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=120, env=_gpu_env(stub_dir),
                         cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    *paths, cuda = run.stdout.split()
    assert CUDA_NEEDED <= {os.path.basename(p) for p in paths} and all(p.startswith(site) for p in paths), paths
    assert cuda == "True"


DRIVER_LINE = ("error: the GPU build of MXNet (mxnet-cu112) needs the NVIDIA driver, and this machine has none "
               "(libcuda.so.1: cannot open shared object file")
CPU_EXTRA = "or use the cpu extra (pip install 'mxlaunch[cpu]'), which serves machines without one"


def _one_line(run, prog: str) -> None:
    assert run.returncode == 2, (run.returncode, run.stderr[-2000:])
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in run.stderr, run.stderr[-2000:]
    assert lines[0].startswith(f"{prog}: {DRIVER_LINE}") and lines[0].endswith(CPU_EXTRA), lines[0]


@pytest.mark.parametrize("gpu_venv", ["wheel"], indirect=True)
def test_without_the_driver_every_entry_says_so_in_one_line_and_exits_2(gpu_venv, digits_dir, tmp_path):
    """Before: `trainer data digits` ended "internal error: OSError: libcuda.so.1: ..." (exit 70)."""
    python, _, _, _, _ = gpu_venv
    bin_dir = os.path.dirname(python)
    env = _gpu_env("")  # no driver: nothing of it on the search path (this machine has none)
    env.pop("LD_LIBRARY_PATH")
    _one_line(subprocess.run([os.path.join(bin_dir, "trainer"), "data", "digits", "--out", str(tmp_path / "d")],
                             capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path), "trainer")
    fit = [os.path.join(bin_dir, "trainer"), "fit", "--network", "resnet", "--num-layers", "8", "--data-train",
           f"{digits_dir}/digits_train.rec", "--data-val", f"{digits_dir}/digits_val.rec", "--image-shape",
           "3,28,28", "--pad-size", "0", "--random-mirror", "0", "--batch-size", "16", "--num-epochs", "1"]
    _one_line(subprocess.run(fit, capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path), "trainer")
    # a launched job's server and scheduler: importing mxnet is their whole program (MXNet exits in it)
    for role in ("server", "scheduler"):
        _one_line(subprocess.run(fit, capture_output=True, text=True, timeout=120, cwd=tmp_path,
                                 env=dict(env, DMLC_ROLE=role)), "trainer")
    plain = subprocess.run([python, "-c", "import mxnet"], capture_output=True, text=True, timeout=120, env=env)
    assert plain.returncode == 1 and plain.stderr.strip().splitlines()[-1].startswith(
        "mxlaunch.cuda.DriverMissing: the GPU build of MXNet (mxnet-cu112) needs the NVIDIA driver"), plain.stderr
    # `launch train`: its roles each end so; the failure it reports is that line, no traceback in any log
    run_dir = tmp_path / "run"
    job = subprocess.run([os.path.join(bin_dir, "launch"), "train", "--local", "-n", "1", "--run-dir", str(run_dir),
                          "--", *fit], capture_output=True, text=True, timeout=240, env=env, cwd=tmp_path)
    assert job.returncode != 0 and DRIVER_LINE in job.stderr, job.stderr[-3000:]
    logs = {p.name: p.read_text() for p in (run_dir / "logs").glob("*.log")}
    assert any(DRIVER_LINE in text for text in logs.values()), logs  # the role that failed first; the others were
    assert not [name for name, text in logs.items() if "Traceback" in text], logs  # stopped, maybe before a word
