"""`launch train --hosts ... --dry-run`: the plan plus the exact command and stdin of every role, per host,
secrets masked, nothing connected (these hosts do not exist)."""
import shlex
import subprocess
import sys

import pytest
import yaml

from mxlaunch.infra.transport.remote import roleguard
pytestmark = pytest.mark.timeout(60)


def test_dry_run_prints_exact_remote_command_and_masked_stdin_per_host(tmp_path):
    hostfile = tmp_path / "hosts"
    hostfile.write_text("head.invalid slots=0\nubuntu@w1.invalid:2222\n[fd00::7]:22 slots=2\n")
    proc = subprocess.run(
        [sys.executable, "-m", "mxlaunch.launcher", "train", "--hosts", str(hostfile), "-n", "2", "-s", "2",
         "--python", "/opt/venv/bin/python", "--workdir", "/efs/job", "--env", "API_TOKEN=hunter2",
         "--env", "PLAIN=a b", "--dry-run", "--", "/opt/venv/bin/python", "train.py", "--data-train", "x y.rec"],
        capture_output=True, text=True, timeout=50, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "hunter2" not in proc.stdout
    doc = yaml.safe_load(proc.stdout)  # job.yaml and the SSH section: one YAML document
    ssh = doc["ssh"]
    assert shlex.split(ssh["remote_command"]) == roleguard.bootstrap_argv("/opt/venv/bin/python")
    assert list(ssh["hosts"]) == ["head.invalid", "ubuntu@w1.invalid:2222", "[fd00::7]:22"]
    assert list(ssh["hosts"]["head.invalid"]) == ["scheduler", "server-0"]
    assert list(ssh["hosts"]["ubuntu@w1.invalid:2222"]) == ["server-1", "worker-0"]
    assert list(ssh["hosts"]["[fd00::7]:22"]) == ["worker-1"]
    worker = ssh["hosts"]["[fd00::7]:22"]["worker-1"]
    assert worker["argv"] == ["/opt/venv/bin/python", "train.py", "--data-train", "x y.rec"]
    assert worker["cwd"] == "/efs/job"
    assert worker["env"]["API_TOKEN"] == "***" and worker["env"]["PLAIN"] == "a b"
    assert worker["env"]["DMLC_NODE_HOST"] == "fd00::7" and worker["env"]["DMLC_PS_ROOT_URI"] == "head.invalid"
    assert not (tmp_path / "runs").exists()  # nothing created, nothing connected


def test_dry_run_without_python_uses_this_interpreter(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "mxlaunch.launcher", "train", "--hosts", "h1.invalid,h2.invalid", "-n", "1",
                           "--dry-run", "--", "trainer", "fit", "--data-train", "t.rec"], capture_output=True, text=True, timeout=50,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert shlex.split(yaml.safe_load(proc.stdout)["ssh"]["remote_command"])[0] == sys.executable
