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


def _pip(python: str, *args: str, timeout: float, env=None) -> None:
    run = subprocess.run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check", *args],
                         capture_output=True, text=True, timeout=timeout, env=env)
    assert run.returncode == 0, run.stderr[-3000:]


def _cached_venv(source: str) -> str:
    """A venv holding the gpu extra's third-party wheels, made once per set of pins and kept."""
    pins = pins_key("gpu")
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    venv = os.path.join(cache, "mxlaunch-tests", f"gpu-venv-{pins}")
    done = os.path.join(venv, ".complete")
    if not os.path.exists(done):
        shutil.rmtree(venv, ignore_errors=True)  # a half-made one from an interrupted run
        subprocess.run([sys.executable, "-m", "venv", venv], check=True, timeout=120)
        _pip(os.path.join(venv, "bin", "python"), f"{source}[gpu]", timeout=840)
        open(done, "w").close()
    return venv


@pytest.fixture(scope="module")
def gpu_venv(request, tmp_path_factory):
    """(python, site-packages, stub folder, checkout) of a venv made with `pip install '<this checkout>[gpu]'`,
    mxlaunch then installed from a clean copy of this checkout as its wheel or editable (the param)."""
    cc, _ = _tool("cc"), _tool("readelf")
    stub_dir = tmp_path_factory.mktemp("driver")
    subprocess.run([cc, "-shared", "-fPIC", "-Wl,-soname,libcuda.so.1", "-o", str(stub_dir / "libcuda.so.1"),
                    os.path.join(REPO, "tests", "data", "libcuda_stub.c")], check=True, timeout=60)
    source = clean_copy(str(tmp_path_factory.mktemp("src") / "mxlaunch"))
    venv = _cached_venv(source)
    python = os.path.join(venv, "bin", "python")
    if request.param == "wheel":
        # built by this interpreter (its setuptools: no isolated build env to fill), then installed
        wheels = tmp_path_factory.mktemp("wheel")
        subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                        str(wheels), source], check=True, capture_output=True, timeout=300)
        (wheel,) = glob.glob(str(wheels / "mxlaunch-*.whl"))
        _pip(python, "--no-deps", "--force-reinstall", wheel, timeout=300)
    else:  # pip's own isolated build, its requirements from a wheelhouse packed here (no index)
        house = str(tmp_path_factory.mktemp("build-wheels"))
        wheelhouse(["setuptools", "wheel"], house)
        _pip(python, "--no-deps", "--force-reinstall", "--no-index", "--find-links", house, "-e", source,
             timeout=300, env=pip_env())
    site = glob.glob(os.path.join(venv, "lib", "python3*", "site-packages"))[0]
    return python, site, str(stub_dir), source


def _gpu_env(stub_dir: str, **extra) -> dict:
    """A GPU host's environment: the driver's folder on the search path, no PYTHONPATH (only the install)."""
    env = trainer_env(LD_LIBRARY_PATH=stub_dir, **extra)
    env.pop("PYTHONPATH", None)
    return env


INSTALLS = pytest.mark.parametrize("gpu_venv", ["wheel", "editable"], indirect=True)


@INSTALLS
def test_every_library_of_libmxnet_resolves_from_the_venv_but_the_driver(gpu_venv):
    python, site, _, _ = gpu_venv
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
    python, site, stub_dir, source = gpu_venv
    code = ("import sys, mxnet as mx; f = mx.runtime.Features(); "
            "print([f.is_enabled(x) for x in ('CUDA', 'CUDNN', 'NCCL')], mx.context.num_gpus(), "
            "float((mx.nd.ones((2, 2)) * 3).sum().asscalar())); print(sys.modules['mxlaunch.gpu_libs'].__file__)")
    run = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=120,
                         env=_gpu_env(stub_dir), cwd=tmp_path)  # cwd: not the checkout, as on a host
    assert run.returncode == 0, run.stderr[-2000:]
    features, loader = run.stdout.splitlines()
    assert features.split("] ", 1) == ["[True, True, True", "0 12.0"]
    # the loader that ran is the install's own: the checkout's file when editable, site-packages' otherwise
    home = source if request.node.callspec.params["gpu_venv"] == "editable" else site
    assert loader == os.path.join(home, "mxlaunch", "gpu_libs.py"), loader
    assert os.path.isfile(os.path.join(site, "mxlaunch-gpu-libs.pth"))


@pytest.mark.parametrize("gpu_venv", ["wheel"], indirect=True)
def test_trainer_on_the_gpu_wheel_refuses_missing_gpus_and_trains_on_cpu(gpu_venv, digits_dir, tmp_path):
    python, _, stub_dir, _ = gpu_venv
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
