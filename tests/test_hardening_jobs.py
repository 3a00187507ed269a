"""Issue 12 hardening, jobs: small local jobs (plain Python roles, no MXNet) that used to exit 70, lose
files or hold a whole role's output in memory; and CIFAR-10 tarballs that are not the official one."""
from __future__ import annotations

import io
import json
import os
import pickle
import subprocess
import sys
import tarfile
import time


from conftest import run_trainer
from mxlaunch.exits import Exit
from testkit.jobs import end_launch, launch_argv, run_launch

# A role program: only the worker does something (the scheduler and server of a job exit 0 at once).
ROLE = "import os, sys\nif os.environ.get('DMLC_ROLE') != 'worker': sys.exit(0)\n"


def _job(tmp_path, body: str, *args, run_dir=None):
    script = tmp_path / "role.py"
    script.write_text(ROLE + body, encoding="utf-8")
    run_dir = run_dir or tmp_path / "run"
    return (*run_launch("train", "--local", "-n", "1", "-s", "1", "--run-dir", str(run_dir), "--", sys.executable,
                        str(script), *args, timeout=60), run_dir)


def test_a_non_empty_run_dir_that_is_not_a_job_is_refused_untouched(tmp_path):
    run_dir = tmp_path / "thesis"
    run_dir.mkdir()
    (run_dir / "chapter1.tex").write_text("precious", encoding="utf-8")
    code, out, err, _ = _job(tmp_path, "open('ran', 'w').close()\n", run_dir=run_dir)
    assert code == Exit.USAGE, err
    assert "not empty" in err and len(err.strip().splitlines()) == 1, err
    assert sorted(os.listdir(run_dir)) == ["chapter1.tex"]
    assert (run_dir / "chapter1.tex").read_text(encoding="utf-8") == "precious"
    assert not (tmp_path / "ran").exists()


def test_an_empty_existing_run_dir_is_used(tmp_path):
    (tmp_path / "run").mkdir()
    code, out, err, run_dir = _job(tmp_path, "")
    assert code == 0, err
    assert (run_dir / "job.yaml").exists()


def test_workers_that_exit_0_make_the_job_exit_0_even_with_damaged_metrics(tmp_path):
    body = ("with open(os.path.join(os.environ['LAUNCH_RUN_DIR'], 'metrics.jsonl'), 'wb') as f:\n"
            "    f.write(b'{\"epoch\": 0, \"train-accuracy\": 0.5, \"validation-accuracy\": 0.25}\\n'\n"
            "            b'{\"epoch\": 1, \"tra\\xff\\n[1]\\n{\"epoch\": 1' + b'0' * 400 + b'}\\nnot json\\n')\n")
    code, out, err, run_dir = _job(tmp_path, body)
    assert code == 0, out + err
    assert "warning" in out and "metrics.jsonl:2" in out, out
    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    assert summary["status"] == 0 and summary["final_validation_accuracy"] == 0.25
    assert "internal error" not in err


def test_a_command_argument_that_is_not_utf8_is_passed_through_byte_for_byte(tmp_path):
    arg = b"caf\xe9-\xff".decode("utf-8", "surrogateescape")  # how Python holds a Latin-1 argument
    body = "open(sys.argv[2], 'wb').write(os.fsencode(sys.argv[1]))\n"
    code, out, err, run_dir = _job(tmp_path, body, arg, str(tmp_path / "seen"))
    assert code == 0, out + err
    assert (tmp_path / "seen").read_bytes() == b"caf\xe9-\xff"
    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    assert summary["command"][2] == arg


def _peak_rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))


def test_100_mb_without_a_newline_keeps_the_launcher_under_100_mb(tmp_path):
    """A role printing 100 MB with no newline (a progress bar gone wrong): the launcher forwards it in
    bounded pieces. Its peak RSS (VmHWM, read while it runs) stays under 100 MB; every byte reaches the log."""
    script = tmp_path / "role.py"
    script.write_text(ROLE + "chunk = b'x' * (1 << 20)\nfor _ in range(100):\n    sys.stdout.buffer.write(chunk)\n"
                      "sys.stdout.flush()\n", encoding="utf-8")
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(launch_argv("train", "--local", "-n", "1", "-s", "1", "--run-dir", str(run_dir), "--",
                                        sys.executable, str(script)),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=dict(os.environ, NO_COLOR="1"),
                            start_new_session=True)
    peak = 0
    try:
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                peak = max(peak, _peak_rss_kb(proc.pid))
            except (OSError, StopIteration):  # it just ended
                break
            time.sleep(0.02)  # sampling a high-water mark: it only grows, so a late sample sees the peak
        proc.wait(timeout=30)
    finally:
        end_launch(proc)
    assert proc.returncode == 0, proc.stderr.read().decode()
    assert 0 < peak < 100 * 1024, f"launcher peak RSS {peak} kB"
    log = (run_dir / "logs" / "worker-0.log").read_bytes()
    assert log.replace(b"\n", b"") == b"x" * (100 << 20)  # nothing lost


# --------------------------------------------------------------------------------------------------- CIFAR-10

class _Boom:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def _tarball(path, payload: bytes):
    with tarfile.open(path, "w:gz") as archive:
        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(payload)
            archive.addfile(info, io.BytesIO(payload))


def test_a_cifar_tarball_with_another_checksum_is_refused_unless_unverified(tmp_path):
    import numpy as np
    payload = pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [1, 2]}, protocol=2)
    _tarball(tmp_path / "c.tar.gz", payload)
    refused = run_trainer("data", "cifar10", "--from", tmp_path / "c.tar.gz", "--out", tmp_path / "out", timeout=60)
    assert refused.returncode == Exit.USAGE and "--unverified" in refused.stderr, refused.stderr
    assert not (tmp_path / "out").exists()
    done = run_trainer("data", "cifar10", "--from", tmp_path / "c.tar.gz", "--out", tmp_path / "out",
                       "--unverified", timeout=120)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / "cifar10_train.rec").exists()


def test_an_unverified_tarball_is_read_as_data_never_run(tmp_path):
    _tarball(tmp_path / "evil.tar.gz", pickle.dumps({b"data": _Boom(), b"labels": [1]}))
    result = run_trainer("data", "cifar10", "--from", tmp_path / "evil.tar.gz", "--out", tmp_path / "out",
                         "--unverified", timeout=60, cwd=tmp_path)
    assert result.returncode == Exit.USAGE, result.stderr
    assert "refusing to load" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "PWNED").exists()
