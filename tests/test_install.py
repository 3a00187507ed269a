"""The install path of the README, as users take it.

- Debian 12's own Python and pip (`/usr/bin/python3 -m venv`, pip 23.0.1): `pip install -e '.[cpu]'` in a clean
  copy of the checkout makes a PEP 660 editable install that follows the package map, so that from anywhere
  `import mxlaunch.trainer, mxlaunch.launcher, mxlaunch.infra` works and an edit of the checkout is seen.
  Offline: the build requirement comes from a wheelhouse packed from this interpreter's own setuptools (70.1+
  builds wheels itself: no `wheel` package, which a venv with only the test extra does not have), and the venv sees this interpreter's third-party packages (mxnet, numpy, ...) through a .pth line, so
  pip installs mxlaunch alone. Needs the same Python minor version as the system's python3.
- `pip install -e '.[cpu]'` (no test extra: no scikit-learn) in a venv with the pinned third-party wheels, then
  `trainer data digits` makes the digits and `trainer --version` answers. That venv is kept in the user's cache
  folder (its name is a hash of pyproject.toml's pins and this Python's version) and reused; mxlaunch itself is
  installed again every run, offline, from a clean copy of this checkout, so what is tested is always this
  code. The first run installs MXNet from the package index (about a minute).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from testkit.checkout import clean_copy
from testkit.pins import pins_key
from testkit.wheels import frameworks, pip_env, wheelhouse

from conftest import trainer_env

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
SYSTEM_PYTHON = "/usr/bin/python3"


def _pip(python: str, *args: str, timeout: float, env=None, cwd=None) -> subprocess.CompletedProcess:
    run = subprocess.run([python, "-m", "pip", "install", "--disable-pip-version-check", *args],
                         capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return run


@pytest.fixture(scope="module")
def build_wheels(tmp_path_factory) -> str:
    """A wheelhouse with what pyproject.toml's [build-system] asks for, packed from this interpreter."""
    house = str(tmp_path_factory.mktemp("build-wheels"))
    names = {os.path.basename(w).split("-")[0] for w in wheelhouse(["setuptools"], house)}
    assert "setuptools" in names, "the test extra installs setuptools"
    return house


def _offline(house: str) -> list:
    return ["--no-index", "--find-links", house]


@pytest.fixture(scope="module")
def cpu_venv(tmp_path_factory, build_wheels) -> str:
    """bin/ of a venv where `pip install -e '<checkout>[cpu]'` ran (the pinned wheels cached across runs)."""
    pins = pins_key("cpu")
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    venv = os.path.join(cache, "mxlaunch-tests", f"cpu-venv-{pins}")
    python = os.path.join(venv, "bin", "python")
    source = clean_copy(str(tmp_path_factory.mktemp("src") / "mxlaunch"))
    if not os.path.exists(os.path.join(venv, ".complete")):
        shutil.rmtree(venv, ignore_errors=True)  # a half-made one from an interrupted run
        subprocess.run([sys.executable, "-m", "venv", venv], check=True, timeout=120)
        _pip(python, "-q", "-e", f"{source}[cpu]", timeout=840)
        open(os.path.join(venv, ".complete"), "w").close()
    else:  # the third-party wheels are there: only mxlaunch, editable from this run's copy
        _pip(python, "-q", "--no-deps", "--force-reinstall", *_offline(build_wheels), "-e", source, timeout=300,
             env=pip_env())
    return os.path.join(venv, "bin")


@pytest.fixture(scope="module")
def system_python() -> str:
    """The system's python3, when it can make a venv with its own pip and shares this Python's minor version."""
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        pytest.skip(f"no {SYSTEM_PYTHON} here")
    version = subprocess.run([SYSTEM_PYTHON, "-c", "import sys; print(*sys.version_info[:2])"], capture_output=True,
                             text=True, timeout=30).stdout.split()
    if version != [str(n) for n in sys.version_info[:2]]:
        pytest.skip(f"{SYSTEM_PYTHON} is {'.'.join(version)}, the test venv {sys.version_info[0]}.{sys.version_info[1]}: "
                    "its packages cannot stand in for the system Python's")
    if subprocess.run([SYSTEM_PYTHON, "-c", "import ensurepip"], capture_output=True, timeout=30).returncode:
        message = f"{SYSTEM_PYTHON} cannot make a venv with pip: python3-venv is missing"
        pytest.fail(f"{message} (`make test` installs it)") if os.geteuid() == 0 \
            else pytest.skip(f"{message} (`make test` as root installs it)")
    return SYSTEM_PYTHON


def test_the_system_pips_editable_install_follows_the_package_map(system_python, build_wheels, tmp_path):
    source = clean_copy(str(tmp_path / "checkout"))
    venv = tmp_path / "venv"
    subprocess.run([system_python, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=300)
    python, bin_dir = str(venv / "bin" / "python"), venv / "bin"
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True, timeout=30).stdout.strip()
    with open(os.path.join(site, "frameworks.pth"), "w") as f:
        f.write(frameworks(str(tmp_path / "frameworks")) + "\n")
    pip_version = subprocess.run([python, "-m", "pip", "--version"], capture_output=True, text=True,
                                 timeout=60).stdout.strip()

    installed = _pip(python, *_offline(build_wheels), "-e", ".[cpu]", cwd=source, env=pip_env(), timeout=600)
    assert "Successfully installed mxlaunch-" in installed.stdout, (pip_version, installed.stdout[-2000:])

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = pip_env(PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    probe = ("import mxlaunch.trainer, mxlaunch.launcher, mxlaunch.infra, mxlaunch.templates; "
             "print(mxlaunch.trainer.__file__, mxlaunch.launcher.__file__, mxlaunch.infra.__file__)")
    run = subprocess.run([python, "-c", probe], capture_output=True, text=True, timeout=120, cwd=elsewhere, env=env)
    assert run.returncode == 0, (pip_version, run.stderr[-2000:])
    assert run.stdout.split() == [os.path.join(source, folder, "__init__.py") for folder in ("trainer", "launcher", "infra")]

    # editable: a module added to the checkout now is importable at once, under its mapped name
    with open(os.path.join(source, "launcher", "jobs", "added_after_install.py"), "w") as f:
        f.write("ANSWER = 42\n")
    run = subprocess.run([python, "-c", "from mxlaunch.launcher.jobs.added_after_install import ANSWER; print(ANSWER)"],
                         capture_output=True, text=True, timeout=60, cwd=elsewhere, env=env)
    assert run.stdout.strip() == "42", run.stderr[-2000:]

    for script in ("launch", "mxlaunch", "trainer"):
        run = subprocess.run([str(bin_dir / script), "--help"], capture_output=True, text=True, timeout=120,
                             cwd=elsewhere, env=env)
        assert run.returncode == 0 and run.stdout.startswith("Usage: "), (script, run.stderr[-2000:])


def test_cpu_extra_alone_makes_the_digits(cpu_venv, tmp_path):
    python = os.path.join(cpu_venv, "python")
    found = subprocess.run([python, "-c", "import importlib.util as u; print(u.find_spec('sklearn') is None)"],
                           capture_output=True, text=True, timeout=60)
    assert found.stdout.strip() == "True", "the cpu extra must not need scikit-learn"
    env = trainer_env(PATH=cpu_venv + os.pathsep + os.environ.get("PATH", ""))
    env.pop("PYTHONPATH", None)  # the install alone, not the checkout the tests import testkit from
    made = subprocess.run([os.path.join(cpu_venv, "trainer"), "data", "digits", "--out", str(tmp_path / "digits")],
                          capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    for split in ("train", "val"):
        assert (tmp_path / "digits" / f"digits_{split}.rec").stat().st_size > 0
        assert (tmp_path / "digits" / f"digits_{split}.idx").stat().st_size > 0
    version = subprocess.run([os.path.join(cpu_venv, "trainer"), "--version"], capture_output=True, text=True,
                             timeout=60, env=env)
    assert version.returncode == 0 and version.stdout.startswith("trainer (mxlaunch) "), version


def test_the_install_adds_one_import_name_mxlaunch(cpu_venv, tmp_path):
    """After `pip install -e '.[cpu]'`, from outside the checkout: mxlaunch imports, and none of the generic names
    the folders have in the repository (launcher, trainer, infra, templates) lands in the environment."""
    code = ("import importlib.util as u, mxlaunch, mxlaunch.launcher.cli, mxlaunch.trainer.cli; "
            "print([n for n in ('launcher', 'trainer', 'infra', 'templates') if u.find_spec(n)])")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run = subprocess.run([os.path.join(cpu_venv, "python"), "-c", code], capture_output=True, text=True,
                         timeout=120, cwd=tmp_path, env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == "[]"


def test_shipped_digits_are_scikit_learns():
    """trainer/digits.csv.gz is the file scikit-learn's load_digits() reads: same images, same labels."""
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    from mxlaunch.trainer.datasets import load_digits

    import numpy as np
    images, labels = load_digits()
    reference = sklearn_datasets.load_digits()
    np.testing.assert_array_equal(images, reference.images)
    np.testing.assert_array_equal(labels, reference.target)
