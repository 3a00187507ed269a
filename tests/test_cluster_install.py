"""`launch cluster up --wait ssh` installs for real (issue 11, item 2): mxlaunch[cpu|gpu] into one venv on EFS,
from PyPI or from a wheelhouse uploaded to EFS (no index), made once on instance 0 and verified on every
instance; the wheel of mxlaunch comes from a source checkout or, without one, from the installed files."""
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from aws_fixtures import launch, up_args
from mxlaunch.errors import UsageError
from mxlaunch.infra.cloud import install as remote, local_state as state, wait
from mxlaunch.templates import render

pytestmark = pytest.mark.timeout(120)
HOSTS = [("c-0", "198.51.100.1"), ("c-1", "198.51.100.2"), ("c-2", "198.51.100.3")]


class Ssh:
    """`ssh`/`scp -F CONFIG ...` recorded, never run (moto's addresses are made up); `listing` is what
    `find` prints on the host for the wheels already there."""

    def __init__(self, listing=""):
        self.calls, self.listing = [], listing

    def __call__(self, argv, input=None, timeout=None, **_):
        self.calls.append((list(argv), input))
        if argv[1:3] == ["-m", "pip"] and "wheel" in argv:  # the wheel of this checkout: a stand-in
            (Path(argv[argv.index("-w") + 1]) / "mxlaunch-0.1.0-py3-none-any.whl").write_text("wheel")
        out = self.listing if argv[0] == "ssh" and "find" in " ".join(argv) else ""
        return subprocess.CompletedProcess(argv, 0, out, "")

    def scps(self):
        return [a for a, _ in self.calls if a[0] == "scp"]

    def scripts(self):
        return [(a[3], stdin) for a, stdin in self.calls if a[-2:] == ["bash", "-s"]]


@pytest.fixture
def wheelhouse(tmp_path):
    house = tmp_path / "house"
    house.mkdir()
    for name in ("mxlaunch-0.1.0-py3-none-any.whl", "mxnet-1.9.1-py3-none-manylinux2014_x86_64.whl",
                 "numpy-1.23.5-cp311-cp311-manylinux_2_17_x86_64.whl", "README"):
        (house / name).write_bytes(b"x" * 10)
    return house


def test_a_wheelhouse_install_uploads_once_installs_once_offline_and_verifies_every_instance(tmp_path, wheelhouse,
                                                                                             monkeypatch):
    monkeypatch.setattr(wait, "SLEEP", lambda s: None)
    ssh = Ssh()
    options = remote.install_options("cpu", str(wheelhouse), gpus_per_host=4)
    remote.wait_ssh_and_install(HOSTS, tmp_path / "cfg", efs=True, echo=lambda line: None, run=ssh,
                                gpus_per_host=4, options=options)
    (scp,) = ssh.scps()
    assert scp[:5] == ["scp", "-F", str(tmp_path / "cfg"), "-p", "-q"] and scp[-1] == "c-0:/efs/mxlaunch/wheels/"
    assert sorted(Path(p).name for p in scp[5:-1]) == sorted(p.name for p in wheelhouse.iterdir() if p.suffix == ".whl")
    ((host, script),) = ssh.scripts()  # one venv on EFS: one install, on instance 0
    assert host == "c-0"
    assert "--no-index --find-links /efs/mxlaunch/wheels '/efs/mxlaunch/wheels/mxlaunch-0.1.0-py3-none-any.whl[cpu]'" \
        in script and "upgrade pip" not in script
    assert "pip show -q mxnet-cu112" in script  # the other extra's MXNet: never both in one venv
    verified = [a[3] for a, _ in ssh.calls if a[4:5] == ["/efs/mxlaunch/venv/bin/python"]]
    assert verified == ["c-0", "c-1", "c-2"] and "import mxnet, mxlaunch.launcher" in " ".join(ssh.calls[-1][0])
    assert not any("host_check" in " ".join(a) or "nvidia" in " ".join(a) for a, _ in ssh.calls)  # cpu: no GPU check


def test_wheels_already_on_efs_with_the_same_size_and_mtime_are_not_uploaded_again(tmp_path, wheelhouse):
    listing = "".join(f"{p.name} {p.stat().st_size} {int(p.stat().st_mtime)}.25\n" for p in wheelhouse.iterdir())
    r = remote.Remote(tmp_path / "cfg", echo=lambda line: None, run=Ssh(listing))
    assert r.upload("c-0", remote.wheelhouse_files(wheelhouse)) == [] and r.run_cmd.scps() == []
    os.utime(wheelhouse / "README", (1, 1))
    r = remote.Remote(tmp_path / "cfg", echo=lambda line: None, run=Ssh(listing))
    assert r.upload("c-0", [wheelhouse / "README"]) == ["README"]  # another mtime: copied


def test_from_pypi_the_default_extra_of_a_gpu_type_is_gpu_and_ends_with_the_gpu_check(tmp_path, monkeypatch):
    monkeypatch.setattr(wait, "SLEEP", lambda s: None)
    checked = []
    monkeypatch.setattr(remote.Remote, "check_gpus", lambda self, hosts, n: checked.append((len(hosts), n)))
    ssh = Ssh()
    remote.wait_ssh_and_install(HOSTS[:2], tmp_path / "cfg", efs=True, echo=lambda line: None, run=ssh,
                                gpus_per_host=4)
    ((_, script),) = ssh.scripts()
    assert "mxlaunch-0.1.0-py3-none-any.whl[gpu]'" in script and "--no-index" not in script
    assert "pip show -q mxnet " in script + " " and checked == [(2, 4)]


def test_install_options_are_checked_before_anything_is_created(tmp_path):
    assert remote.install_options(None, None, 4).extra == "gpu"
    assert remote.install_options(None, None, 0).extra == "cpu"
    with pytest.raises(UsageError, match="not a directory of wheels"):
        remote.install_options("cpu", str(tmp_path), 4)  # empty
    with pytest.raises(UsageError, match="--extra"):
        remote.install_options("tpu", None, 4)


def test_the_install_script_is_valid_bash(tmp_path):
    for offline in (True, False):
        text = render("cluster_install.sh.j2", venv="/efs/v", wheel="/efs/w/mxlaunch-0.1.0-py3-none-any.whl",
                      wheels="/efs/w", efs=True, extra="cpu", offline=offline, conflicting="mxnet-cu112")
        (tmp_path / "i.sh").write_text(text)
        assert subprocess.run(["bash", "-n", str(tmp_path / "i.sh")]).returncode == 0


@pytest.mark.aws
def test_up_takes_extra_and_wheelhouse_and_records_the_extra(moto_aws, aws_env, monkeypatch, wheelhouse):
    seen = []
    monkeypatch.setattr(remote, "wait_ssh_and_install", lambda hosts, cfg, efs, echo, gpus_per_host, options:
                        seen.append(options))
    args = [a if a != "running" else "ssh" for a in up_args("inst", 2)]
    r = launch(*args, "--extra", "cpu", "--wheelhouse", str(wheelhouse))
    assert r.code == 0, r.err
    assert seen == [remote.Install("cpu", wheelhouse.resolve())] and state.read_meta("inst")["extra"] == "cpu"
    r = launch(*[a if a != "inst" else "inst2" for a in args], "--wheelhouse", str(wheelhouse / "README"))
    assert r.code == 2 and "--wheelhouse" in r.err and "README" in r.err  # a file, not a directory of wheels


def test_without_a_source_tree_the_wheel_is_packed_from_the_installed_files(tmp_path):
    """mxlaunch installed from its wheel (no setup.py beside it): `--wait ssh` still has a wheel to ship,
    with the same files, installable by pip."""
    root = Path(__file__).resolve().parent.parent
    built = tmp_path / "built"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(built),
                    str(root)], check=True, timeout=300, capture_output=True)
    (original,) = built.glob("mxlaunch-*.whl")
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(original)],
                   check=True, timeout=300, capture_output=True)
    out = tmp_path / "out"
    out.mkdir()
    code = ("import sys; from pathlib import Path; from mxlaunch.infra.cloud import install as remote; "
            "assert remote.source_root() is None, remote.__file__; print(remote.build_wheel(Path(sys.argv[1])))")
    proc = subprocess.run([sys.executable, "-c", code, str(out)], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=str(site)), cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    packed = Path(proc.stdout.strip())

    def names(wheel):
        with zipfile.ZipFile(wheel) as zf:
            return sorted(n for n in zf.namelist() if not n.endswith("/RECORD"))
    assert names(packed) == names(original) and "mxlaunch-gpu-libs.pth" in names(packed)
    again = tmp_path / "again"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(again), str(packed)],
                   check=True, timeout=300, capture_output=True)
    installed = Path("mxlaunch", "infra", "cloud", "install.py")
    assert (again / installed).read_bytes() == (root / "infra" / "cloud" / "install.py").read_bytes()
