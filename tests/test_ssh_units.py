"""The pure parts of SSH mode (no bed needed): endpoint precedence, the preflight's table."""
import paramiko
import pytest

from mxlaunch.exits import Exit
from mxlaunch.launcher.jobs import preflight
from mxlaunch.infra.transport.hosts import Host
from mxlaunch.infra.transport.ssh import SSHOptions, resolve

pytestmark = pytest.mark.timeout(30)


def test_hostfile_user_beats_ssh_user_beats_config(tmp_path):
    config = tmp_path / "config"
    key = tmp_path / "id_cfg"
    key.write_text("not used here")
    config.write_text(f"Host h\n  HostName 10.1.2.3\n  User fromconfig\n  Port 2200\n  IdentityFile {key}\n")
    cfg = paramiko.SSHConfig.from_path(str(config))
    e = resolve(Host("h"), SSHOptions(), cfg)
    assert (e.hostname, e.user, e.port, e.key_files, e.look_for_keys) == ("10.1.2.3", "fromconfig", 2200,
                                                                           (str(key),), False)
    assert resolve(Host("h"), SSHOptions(user="opt"), cfg).user == "opt"
    e = resolve(Host("h", user="file", port=22), SSHOptions(user="opt", key="/k"), cfg)
    assert (e.user, e.port, e.key_files) == ("file", 22, ("/k", str(key)))
    e = resolve(Host("other"), SSHOptions(), cfg)
    assert (e.hostname, e.port, e.look_for_keys) == ("other", 22, True)


def test_table_has_one_row_per_host_and_one_line_per_extra_problem():
    ok = preflight.HostCheck(Host("a"), roles="scheduler", ssh="ok", python="3.11.7", mxnet="1.9.1",
                             workdir="ok", port="ok")
    bad = preflight.HostCheck(Host("b", user="u", port=2222), roles="worker-0", ssh="ok", python="FAIL",
                              problems=["interpreter /p not found", "second"])
    report = preflight.Report([ok, bad])
    lines = report.table().splitlines()
    assert lines[0].split() == ["HOST", "ROLES", "SSH", "PYTHON", "MXNET", "WORKDIR", "FILES", "PORT", "PROBLEM"]
    assert lines[1].split()[0] == "a" and lines[1].endswith("  -")
    assert lines[2].startswith("u@b:2222") and lines[2].endswith("interpreter /p not found")
    assert lines[3].strip() == "second"
    printed = []
    with pytest.raises(preflight.PreflightError) as err:
        report.raise_if_failed(echo=lambda text, **kw: printed.append(text))
    assert err.value.exit_code == Exit.PREFLIGHT
    assert err.value.format_message() == ("preflight failed on 1 of 2 host(s), nothing started: u@b:2222: "
                                          "interpreter /p not found (and more, see the table above)")
    assert printed[0].startswith("preflight failed; nothing was started:\nHOST")


def test_parallel_gives_every_item_its_result_error_or_timeout_without_waiting_for_stragglers():
    import threading
    import time
    from mxlaunch.infra.transport.ssh import parallel
    release = threading.Event()
    started = time.monotonic()

    def work(x):
        if x == "stuck":
            release.wait(30)
        if x == "bad":
            raise ValueError("no")
        return x.upper()

    try:
        out = parallel(work, ["a", "bad", "stuck"], timeout=0.5)
    finally:
        release.set()
    assert time.monotonic() - started < 2
    assert out["a"] == "A" and isinstance(out["bad"], ValueError)
    assert isinstance(out["stuck"], TimeoutError) and "0.5s" in str(out["stuck"])
