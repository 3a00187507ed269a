"""The real trainer under `launch train --local`: a dist_sync job on real handwritten digits.

One 2-worker + 1-server job and one plain 1-worker run with the same global batch (2 x 16 = 32) are
shared by the tests of this module; they run side by side to keep the suite short. Both are the session's
(conftest.digits_job, conftest.digits_training): the trainer tests read them too. The job's workers split
their 16 samples over 2 CPU contexts (test_trainer_devices' multi-device workers): same SGD, same updates.
"""
import json
import os
import re
import shutil
import sys
import time

import pytest

from digits_recipe import EPOCHS, STEPS, TRAIN_EXAMPLES, RecipeRun, fit_args, read_metrics as metrics
from testkit.jobs import job_processes, read_log, run_launch

BATCH = RecipeRun.BATCH  # the global batch: 2 x 16 in the job, 32 in the plain run
pytestmark = pytest.mark.slow


def lr_changes(log_text):
    """(update number, new lr) from MXNet's own scheduler lines: where the optimizer really changed it."""
    return [(int(n), float(lr)) for n, lr in re.findall(r"Update\[(\d+)\]: Change learning rate to ([\d.e+-]+)",
                                                          log_text)]


@pytest.fixture(scope="module")
def runs(digits_training, digits_job):
    """The session's 2-worker job (conftest.digits_job), run beside the session's plain run of the recipe
    (conftest.digits_training: started first, in the background), the one-worker run it is compared with."""
    one = digits_training.result(timeout=240)
    return {**digits_job, "one_dir": one.directory, "one_log": one.log}


@pytest.mark.timeout(300)
def test_two_workers_reach_97_percent_within_1_5_points_of_one_worker(runs):
    two = metrics(os.path.join(runs["run_dir"], "metrics.jsonl"))
    one = metrics(os.path.join(runs["one_dir"], "metrics.jsonl"))
    assert [m["epoch"] for m in two] == list(range(EPOCHS))
    assert two[-1]["validation-accuracy"] >= 0.97, two[-1]
    assert abs(two[-1]["validation-accuracy"] - one[-1]["validation-accuracy"]) <= 0.015, (two[-1], one[-1])
    with open(os.path.join(runs["run_dir"], "accuracy.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert "[worker 0]" in runs["out"] and "[worker 1]" in runs["out"] and "[server 0]" in runs["out"]


@pytest.mark.timeout(300)
def test_console_is_quiet_worker_0_is_rank_0_and_the_end_reports_the_accuracy(runs, tmp_path):
    from mxlaunch.launcher.jobs.output import is_engine_chatter
    run_dir, out = runs["run_dir"], runs["out"]
    shown = [line.split("] ", 1)[1] for line in out.splitlines() if line.startswith("[")]
    assert not [line for line in shown if is_engine_chatter(line)]  # no ps-lite line on the console ...
    assert "Barrier count for" in read_log(run_dir, "scheduler")  # ... the logs still have them
    assert "Bind to role=worker" in read_log(run_dir, "worker-1")
    assert f"Node[0] Epoch[{EPOCHS - 1}] Validation-accuracy=" in read_log(run_dir, "worker-0")  # rank 0's
    assert "Validation-accuracy" not in read_log(run_dir, "worker-1")
    assert out.count("[launch] Epoch[") == EPOCHS  # no terminal: one plain progress line per epoch
    records = metrics(os.path.join(run_dir, "metrics.jsonl"))
    with open(os.path.join(run_dir, "summary.json")) as f:
        data = json.load(f)
    final, best = records[-1]["validation-accuracy"], max(r["validation-accuracy"] for r in records)
    assert data["final_validation_accuracy"] == final and data["best_validation_accuracy"] == best
    assert data["epochs"] == EPOCHS and data["checkpoint_prefix"] == runs["ckpt"]
    last = out.strip().splitlines()[-1]
    assert last.startswith("ok: all 2 workers exited 0 in ") and f"{EPOCHS} epochs" in last
    assert f"validation accuracy {final:.4f} (best {best:.4f}" in last
    assert f"checkpoints {runs['ckpt']}-NNNN.params" in last and os.path.join(run_dir, "accuracy.png") in last
    rc, listed, err = run_launch("runs", "--dir", os.path.dirname(run_dir), timeout=60)
    assert rc == 0, err
    row = next(line.split() for line in listed.splitlines() if line.startswith(os.path.basename(run_dir)))
    assert row[6:9] == ["ok", str(EPOCHS), f"{final:.4f}"]


@pytest.mark.timeout(300)
def test_lr_changes_on_the_server_at_the_same_epochs_as_one_worker(runs):
    updates_per_epoch = -(-(TRAIN_EXAMPLES // 2) // (BATCH // 2))  # one update = one global batch
    expected = [(updates_per_epoch * s + 1, 0.1 * 0.1 ** (i + 1)) for i, s in enumerate(STEPS)]
    server = lr_changes(read_log(runs["run_dir"], "server-0"))
    single = lr_changes(runs["one_log"])
    assert [n for n, _ in server] == [n for n, _ in expected] == [n for n, _ in single]
    assert [lr for _, lr in server] == pytest.approx([lr for _, lr in expected])
    for worker in ("worker-0", "worker-1"):
        assert not lr_changes(read_log(runs["run_dir"], worker))  # under dist_sync the servers optimise
    two = metrics(os.path.join(runs["run_dir"], "metrics.jsonl"))
    one = metrics(os.path.join(runs["one_dir"], "metrics.jsonl"))
    assert [m["lr"] for m in two] == pytest.approx([m["lr"] for m in one])


@pytest.mark.timeout(120)
def test_plot_overlays_runs_and_logs_show_one_role(runs, tmp_path):
    out = str(tmp_path / "compare.png")
    rc, stdout, err = run_launch("plot", runs["run_dir"], runs["one_dir"], "-o", out, timeout=60)
    assert rc == 0, err
    with open(out, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    rc, stdout, err = run_launch("logs", runs["run_dir"], "--role", "server-0", timeout=60)
    assert rc == 0 and stdout == read_log(runs["run_dir"], "server-0")
    rc, stdout, err = run_launch("logs", runs["run_dir"], timeout=60)
    assert rc == 0 and "[worker 1] " in stdout and "[scheduler] " in stdout


@pytest.mark.timeout(180)
def test_resume_continues_from_the_newest_checkpoint(runs):
    """Runs last of the shared-run tests: it rewinds the run by one epoch and resumes it."""
    os.remove("%s-%04d.params" % (runs["ckpt"], EPOCHS))
    rc, out, err = run_launch("train", "--resume", runs["run_dir"], timeout=150)
    assert rc == 0, err[-3000:]
    import yaml
    with open(os.path.join(runs["run_dir"], "job.yaml")) as f:
        assert yaml.safe_load(f)["command"][-2:] == ["--load-epoch", str(EPOCHS - 1)]
    assert os.path.exists("%s-%04d.params" % (runs["ckpt"], EPOCHS))
    assert read_log(runs["run_dir"], "scheduler").count("Bind to role=scheduler") == 2  # logs kept, appended
    records = metrics(os.path.join(runs["run_dir"], "metrics.jsonl"))
    assert [m["epoch"] for m in records] == list(range(EPOCHS))
    assert records[-1]["lr"] == pytest.approx(0.001)  # the schedule resumed past both steps, not from 0.1
    assert records[-1]["validation-accuracy"] >= 0.97


@pytest.mark.timeout(120)
def test_trainer_error_on_one_worker_ends_the_job_naming_it(digits_dir, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    for ext in ("rec", "idx"):
        shutil.copy(os.path.join(digits_dir, f"digits_train.{ext}"), bad / f"digits_train.{ext}")
    with open(bad / "digits_train.idx") as f:
        offset = int(f.read().split()[-3])  # a record near the end: in the last worker's shard only
    with open(bad / "digits_train.rec", "r+b") as f:
        f.seek(offset + 8 + 24 + 4)  # past the record header and the image header: the image bytes
        f.write(b"\xde\xad\xbe\xef" * 20)
    args = fit_args(digits_dir, str(tmp_path / "ckpt" / "d"), BATCH // 2)
    args[args.index("--data-train") + 1] = str(bad / "digits_train.rec")
    run_dir = str(tmp_path / "run")
    t0 = time.monotonic()
    rc, out, err = run_launch("train", "--local", "-n", "2", "-s", "1", "--run-dir", run_dir,
                              "--env", "OMP_NUM_THREADS=1", "--", sys.executable, "-m", "mxlaunch.trainer", *args, timeout=100)
    assert rc == 1
    assert time.monotonic() - t0 < 60  # it ended because of the error, not after the recipe's epochs
    with open(os.path.join(run_dir, "summary.json")) as f:
        data = json.load(f)
    failed = data["first_failure"]["name"]
    assert failed.startswith("worker-") and "cannot read a record" in read_log(run_dir, failed)
    assert failed.replace("-", " ") in err and "cannot read a record" in err
    assert data["teardown_seconds"] <= 2.0
    assert not job_processes(data["job_id"])
