"""A restart resumes only from checkpoints its own job wrote (issue 13): a --model-prefix that already held an
older run's checkpoints when a new job started must never hand the restart someone else's model. The rule on
fake listings (absent / rewritten / unchanged, a replaced host, the command's own --load-epoch), on real files,
over SFTP on the bed, then one real launcher whose tiny workload writes a checkpoint and fails once."""
import os
import struct

import pytest
import yaml

from mxlaunch.launcher.jobs import checkpoints, workload
from mxlaunch.launcher.jobs.checkpoints import Checkpoint, Older
from mxlaunch.infra.transport.hosts import Host
from mxlaunch.launcher.jobs.plan import JobSpec
from mxlaunch.infra.transport.ssh import SSHOptions
from mxlaunch.infra.transport.target import ssh_target
from testkit import bed as testbed
WHOLE = struct.pack("<QQQQ", 0x112, 0, 0, 0)  # a whole MXNet .params file holding no arrays
OLD, NEW = (1000, 8), (2000, 8)  # (mtime, size) of a params file before the job started, and rewritten since
A, B, C = (Host(f"10.0.0.{i}", slots=1) for i in (1, 2, 3))
REMOTE = type("Remote", (), {"local": False})()
LOCAL = type("Local", (), {"local": True})()


def remote_spec(*hosts):
    return JobSpec(command=("t",), num_workers=len(hosts), num_servers=1, hosts=hosts, local=False, workdir="/efs/w")


# ------------------------------------------------------------------------------------------ the rule
def test_only_checkpoints_absent_from_the_record_or_rewritten_since_are_the_jobs_own():
    older = Older({None: frozenset({(Checkpoint(9), OLD), (Checkpoint(1), OLD), (Checkpoint(3, 5), OLD)})})
    assert not older.mine(None, Checkpoint(9), OLD)  # unchanged: the older run's
    assert older.mine(None, Checkpoint(1), NEW)  # rewritten by this job (temp + rename: another mtime)
    assert older.mine(None, Checkpoint(1), (OLD[0], 16))  # ... or another size
    assert older.mine(None, Checkpoint(2), OLD)  # absent from the record
    assert not older.mine(None, Checkpoint(3, 5), OLD) and older.mine(None, Checkpoint(3, 6), OLD)


def test_a_host_the_record_never_saw_is_judged_against_every_recorded_hosts_files():
    older = Older({A: frozenset({(Checkpoint(9), OLD)}), B: frozenset()})
    assert not older.mine(C, Checkpoint(9), OLD)  # a replacement instance sees the same EFS files
    assert older.mine(C, Checkpoint(2), OLD) and older.mine(B, Checkpoint(9), OLD)


def test_the_checkpoint_the_command_itself_loads_stays_usable():
    cmd = ("trainer", "fit", "--data-train", "t.rec", "--model-prefix", "m", "--load-epoch", "9")
    before = frozenset({(Checkpoint(9), OLD), (Checkpoint(9, 4), OLD), (Checkpoint(3), OLD)})
    older = Older({None: before}, Checkpoint(*workload.load_point(cmd)))
    assert older.mine(None, Checkpoint(9), OLD) and not older.mine(None, Checkpoint(3), OLD)
    assert not older.mine(None, Checkpoint(9, 4), OLD)  # exactly that one


@pytest.mark.parametrize("cmd, point", [
    (("trainer", "fit", "--data-train", "t.rec", "--load-epoch", "3"), (3, 0)),
    (("trainer", "fit", "--data-train", "t.rec", "--load-epoch=3", "--load-batch", "7"), (3, 7)),
    (("python", "train.py", "--load-epoch", "1", "--load-epoch", "4"), (4, 0)),  # the last one counts
    (("trainer", "fit", "--data-train", "t.rec", "--model-prefix", "m"), None),
    (("trainer", "fine-tune", "--data-train", "t.rec", "--pretrained-model", "r", "--load-epoch", "3",
      "--num-classes", "10", "--model-prefix", "m"), None),
    (("python", "train.py", "--load-epoch", "x"), None),  # not a number: the program refuses it, not us
])
def test_the_checkpoint_a_command_loads_is_parsed_from_its_load_options(cmd, point):
    assert workload.load_point(cmd) == point


def test_a_remote_restart_resumes_from_the_newest_of_the_jobs_own_on_every_worker_host():
    before = {A: {Checkpoint(9): OLD, Checkpoint(1): OLD}, B: {Checkpoint(9): OLD, Checkpoint(1): OLD}}
    older = checkpoints.older_checkpoints(REMOTE, remote_spec(A, B), "ck/m", remote=lambda t, hosts, p: before)
    now = {h: {Checkpoint(9): OLD, Checkpoint(1): NEW, Checkpoint(2): NEW} for h in (A, B, C)}
    now[B] = {Checkpoint(9): OLD, Checkpoint(1): NEW}  # B has not got epoch 2 (yet): not every worker can load it

    def listed(target, hosts, prefix, mine=None):  # what remote_points gives: the listing less what `mine` refuses
        assert prefix == "/efs/w/ck/m"
        return {h: {c for c, stamp in now[h].items() if mine is None or mine(h, c, stamp)} for h in hosts}

    assert checkpoints.newest_of_job(REMOTE, remote_spec(A, B), "ck/m", older, listed) == (Checkpoint(1), 1)
    # B replaced by C (the cluster made whole): C's files are judged against what A and B had
    assert checkpoints.newest_of_job(REMOTE, remote_spec(A, C), "ck/m", older, listed) == (Checkpoint(2), 1)
    assert checkpoints.newest_of_job(REMOTE, remote_spec(C), "ck/m", older, listed) == (Checkpoint(2), 1)
    # without a record (a resumed job), the newest there is, another run's or not: the hole this closes
    assert checkpoints.newest_of_job(REMOTE, remote_spec(A, B), "ck/m", None, listed) == (Checkpoint(9), 0)


def test_local_files_an_older_run_left_are_passed_over_before_the_wholeness_check(tmp_path):
    for name in ("m-symbol.json", "m-0009.params", "m-0001.params", "m-0003-000005.params"):
        (tmp_path / name).write_bytes(WHOLE)
        os.utime(tmp_path / name, (1000, 1000))
    spec = JobSpec(command=("t",), num_workers=1, num_servers=1, hosts=(Host.loopback(),), workdir=str(tmp_path))
    older = checkpoints.older_checkpoints(LOCAL, spec, "m")
    assert checkpoints.newest_of_job(LOCAL, spec, "m", older) == (None, 3)
    # this job rewrites epoch 1 (temp + rename), then is killed while writing epoch 2
    (tmp_path / "m-0001.params.tmp-1").write_bytes(WHOLE)
    os.utime(tmp_path / "m-0001.params.tmp-1", (2000, 2000))
    os.rename(tmp_path / "m-0001.params.tmp-1", tmp_path / "m-0001.params")
    (tmp_path / "m-0002.params").write_bytes(WHOLE[:-3])
    assert checkpoints.newest_of_job(LOCAL, spec, "m", older) == (Checkpoint(1), 2)
    assert checkpoints.newest_of_job(LOCAL, spec, "m", None) == (Checkpoint(9), 0)  # what --resume takes
    # a new job whose command loads epoch 9 itself may fall back to exactly that one
    for name in ("m-0001.params", "m-0002.params"):
        (tmp_path / name).unlink()
    loading = checkpoints.older_checkpoints(LOCAL, spec, "m", (9, 0))
    assert checkpoints.newest_of_job(LOCAL, spec, "m", loading) == (Checkpoint(9), 1)


# ------------------------------------------------------------------------------- over SFTP, on the bed
bed = testbed.bed_fixture(1)


@pytest.mark.bed
@pytest.mark.usefixtures("no_agent")
def test_the_record_and_the_restarts_choice_are_read_over_sftp_on_the_worker_hosts(bed, tmp_path):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    for name in ("m-symbol.json", "m-0009.params", "m-0001.params"):
        (ckpt / name).write_bytes(WHOLE)
        os.utime(ckpt / name, (1000, 1000))
    target = ssh_target(bed.hosts, str(tmp_path), "/usr/bin/python3",
                        SSHOptions(key=bed.key, known_hosts=bed.known_hosts))
    spec = JobSpec(command=("t",), num_workers=1, num_servers=1, hosts=bed.hosts, local=False, workdir=str(tmp_path))
    older = checkpoints.older_checkpoints(target, spec, "ckpt/m")
    stamp = (1000, len(WHOLE))  # SFTP's mtime: whole seconds
    assert older.files == {bed.hosts[0]: frozenset({(Checkpoint(9), stamp), (Checkpoint(1), stamp)})}
    assert checkpoints.newest_of_job(target, spec, "ckpt/m", older) == (None, 2)
    os.utime(ckpt / "m-0001.params", (2000, 2000))  # rewritten by this job
    assert checkpoints.newest_of_job(target, spec, "ckpt/m", older) == (Checkpoint(1), 1)


# ------------------------------------------------------------------------------------------ end to end
# Every role runs it: the worker writes epoch 1's checkpoint as the trainer does (temp + rename) and fails,
# unless it was restarted (--load-epoch), when it succeeds; the scheduler and server have nothing to do.
WORKLOAD = """
import os, struct, sys
if os.environ.get("DMLC_ROLE") != "worker" or "--load-epoch" in sys.argv:
    sys.exit(0)
params = sys.argv[sys.argv.index("--model-prefix") + 1] + "-0001.params"
with open(params + ".tmp-1", "wb") as f:
    f.write(struct.pack("<QQQQ", 0x112, 0, 0, 0))
os.rename(params + ".tmp-1", params)
sys.exit(3)
"""


@pytest.mark.timeout(90)
def test_a_restart_resumes_from_this_jobs_checkpoint_not_an_older_runs_newer_one(tmp_path):
    from testkit.jobs import PY, job_processes, run_launch, summary

    ckpt, run_dir = tmp_path / "ckpt", str(tmp_path / "run")
    ckpt.mkdir()
    prefix = str(ckpt / "m")
    for name in ("m-symbol.json", "m-0009.params"):  # an older run's, under the same prefix
        (ckpt / name).write_bytes(WHOLE)
    rc, _, err = run_launch("train", "--local", "-n", "1", "-s", "1", "--run-dir", run_dir, "--max-restarts", "1",
                            "--restart-delay", "0", "--", PY, "-c", WORKLOAD, "--model-prefix", prefix, timeout=60)
    assert rc == 0, err[-3000:]
    assert f"ignoring 1 checkpoint of {prefix} older than this job" in err
    assert "restart 1 of 1, from checkpoint epoch 1:" in err
    with open(os.path.join(run_dir, "job.yaml")) as f:
        assert yaml.safe_load(f)["command"][-2:] == ["--load-epoch", "1"]
    data = summary(run_dir)
    assert [r["from_epoch"] for r in data["restarts"]] == [1]
    assert (ckpt / "m-0009.params").read_bytes() == WHOLE and not job_processes(data["job_id"])
