"""The programs the launcher sends to the hosts (launcher/remote/), run here exactly as shipped: their source
as `python -S -c SOURCE` (-S: no site-packages, a bare Python with nothing of ours), request in, reply out.
The role guard has its own file (test_launch_local_roleguard.py)."""
import errno
import json
import os
import select
import socket
import subprocess
import sys

import pytest

from mxlaunch.launcher.remote import host_check, port_listener, source

pytestmark = pytest.mark.timeout(60)

TEST_NET = "203.0.113.77"  # TEST-NET-3: never an address of this machine, never routed


def run_host_check(request: dict, env=None) -> dict:
    proc = subprocess.run([sys.executable, "-S", "-c", source("host_check")], input=json.dumps(request) + "\n",
                          capture_output=True, text=True, timeout=30, env=env)
    assert proc.returncode == 0, proc.stderr
    marker, _, payload = proc.stdout.strip().partition(" ")
    assert marker == host_check.MARKER
    return json.loads(payload)


def request(**fields) -> dict:
    base = {"workdir": None, "files": [], "bind": [], "probe": None, "probe_timeout": 1.0, "full": False}
    return dict(base, **fields)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_host_check_reports_missing_files_and_addresses_that_are_not_this_hosts(tmp_path):
    (tmp_path / "present.rec").write_text("")
    result = run_host_check(request(workdir=str(tmp_path), files=["present.rec", "absent.rec", str(tmp_path)],
                                    bind=["127.0.0.1", TEST_NET]))
    assert result["python"] == sys.version.split()[0]
    assert result["workdir"] is True and result["missing"] == ["absent.rec"]
    assert len(result["bind"]) == 1 and result["bind"][0].startswith(TEST_NET + " (")
    assert "probe" not in result and "mxnet" not in result and "mxnet_error" not in result


def test_host_check_workdir_missing_and_default_is_the_current_directory(tmp_path):
    assert run_host_check(request(workdir=str(tmp_path / "nope")))["workdir"] is False
    proc = subprocess.run([sys.executable, "-S", "-c", source("host_check")], cwd=tmp_path, capture_output=True,
                          text=True, timeout=30, input=json.dumps(request(files=["here.rec"])) + "\n")
    assert json.loads(proc.stdout.split(" ", 1)[1])["missing"] == ["here.rec"]
    (tmp_path / "here.rec").write_text("")
    proc = subprocess.run([sys.executable, "-S", "-c", source("host_check")], cwd=tmp_path, capture_output=True,
                          text=True, timeout=30, input=json.dumps(request(files=["here.rec"])) + "\n")
    assert json.loads(proc.stdout.split(" ", 1)[1])["missing"] == []


def test_host_check_probe_connects_or_says_why_not():
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen(1)
        port = listening.getsockname()[1]
        assert run_host_check(request(probe=["127.0.0.1", port]))["probe"] == "ok"
    refused = run_host_check(request(probe=["127.0.0.1", free_port()]))["probe"]
    assert refused == os.strerror(errno.ECONNREFUSED)


def test_host_check_full_reports_the_mxnet_it_imports_or_why_it_cannot(tmp_path):
    """A stand-in mxnet on PYTHONPATH (importing the real one takes seconds): its version, or its failure
    in one line, whatever it raises (even SystemExit)."""
    good, broken = tmp_path / "good", tmp_path / "broken"
    for folder, body in ((good, "__version__ = '1.9.1-standin'\n"),
                         (broken, "raise SystemExit('libcudart.so.11.0:\\n cannot open shared object file')\n")):
        (folder / "mxnet").mkdir(parents=True)
        (folder / "mxnet" / "__init__.py").write_text(body)
    env = dict(os.environ, PYTHONPATH=str(good))
    assert run_host_check(request(full=True), env=env)["mxnet"] == "1.9.1-standin"
    result = run_host_check(request(full=True), env=dict(os.environ, PYTHONPATH=str(broken)))
    assert "mxnet" not in result
    assert result["mxnet_error"] == "SystemExit: libcudart.so.11.0: cannot open shared object file"


def start_listener(port: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-S", "-u", "-c", source("port_listener"), "127.0.0.1", str(port)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def first_line(proc: subprocess.Popen, timeout: float = 15.0) -> str:
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, f"no line from the listener within {timeout}s"
    return proc.stdout.readline().strip()


def test_port_listener_holds_the_port_until_stdin_closes_then_frees_it():
    port = free_port()
    proc = start_listener(port)
    try:
        assert first_line(proc) == port_listener.READY
        probes = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(3)]
        for probe in probes:  # the prober closes first, as host_check does
            probe.close()
        assert proc.poll() is None  # still listening: only stdin's EOF ends it
        proc.stdin.close()
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    with socket.socket() as scheduler:  # no SO_REUSEADDR, as ps-lite's scheduler: the port must be free
        scheduler.bind(("127.0.0.1", port))


def test_port_listener_says_why_it_cannot_listen_and_exits_1():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        proc = start_listener(taken.getsockname()[1])
        try:
            line = first_line(proc)
            assert proc.wait(timeout=10) == 1
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
    assert line == f"{port_listener.FAILED} {os.strerror(errno.EADDRINUSE)}"


def test_every_remote_program_is_its_own_file_in_the_package():
    folder = os.path.dirname(os.path.abspath(host_check.__file__))
    for name in ("roleguard", "host_check", "port_listener"):
        with open(os.path.join(folder, name + ".py"), encoding="utf-8") as f:
            assert source(name) == f.read()
