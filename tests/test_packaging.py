"""What pyproject.toml builds: the wheel `launch cluster up` ships to the instances (made from this checkout when
mxlaunch runs from one) holds every package of the map, the package data and the GPU loader's .pth at its top;
the map is one list of packages, each with its folder."""
from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from mxlaunch.infra.cloud import install
from testkit.checkout import clean_copy
from testkit.pins import pyproject

REPO = Path(__file__).resolve().parents[1]
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
    assert {"mxlaunch/templates/job.yaml.j2", "mxlaunch/trainer/digits.csv.gz"} <= names
    assert pth == (REPO / "mxlaunch-gpu-libs.pth").read_text()
    assert not {n for n in names if n.split("/")[0] in ("testkit", "tests", "bench", "launcher", "trainer", "infra")}
