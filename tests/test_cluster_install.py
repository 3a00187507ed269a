"""`launch cluster up --wait ssh` installs for real: mxlaunch[cpu|gpu] into one venv on EFS, from PyPI or from a
wheelhouse uploaded to EFS over SFTP (no index), made once on instance 0 and verified on every instance; the
wheel of mxlaunch comes from a source checkout or, without one, from the installed files. SSH is the fake
Connection of testkit.fake_ssh (moto's addresses are made up, never contacted); the real transport runs in the
box (tests/test_box_cluster.py) and on the bed (tests/test_cluster_ssh.py)."""
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from aws_fixtures import launch, tagged_everything, up_args
from mxlaunch.errors import UsageError
from mxlaunch.infra.cloud import install as remote, local_state as state, wait
from mxlaunch.templates import render
from testkit.fake_ssh import FakeFile, FakeNetwork

pytestmark = pytest.mark.timeout(120)
PUBLIC = ["198.51.100.1", "198.51.100.2", "198.51.100.3"]
HOSTS = [("c-0", PUBLIC[0]), ("c-1", PUBLIC[1]), ("c-2", PUBLIC[2])]
VERIFY = "import mxnet, mxlaunch.launcher, mxlaunch.trainer"


class PipWheel:
    """The local runner of the wheel build: `pip wheel` of this checkout leaves a stand-in wheel; anything else
    fails the test (every remote command goes over the SSH transport)."""

    def __init__(self):
        self.calls = []

    def __call__(self, argv, **_):
        self.calls.append(list(argv))
        assert argv[1:3] == ["-m", "pip"] and "wheel" in argv, argv
        (Path(argv[argv.index("-w") + 1]) / "mxlaunch-0.1.0-py3-none-any.whl").write_text("wheel")
        return subprocess.CompletedProcess(argv, 0, "", "")


@pytest.fixture
def cluster_ssh(tmp_path, monkeypatch):
    """Cluster `c`'s local state as `up` writes it (ssh config with its 3 instances, key) and its SSH settings."""
    monkeypatch.setenv("MXLAUNCH_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(wait, "SLEEP", lambda s: None)
    key = tmp_path / "id_key"
    key.write_text("not a key: nothing connects\n")
    state.write_ssh_config("c", [(alias, f"10.0.0.{n + 1}", address) for n, (alias, address) in enumerate(HOSTS)],
                           "ubuntu", key)
    return state.ssh_options("c", "ubuntu", key)


def scripts(net):
    return [(c.address, c.stdin) for c in net.calls if c.argv == ("bash", "-s")]


@pytest.fixture
def wheelhouse(tmp_path):
    house = tmp_path / "house"
    house.mkdir()
    for name in ("mxlaunch-0.1.0-py3-none-any.whl", "mxnet-1.9.1-py3-none-manylinux2014_x86_64.whl",
                 "numpy-1.23.5-cp311-cp311-manylinux_2_17_x86_64.whl", "README"):
        (house / name).write_bytes(b"x" * 10)
    return house


def test_a_wheelhouse_install_uploads_once_installs_once_offline_and_verifies_every_instance(cluster_ssh, wheelhouse):
    net, pip = FakeNetwork(), PipWheel()
    options = remote.install_options("cpu", str(wheelhouse), gpus_per_host=4)
    remote.wait_ssh_and_install(HOSTS, cluster_ssh, efs=True, echo=lambda line: None, gpus_per_host=4,
                                options=options, connect=net.connect, run=pip)
    # reached as `launch train --cluster` reaches them: the ssh config's public address, user and key, host keys
    # checked against the cluster's known_hosts (first-seen ones recorded there)
    assert {(e.host.address, e.hostname, e.user, e.key_files) for e in net.connects} == \
        {(alias, address, "ubuntu", (cluster_ssh.key,)) for alias, address in HOSTS}
    assert {(o.known_hosts, o.accept_new) for o in net.options} == {(str(state.known_hosts_path("c")), True)}
    assert len(net.connects) == 3  # one connection per instance, kept from the first wait to the last check
    wheels = sorted(p for p in wheelhouse.iterdir() if p.suffix == ".whl")
    assert sorted(net.files) == [f"/efs/mxlaunch/wheels/{p.name}" for p in wheels]  # README: not a wheel
    assert all(net.files[f"/efs/mxlaunch/wheels/{p.name}"].mtime == int(p.stat().st_mtime) for p in wheels)
    ((host, script),) = scripts(net)  # one venv on EFS: one install, on instance 0
    assert host == "c-0"
    assert "--no-index --find-links /efs/mxlaunch/wheels '/efs/mxlaunch/wheels/mxlaunch-0.1.0-py3-none-any.whl[cpu]'" \
        in script and "upgrade pip" not in script
    assert "pip show -q mxnet-cu112" in script  # the other extra's MXNet: never both in one venv
    verified = [c.address for c in net.calls if c.argv == ("/efs/mxlaunch/venv/bin/python", "-c", VERIFY)]
    assert sorted(verified) == ["c-0", "c-1", "c-2"]
    assert not any("host_check" in c.command or "nvidia" in c.command for c in net.calls)  # cpu: no GPU check
    assert pip.calls == []  # the wheelhouse has mxlaunch's wheel: nothing built


def test_wheels_already_on_efs_with_the_same_size_and_mtime_are_not_uploaded_again(cluster_ssh, wheelhouse):
    net = FakeNetwork(dirs={"/", "/efs", "/efs/mxlaunch", "/efs/mxlaunch/wheels"})
    for p in wheelhouse.iterdir():
        net.files[f"/efs/mxlaunch/wheels/{p.name}"] = FakeFile(b"y" * 10, int(p.stat().st_mtime))
    r = remote.Remote(cluster_ssh, echo=lambda line: None, connect=net.connect)
    assert r.upload("c-0", remote.wheelhouse_files(wheelhouse)) == []
    assert all(f.data == b"y" * 10 for f in net.files.values())  # nothing written
    os.utime(wheelhouse / "README", (1, 1))
    assert r.upload("c-0", [wheelhouse / "README"]) == ["README"]  # another mtime: copied, with its own
    assert net.files["/efs/mxlaunch/wheels/README"] == FakeFile(b"x" * 10, 1)
    assert sorted(net.files) == sorted(f"/efs/mxlaunch/wheels/{p.name}" for p in wheelhouse.iterdir())  # no .part


def test_from_pypi_the_default_extra_of_a_gpu_type_is_gpu_and_ends_with_the_gpu_check(cluster_ssh, monkeypatch):
    checked = []
    monkeypatch.setattr(remote.Remote, "check_gpus", lambda self, hosts, n: checked.append((len(hosts), n)))
    net, pip = FakeNetwork(), PipWheel()
    remote.wait_ssh_and_install(HOSTS[:2], cluster_ssh, efs=True, echo=lambda line: None, gpus_per_host=4,
                                connect=net.connect, run=pip)
    ((_, script),) = scripts(net)
    assert "mxlaunch-0.1.0-py3-none-any.whl[gpu]'" in script and "--no-index" not in script
    assert "pip show -q mxnet " in script + " " and checked == [(2, 4)]
    assert len(pip.calls) == 1 and list(net.files) == ["/efs/mxlaunch/wheels/mxlaunch-0.1.0-py3-none-any.whl"]


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


def install_from_pypi(tmp_path, pip_errors: list, tries: int = 3) -> tuple:
    """The PyPI install script run here against a fake venv whose `pip install` fails with `pip_errors` in turn
    (then succeeds). -> (the run, the pip install calls)."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (tmp_path / "errors").write_text("\n".join(pip_errors) + ("\n" if pip_errors else ""))
    python = venv / "bin" / "python"
    python.write_text(f"""#!/bin/bash
case "$*" in
  "-m pip show"*) exit 1 ;;
  "-m pip install"*)
    echo "$*" >> {tmp_path}/installs
    error=$(head -n 1 {tmp_path}/errors); sed -i 1d {tmp_path}/errors
    [ -z "$error" ] || {{ echo "$error" >&2; exit 1; }} ;;
esac
exit 0
""")
    python.chmod(0o755)
    text = render("cluster_install.sh.j2", venv=str(venv), wheel="/efs/w/mxlaunch-0.1.0-py3-none-any.whl",
                  wheels="/efs/w", efs=False, extra="cpu", offline=False, conflicting="mxnet-cu112")
    r = subprocess.run(["bash", "-c", text], capture_output=True, text=True, timeout=30,
                       env={**os.environ, "PIP_RETRY_DELAY": "0", "PIP_TRIES": str(tries)})
    installs = (tmp_path / "installs").read_text().splitlines() if (tmp_path / "installs").exists() else []
    return r, installs


def test_a_transient_package_index_error_is_installed_again_bounded(tmp_path):
    timeout = ("WARNING: Retrying ... ReadTimeoutError(\"HTTPSConnectionPool(host='files.pythonhosted.org', port=443):"
               " Read timed out.\")")
    r, installs = install_from_pypi(tmp_path, ["", timeout, "ERROR: HTTP error 503 while getting https://x"])
    assert r.returncode == 0, r.stderr
    wheel = [c for c in installs if "mxlaunch-0.1.0-py3-none-any.whl[cpu]" in c]
    assert len(wheel) == 3 and "--retries 10" in wheel[0]  # pip's own retries, then the whole install twice more
    assert r.stderr.count("the package index failed (try") == 2


def test_a_package_index_that_keeps_failing_is_given_up_after_the_last_try(tmp_path):
    r, installs = install_from_pypi(tmp_path, ["", *["ERROR: Connection reset by peer"] * 5], tries=3)
    assert r.returncode != 0 and len([c for c in installs if "[cpu]" in c]) == 3
    assert "Connection reset by peer" in r.stderr


def test_an_install_error_that_is_no_index_trouble_is_not_retried(tmp_path):
    r, installs = install_from_pypi(tmp_path, ["", "ERROR: No matching distribution found for numpy==1.23.5"])
    assert r.returncode != 0 and len([c for c in installs if "[cpu]" in c]) == 1
    assert "No matching distribution" in r.stderr and "package index failed" not in r.stderr


@pytest.mark.aws
def test_up_takes_extra_and_wheelhouse_and_records_the_extra(moto_aws, aws_env, monkeypatch, wheelhouse):
    seen = []
    monkeypatch.setattr(remote, "wait_ssh_and_install", lambda hosts, ssh, efs, echo, gpus_per_host, options:
                        seen.append(options))
    args = [a if a != "running" else "ssh" for a in up_args("inst", 2)]
    r = launch(*args, "--extra", "cpu", "--wheelhouse", str(wheelhouse))
    assert r.code == 0, r.err
    assert seen == [remote.Install("cpu", wheelhouse.resolve())] and state.read_meta("inst").extra == "cpu"
    r = launch(*[a if a != "inst" else "inst2" for a in args], "--wheelhouse", str(wheelhouse / "README"))
    assert r.code == 2 and "--wheelhouse" in r.err and "README" in r.err  # a file, not a directory of wheels


@pytest.mark.aws
def test_up_wait_ssh_installs_over_the_transport_and_contacts_no_moto_address(moto_aws, aws_env, monkeypatch,
                                                                             wheelhouse):
    net = FakeNetwork()
    monkeypatch.setattr(remote, "CONNECT", net.connect)  # the one seam of every cluster SSH step
    args = [a if a != "running" else "ssh" for a in up_args("e2e", 2)]
    r = launch(*args, "--extra", "cpu", "--wheelhouse", str(wheelhouse))
    assert r.code == 0, r.err
    instances = sorted(tagged_everything("e2e")["instances"], key=lambda i: i["AmiLaunchIndex"])
    assert {(e.host.address, e.hostname, e.user, e.key_files) for e in net.connects} == \
        {(f"e2e-{n}", i["PublicIpAddress"], "ubuntu", (str(state.key_path("e2e")),)) for n, i in enumerate(instances)}
    assert {(o.known_hosts, o.accept_new) for o in net.options} == {(str(state.known_hosts_path("e2e")), True)}
    assert "  uploading 3 file(s) to e2e-0:/efs/mxlaunch/wheels (0 already there)" in r.err.splitlines()
    assert "  installing mxlaunch[cpu] into /efs/mxlaunch/venv on e2e-0 from the wheelhouse" in r.err
    assert "/efs/mxlaunch/venv imports mxnet and mxlaunch on 2 instance(s)" in r.err
    assert state.read_meta("e2e").extra == "cpu" and "next: launch train --cluster e2e" in r.out


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
