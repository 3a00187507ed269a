"""A damaged newest checkpoint (its params file cut short, or an array header that lies) is passed over for the
previous whole one, and `launch train --resume` and a restart say so in one line."""
from __future__ import annotations

import json
import os
import struct
import subprocess
import sys

import pytest

from mxlaunch.infra.transport.hosts import Host
from mxlaunch.infra.transport.remote import checkpoint_scan
from mxlaunch.launcher.jobs import checkpoints
from mxlaunch.launcher.jobs.checkpoints import Checkpoint
from mxlaunch.launcher.jobs.plan import JobSpec

pytestmark = pytest.mark.timeout(60)
WHOLE = struct.pack("<QQQQ", 0x112, 0, 0, 0)  # a whole MXNet .params file holding no arrays
# one array whose ndim says 2**31 - 1 (reading its shape as written would allocate 17 GB)
DAMAGED = struct.pack("<QQQIii", 0x112, 0, 1, checkpoint_scan.V2_MAGIC, 0, 2 ** 31 - 1) + bytes(64)
LINE = "checkpoint epoch 2 of ck/m is incomplete (cut short or damaged): resuming from epoch 1, the newest whole one"


def checkpoints_in(workdir, damaged=b""):
    (workdir / "ck").mkdir(parents=True)
    (workdir / "ck" / "m-symbol.json").write_text("{}")
    (workdir / "ck" / "m-0001.params").write_bytes(WHOLE)
    (workdir / "ck" / "m-0002.params").write_bytes(damaged or DAMAGED)


def test_resume_passes_over_a_damaged_newest_checkpoint_and_says_so_in_one_line(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    checkpoints_in(tmp_path)
    (tmp_path / "train.rec").write_bytes(b"")
    job = {"job_id": "ab12cd34", "mode": "local", "run_dir": str(run_dir), "workdir": str(tmp_path),
           "command": ["trainer", "fit", "--data-train", "train.rec", "--model-prefix", "ck/m", "--num-epochs", "5"],
           "num_workers": 1,
           "num_servers": 1, "hosts": ["127.0.0.1 slots=1"]}
    (run_dir / "job.yaml").write_text(json.dumps(job))
    proc = subprocess.run([sys.executable, "-m", "mxlaunch.launcher", "train", "--resume", str(run_dir), "--dry-run"],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path, env=dict(os.environ, NO_COLOR="1"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count(LINE) == 1, proc.stderr
    assert "--load-epoch\n- '1'" in proc.stdout  # the resumed command loads epoch 1


@pytest.mark.parametrize("damaged", [DAMAGED, WHOLE[:-3]], ids=["lying-header", "cut-short"])
def test_a_restart_says_which_checkpoints_it_passed_over(tmp_path, damaged):
    checkpoints_in(tmp_path, damaged)
    spec = JobSpec(command=("t",), num_workers=1, num_servers=1, hosts=(Host.loopback(),), workdir=str(tmp_path))
    said = []
    point, _ = checkpoints.newest_of_job(type("T", (), {"local": True})(), spec, "ck/m", None, said=said.append)
    assert point == Checkpoint(1) and said == [LINE]
    said.clear()
    (tmp_path / "ck" / "m-0002.params").write_bytes(WHOLE)
    assert checkpoints.newest_of_job(type("T", (), {"local": True})(), spec, "ck/m", None, said=said.append)[0] == \
        Checkpoint(2) and said == []


def test_a_remote_resume_says_what_a_worker_host_passed_over():
    hosts = (Host("10.0.0.1", slots=1), Host("10.0.0.2", slots=1))
    spec = JobSpec(command=("t",), num_workers=2, num_servers=1, hosts=hosts, local=False, workdir="/efs/w")
    listing = {hosts[0]: checkpoints._down_to([Checkpoint(3), Checkpoint(2), Checkpoint(1)], Checkpoint(2)),
               hosts[1]: checkpoints._down_to([Checkpoint(3), Checkpoint(2), Checkpoint(1)], Checkpoint(3))}
    said = []
    point, _ = checkpoints.newest_everywhere(type("T", (), {"local": False})(), spec, "ck/m", lambda t, h, p: listing,
                                             said=said.append)
    assert point == Checkpoint(2)
    assert said == ["checkpoint epoch 3 of ck/m is incomplete (cut short or damaged): resuming from epoch 2, "
                    "the newest whole one"]


@pytest.mark.timeout(20)  # before: opening the FIFO waited for a writer, forever
@pytest.mark.parametrize("kind", ["fifo", "link"])
def test_a_fifo_or_a_link_named_like_the_newest_params_is_passed_over_not_read(tmp_path, kind):
    checkpoints_in(tmp_path)
    newest = tmp_path / "ck" / "m-0002.params"
    newest.unlink()
    if kind == "fifo":
        os.mkfifo(newest)
    else:
        (tmp_path / "whole.params").write_bytes(WHOLE)  # a whole file, but elsewhere: not this job's checkpoint
        newest.symlink_to(tmp_path / "whole.params")
    spec = JobSpec(command=("t",), num_workers=1, num_servers=1, hosts=(Host.loopback(),), workdir=str(tmp_path))
    said = []
    point, _ = checkpoints.newest_of_job(type("T", (), {"local": True})(), spec, "ck/m", None, said=said.append)
    assert point == Checkpoint(1) and said == [LINE]
