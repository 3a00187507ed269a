"""The install path of the README: `pip install -e '.[cpu]'` (no test extra: no scikit-learn) in a fresh venv,
then `trainer data digits` makes the digits and `trainer --version` answers.

The venv with the pinned third-party wheels is kept in the user's cache folder (its name is a hash of
setup.py and this Python's version) and reused; mxlaunch itself is installed again every run, from a copy of
this checkout, so what is tested is always this code. The first run installs MXNet (about a minute).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from testkit.pins import pins_key

from conftest import trainer_env

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _pip(python: str, *args: str, timeout: float) -> None:
    run = subprocess.run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check", *args],
                         capture_output=True, text=True, timeout=timeout)
    assert run.returncode == 0, run.stderr[-3000:]


def _copy_of_checkout(folder) -> str:
    source = str(folder / "mxlaunch")
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".*", "build", "runs", "data", "*.egg-info",
                                                               "__pycache__"))
    return source


@pytest.fixture(scope="module")
def cpu_venv(tmp_path_factory) -> str:
    """bin/ of a venv where `pip install -e '<checkout>[cpu]'` ran (the pinned wheels cached across runs)."""
    pins = pins_key("cpu")
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    venv = os.path.join(cache, "mxlaunch-tests", f"cpu-venv-{pins}")
    python = os.path.join(venv, "bin", "python")
    source = _copy_of_checkout(tmp_path_factory.mktemp("src"))
    if not os.path.exists(os.path.join(venv, ".complete")):
        shutil.rmtree(venv, ignore_errors=True)  # a half-made one from an interrupted run
        subprocess.run([sys.executable, "-m", "venv", venv], check=True, timeout=120)
        _pip(python, "-e", f"{source}[cpu]", timeout=840)
        open(os.path.join(venv, ".complete"), "w").close()
    else:  # the third-party wheels are there: only mxlaunch, editable from this run's copy
        _pip(python, "--no-deps", "--force-reinstall", "-e", source, timeout=300)
    return os.path.join(venv, "bin")


def test_cpu_extra_alone_makes_the_digits(cpu_venv, tmp_path):
    python = os.path.join(cpu_venv, "python")
    found = subprocess.run([python, "-c", "import importlib.util as u; print(u.find_spec('sklearn') is None)"],
                           capture_output=True, text=True, timeout=60)
    assert found.stdout.strip() == "True", "the cpu extra must not need scikit-learn"
    env = trainer_env(PATH=cpu_venv + os.pathsep + os.environ.get("PATH", ""))
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
