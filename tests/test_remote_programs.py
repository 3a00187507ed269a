"""The programs the launcher sends to the hosts (infra/transport/remote/), run here exactly as shipped: their source
as `python -S -c SOURCE` (-S: no site-packages, a bare Python with nothing of ours), request in, reply out.
The role guard has its own file (test_launch_local_roleguard.py)."""
import errno
import json
import os
import select
import shutil
import socket
import subprocess
import sys
import time

import pytest

from mxlaunch.infra.transport.remote import host_check, port_listener, source
from testkit.system import free_port
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
    for name in ("roleguard", "host_check", "port_listener", "checkpoint_scan", "detach_starter"):
        with open(os.path.join(folder, name + ".py"), encoding="utf-8") as f:
            assert source(name) == f.read()


# ---------------------------------------------------------------------------------------------- GPU part
SMI_ROWS = "NVIDIA A10G, 8.6, 23028 MiB, 535.54.03\nNVIDIA A10G, 8.6, 23028 MiB, 535.54.03\n"
STANDIN_MXNET = '''\
import threading
__version__ = "1.9.1-standin"
GPUS = 1  # mx.gpu(1) and up fail as MXNet does: a C++ traceback, the message on its last line
class _Features:
    def is_enabled(self, name):
        return name == "CUDA"
class runtime:
    Features = _Features
class context:
    @staticmethod
    def num_gpus():
        return GPUS
class _Array:
    def __init__(self, values):
        self.values = values
    def __mul__(self, k):
        return _Array([v * k for v in self.values])
    def asnumpy(self):
        return self
    def tolist(self):
        return list(self.values)
class MXNetError(Exception):
    pass
def gpu(i):
    return i
class nd:
    @staticmethod
    def ones(shape, ctx):
        if HANG:
            threading.Event().wait()
        if ctx >= GPUS:
            raise MXNetError("Traceback (most recent call last):\\n  File \\"../src/storage/storage.cc\\", line 1\\n"
                             "MXNetError: CUDA: invalid device ordinal")
        return _Array([1.0] * shape[0])
HANG = False
'''


def fake_program(folder, name: str, body: str) -> str:
    """An executable shell script `folder/name`; returns the folder (to put first on PATH)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return str(folder)


def standin_mxnet(tmp_path, hang=False) -> str:
    folder = tmp_path / ("hanging" if hang else "standin")
    (folder / "mxnet").mkdir(parents=True, exist_ok=True)
    (folder / "mxnet" / "__init__.py").write_text(STANDIN_MXNET + ("HANG = True\n" if hang else ""))
    return str(folder)


def gpu_env(path: str, pythonpath: str = "") -> dict:
    return dict(os.environ, PATH=path, PYTHONPATH=pythonpath)


def test_host_check_gpu_reports_nvidia_smi_rows_and_the_operation_on_every_requested_gpu(tmp_path):
    smi = fake_program(tmp_path / "bin", "nvidia-smi",
                       f'[ "$1" = --query-gpu=name,compute_cap,memory.total,driver_version ] || exit 2\n'
                       f'printf "{SMI_ROWS.encode("unicode_escape").decode()}"\n')
    env = gpu_env(smi, standin_mxnet(tmp_path))
    gpu = run_host_check(request(full=True, gpus=[0]), env=env)["gpu"]
    assert gpu["smi"] == [["NVIDIA A10G", "8.6", "23028 MiB", "535.54.03"]] * 2 and gpu["smi_error"] is None
    assert (gpu["cuda"], gpu["num_gpus"], gpu["op"], gpu["hung"]) == (True, 1, "ok", False)
    failed = run_host_check(request(full=True, gpus=[0, 1]), env=env)["gpu"]
    assert failed["op"] == "mx.gpu(1): MXNetError: CUDA: invalid device ordinal"  # the message, one line
    assert "gpu" not in run_host_check(request(full=True), env=env)  # a CPU job: no GPU part at all


def test_host_check_gpu_without_nvidia_smi_or_mxnet_says_what_is_missing(tmp_path):
    empty = str(tmp_path / "empty")
    os.makedirs(empty)
    result = run_host_check(request(full=True, gpus=[0]), env=gpu_env(empty, standin_mxnet(tmp_path)))
    assert (result["gpu"]["smi"], result["gpu"]["smi_error"], result["gpu"]["op"]) == (None, "not found", "ok")
    result = run_host_check(request(full=True, gpus=[0]), env=gpu_env(empty, empty))  # no mxnet importable
    assert "mxnet_error" in result and result["gpu"] == {"smi": None, "smi_error": "not found"}


def test_host_check_gpu_failing_nvidia_smi_is_reported_in_one_line(tmp_path):
    smi = fake_program(tmp_path / "bin", "nvidia-smi",
                       "echo \"NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\"\n"
                       "echo 'Make sure that the latest NVIDIA driver is installed and running.'\nexit 9\n")
    gpu = run_host_check(request(full=True, gpus=[0]), env=gpu_env(smi, standin_mxnet(tmp_path)))["gpu"]
    assert gpu["smi"] is None
    assert gpu["smi_error"] == (f"{smi}/nvidia-smi exited 9: NVIDIA-SMI has failed because it couldn't communicate "
                                f"with the NVIDIA driver. Make sure that the latest NVIDIA driver is installed and "
                                f"running.")


def test_host_check_gpu_hung_nvidia_smi_and_hung_gpu_operation_are_bounded(tmp_path):
    """A broken driver hangs nvidia-smi and the first CUDA call: the reply still comes, within the bounds,
    and the program exits although a thread is stuck in the (stand-in) GPU call."""
    smi = fake_program(tmp_path / "bin", "nvidia-smi", f"exec {shutil.which('sleep')} 30\n")
    started = time.monotonic()
    gpu = run_host_check(request(full=True, gpus=[0], smi_timeout=0.5, op_timeout=0.5),
                         env=gpu_env(smi, standin_mxnet(tmp_path, hang=True)))["gpu"]
    assert time.monotonic() - started < 10
    assert gpu["smi_error"] == f"{smi}/nvidia-smi did not answer within 0.5s (a hung driver?)"
    assert gpu["op"] == "did not finish within 0.5s (a hung driver?)" and gpu["hung"] is True
    assert gpu["num_gpus"] == 1  # what MXNet said before the operation hung


def test_host_check_gpu_operation_with_the_real_cpu_wheel_fails_on_mx_gpu_0(tmp_path):
    """The real mxnet (the CPU wheel here): no CUDA, no GPUs, and the array on mx.gpu(0) fails."""
    proc = subprocess.run([sys.executable, "-c", source("host_check")], capture_output=True, text=True, timeout=60,
                          input=json.dumps(request(full=True, gpus=[0])) + "\n",
                          env=dict(os.environ, PATH=str(tmp_path)))
    gpu = host_check.parse_reply(proc.stdout)["gpu"]
    assert (gpu["cuda"], gpu["num_gpus"], gpu["hung"]) == (False, 0, False)
    assert gpu["op"] == "mx.gpu(0): MXNetError: Operator _ones is not implemented for GPU."


def test_parse_reply_skips_other_lines_and_rejects_a_broken_one():
    assert host_check.parse_reply(f"warning: x\n{host_check.MARKER} {{\"python\": \"3.10\"}}\n") == {"python": "3.10"}
    assert host_check.parse_reply(f"{host_check.MARKER} {{not json\n") is None
    assert host_check.parse_reply("nothing here\n") is None
