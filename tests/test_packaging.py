"""What pyproject.toml builds: the wheel `launch cluster up` ships to the instances (made from this checkout when
mxlaunch runs from one) holds every package of the map, the package data and the GPU loader's .pth at its top;
the map is one list of packages, each with its folder."""
from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from mxlaunch.infra.cloud import install
from testkit.checkout import clean_copy
from testkit.pins import pyproject
from testkit.wheels import pip_env

REPO = Path(__file__).resolve().parents[1]
# the package data: every template and the digits the trainer ships
DATA = {f"mxlaunch/templates/{t.name}" for t in (REPO / "templates").glob("*.j2")} | {"mxlaunch/trainer/digits.csv.gz"}
pytestmark = pytest.mark.timeout(300)


def test_the_package_list_and_the_folder_map_name_the_same_packages():
    setuptools = pyproject()["tool"]["setuptools"]
    assert sorted(setuptools["packages"]) == sorted(setuptools["package-dir"])
    assert all((REPO / folder / "__init__.py").is_file() for folder in setuptools["package-dir"].values())


def test_the_build_asks_for_a_setuptools_that_makes_pep660_editable_wheels():
    system = pyproject()["build-system"]
    assert system["build-backend"] == "setuptools.build_meta"
    assert "setuptools>=64" in system["requires"]


def test_launch_cluster_ships_a_wheel_built_from_this_checkout(tmp_path, monkeypatch):
    assert install.source_root() == REPO  # mxlaunch runs from this checkout here (an editable install)
    # built from a clean copy: other tests build wheels in the checkout itself, maybe at the same time
    copy = Path(clean_copy(str(tmp_path / "checkout")))
    monkeypatch.setattr(install, "source_root", lambda: copy)
    (tmp_path / "out").mkdir()
    wheel = install.build_wheel(tmp_path / "out")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        pth = zf.read("mxlaunch-gpu-libs.pth").decode()
    packages = pyproject()["tool"]["setuptools"]["package-dir"]
    assert {f"{name.replace('.', '/')}/__init__.py" for name in packages} <= names
    assert len(DATA) > 2 and DATA <= names
    assert pth == (REPO / "mxlaunch-gpu-libs.pth").read_text()
    assert not {n for n in names if n.split("/")[0] in ("testkit", "tests", "bench", "launcher", "trainer", "infra")}


def test_a_wheel_built_from_the_sdist_still_has_the_gpu_loader(tmp_path):
    """pip builds from an sdist when it finds one: the sdist carries what setup.py's build step copies."""
    copy = clean_copy(str(tmp_path / "checkout"))
    sdist = subprocess.run([sys.executable, "-c", "import setuptools.build_meta as b; print(b.build_sdist('dist'))"],
                           cwd=copy, capture_output=True, text=True, timeout=300)
    assert sdist.returncode == 0, sdist.stderr[-2000:]
    archive = Path(copy, "dist", sdist.stdout.split()[-1])
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                            str(tmp_path / "wheel"), str(archive)], capture_output=True, text=True, timeout=300,
                           env=pip_env())
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = (tmp_path / "wheel").glob("mxlaunch-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        assert zf.read("mxlaunch-gpu-libs.pth") == (REPO / "mxlaunch-gpu-libs.pth").read_bytes()
        assert len(DATA) > 2 and DATA <= set(zf.namelist())
