"""`launch train --resume RUN_DIR --num-epochs N` with N at or below the epochs already done is refused before
any role starts (exit 2, one line naming the newest checkpoint's epoch), for local and remote runs alike: the
remote checkpoint search that --resume already does tells the epoch, with no further round trip. Run
directories made by hand; no MXNet."""
from __future__ import annotations

import os
import struct
import subprocess

import pytest

from mxlaunch.launcher.jobs import resume, where
from mxlaunch.errors import UsageError
from mxlaunch.exits import Exit
from mxlaunch.launcher.jobs import checkpoints, rundir
from mxlaunch.infra.transport.hosts import Host
from mxlaunch.launcher.jobs.plan import JobSpec, plan_job
from mxlaunch.infra.transport.ssh import SSHOptions
from mxlaunch.infra.transport.target import ssh_target
from testkit.jobs import launch_argv

EMPTY_PARAMS = struct.pack("<QQQQ", 0x112, 0, 0, 0)  # a whole MXNet .params file holding no arrays
HOSTS = (Host("10.0.0.1", user="ubuntu", slots=1), Host("10.0.0.2", user="ubuntu", slots=1))

pytestmark = pytest.mark.timeout(60)


def local_run(tmp_path, command=("trainer", "fit", "--data-train", "t.rec", "--num-epochs", "2", "--model-prefix", "ck/m"),
              epochs=(1, 2)):
    """A local run directory whose workers wrote the epoch checkpoints `epochs` of ck/m (in tmp_path)."""
    (tmp_path / "ck").mkdir()
    for n in epochs:
        (tmp_path / "ck" / f"m-{n:04d}.params").write_bytes(EMPTY_PARAMS)
    (tmp_path / "ck" / "m-symbol.json").write_text("{}")
    spec = JobSpec(command=command, num_workers=1, num_servers=1, hosts=(Host.loopback(slots=1),), local=True,
                   workdir=str(tmp_path))
    run_dir = rundir.prepare(str(tmp_path / "run"))
    rundir.write_plan_files(plan_job(spec, "j1", run_dir, 20001), workdir=str(tmp_path))
    return run_dir


@pytest.mark.parametrize("num_epochs", [1, 2])
def test_num_epochs_at_or_below_the_newest_checkpoint_is_refused(tmp_path, num_epochs):
    run_dir = local_run(tmp_path)
    with pytest.raises(UsageError, match=rf"--num-epochs {num_epochs}: the newest checkpoint of .* is epoch 2 "
                                         r"\(2 epochs done\).*give --num-epochs above 2"):
        resume.resume_spec(run_dir, num_epochs=num_epochs)
    spec, _ = resume.resume_spec(run_dir, num_epochs=3)  # one more epoch: resumed
    assert spec.command[-4:] == ("--num-epochs", "3", "--load-epoch", "2")


def test_a_remote_run_is_refused_from_the_search_it_already_does(tmp_path):
    """On the worker hosts: the newest checkpoint every worker has (a mid-epoch one: epoch 4 is under way, so
    4 epochs are done and 5 finishes it). The hosts are asked once, as before."""
    target = ssh_target(HOSTS, "/efs/work", "/efs/venv/bin/python", SSHOptions(user="ubuntu"))
    spec = JobSpec(command=("trainer", "fit", "--data-train", "t.rec", "--model-prefix", "ck/m"), num_workers=2, num_servers=1, hosts=HOSTS,
                   local=False, workdir="/efs/work")
    run_dir = rundir.prepare(str(tmp_path / "run"))
    rundir.write_plan_files(plan_job(spec, "j1", run_dir, 20001,
                                     remote_run_dir=rundir.remote_run_dir("/efs/work", run_dir, "j1")),
                            "/efs/work", target)
    asked = []

    def remote(target, hosts, prefix):
        asked.append(hosts)
        return {h: {checkpoints.Checkpoint(3), checkpoints.Checkpoint(4, 7)} for h in hosts}

    with pytest.raises(UsageError, match=r"--num-epochs 4: .* is epoch 4 batch 7 \(4 epochs done\).*above 4"):
        resume.resume_spec(run_dir, target=where.recorded_target(run_dir), num_epochs=4, remote_checkpoints=remote)
    assert len(asked) == 1
    spec, _ = resume.resume_spec(run_dir, target=where.recorded_target(run_dir), num_epochs=5,
                                 remote_checkpoints=remote)
    assert spec.command[-6:] == ("--num-epochs", "5", "--load-epoch", "4", "--load-batch", "7")


def test_launch_train_refuses_before_any_role_starts(tmp_path):
    """The CLI: exit 2, one line, and no role ran (without the check /bin/false would be every role: exit 1)."""
    run_dir = local_run(tmp_path, command=("/bin/false", "--num-epochs", "2", "--model-prefix", "ck/m"))
    proc = subprocess.run(launch_argv("train", "--resume", run_dir, "--num-epochs", "2"), capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL, cwd=str(tmp_path))
    assert proc.returncode == Exit.USAGE, (proc.stdout, proc.stderr)
    assert proc.stderr.count("\n") == 1 and "is epoch 2 (2 epochs done)" in proc.stderr, proc.stderr
    assert os.listdir(rundir.logs_dir(run_dir)) == [] and not os.path.exists(rundir.summary_path(run_dir))


@pytest.mark.parametrize("option", ["--num-epochs", "--num-epoch"])
def test_resuming_a_finished_trainer_run_without_num_epochs_is_refused(tmp_path, option):
    """Its own --num-epochs (or MXNet's alias) is done: nothing to resume. One epoch short: resumed."""
    run_dir = local_run(tmp_path, command=("trainer", "fit", "--data-train", "t.rec", option, "2", "--model-prefix", "ck/m"))
    with pytest.raises(UsageError, match=r"has trained its 2 epochs \(newest checkpoint epoch 2, 2 epochs done\): "
                                         r"nothing to resume; to train more, add --num-epochs N with N above 2"):
        resume.resume_spec(run_dir)
    short = tmp_path / "short"
    short.mkdir()
    spec, _ = resume.resume_spec(local_run(short, command=("trainer", "fit", "--data-train", "t.rec", option, "3", "--model-prefix", "ck/m")))
    assert spec.command[-2:] == ("--load-epoch", "2")


def test_another_workloads_num_epochs_is_not_second_guessed(tmp_path):
    run_dir = local_run(tmp_path, command=("python", "train.py", "--num-epochs", "2", "--model-prefix", "ck/m"))
    spec, _ = resume.resume_spec(run_dir)
    assert spec.command[-2:] == ("--load-epoch", "2")


def test_the_last_of_num_epochs_and_its_alias_is_the_one_checked(tmp_path):
    """click takes the last given of --num-epochs/--num-epoch: 5 here, so checkpoint 2 is resumed."""
    run_dir = local_run(tmp_path, command=("trainer", "fit", "--data-train", "t.rec", "--num-epochs", "2", "--num-epoch", "5",
                                           "--model-prefix", "ck/m"))
    spec, _ = resume.resume_spec(run_dir)
    assert spec.command[-2:] == ("--load-epoch", "2")


def test_a_signed_num_epochs_is_read_as_click_reads_it(tmp_path):
    run_dir = local_run(tmp_path, command=("trainer", "fit", "--data-train", "t.rec", "--num-epochs", "+2",
                                           "--model-prefix", "ck/m"))
    with pytest.raises(UsageError, match=r"has trained its 2 epochs"):
        resume.resume_spec(run_dir)


def test_a_finished_trainer_run_of_the_default_epochs_is_refused_too(tmp_path):
    from mxlaunch.trainer.contract import describe  # the trainer's default, as the trainer states it

    done = describe(("fit", "--data-train", "t.rec")).num_epochs
    run_dir = local_run(tmp_path, command=("trainer", "fit", "--data-train", "t.rec", "--model-prefix", "ck/m"),
                        epochs=(done - 1, done))
    with pytest.raises(UsageError, match=rf"has trained its {done} epochs \(newest checkpoint epoch {done}"):
        resume.resume_spec(run_dir)
