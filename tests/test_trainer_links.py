"""What a training role writes never follows a link planted by another user: checkpoints, the .idx it builds,
rank 0's metrics.jsonl and a worker's profile. Each victim below is a file the planted link points at; the
code before this guard wrote through each of these links (its temporary names were `PATH.tmp-PID`, the metrics
file was appended to by name), except the profile's: MXNet's profiler replaced a link at its name itself, and
the test keeps it so now that the profile is written in a private folder and moved into place."""
import logging
import os
import stat

import numpy as np
import pytest

from mxlaunch.trainer import index, model, profiling
from mxlaunch.trainer.metrics_file import MetricsFile, read
from mxlaunch.trainer.records import encode_png, index_path, write_records
from test_checkpoints_atomic import module  # noqa: F401  (the small bound module fixture)

VICTIM_TEXT = b"another user's file\n"


@pytest.fixture
def victim(tmp_path):
    path = tmp_path / "victim"
    path.write_bytes(VICTIM_TEXT)
    return path


def test_a_checkpoint_never_writes_through_a_link_at_its_name_or_a_guessable_temporary_one(tmp_path, victim, module):
    import mxnet as mx

    prefix = str(tmp_path / "ck" / "m")
    os.makedirs(tmp_path / "ck")
    for name in ("m-0001.params", "m-0001.params.tmp-%d" % os.getpid(), "m-symbol.json.tmp-%d" % os.getpid(),
                 "m-0001.states.tmp-%d" % os.getpid()):
        os.symlink(victim, tmp_path / "ck" / name)
    model.save_checkpoint(prefix, 1, module, states_devices=1)
    assert victim.read_bytes() == VICTIM_TEXT
    params = tmp_path / "ck" / "m-0001.params"
    assert stat.S_ISREG(os.lstat(params).st_mode)  # the link at the name was replaced, not followed
    _, args, _ = mx.model.load_checkpoint(prefix, 1)
    assert set(args) == {"fc_weight", "fc_bias"}
    assert not [n for n in os.listdir(tmp_path / "ck") if n.startswith(".")]  # no private folder left


def test_an_index_is_written_whole_and_never_through_a_link(tmp_path, victim):
    rec = str(tmp_path / "data.rec")
    write_records(rec, [(0, encode_png(np.zeros((4, 4, 3), np.uint8)))] * 3)
    os.remove(index_path(rec))
    os.symlink(victim, "%s.tmp-%d" % (index_path(rec), os.getpid()))
    assert index.training_index(rec, None) == index_path(rec)
    assert victim.read_bytes() == VICTIM_TEXT
    assert len(open(index_path(rec)).read().splitlines()) == 3


def test_metrics_are_never_written_through_a_link_and_training_goes_on(tmp_path, victim, caplog):
    path = tmp_path / "run" / "metrics.jsonl"
    os.makedirs(path.parent)
    os.symlink(victim, path)
    with caplog.at_level(logging.WARNING, logger="trainer"):
        metrics = MetricsFile(str(path), begin_epoch=0)
        metrics.append({"epoch": 0})
    assert victim.read_bytes() == VICTIM_TEXT
    assert os.path.islink(path)
    (warning,) = [r.getMessage() for r in caplog.records]
    assert f"{path} is a symbolic link" in warning and "training goes on without metrics.jsonl" in warning


def test_metrics_are_never_written_where_another_user_may_plant_files(tmp_path, caplog):
    shared = tmp_path / "shared"
    os.makedirs(shared)
    os.chmod(shared, 0o777)  # writable by every user, without /tmp's sticky bit
    with caplog.at_level(logging.WARNING, logger="trainer"):
        MetricsFile(str(shared / "metrics.jsonl"), begin_epoch=0).append({"epoch": 0})
    assert os.listdir(shared) == []
    assert "is not this user's own directory" in caplog.records[0].getMessage()
    sticky = tmp_path / "sticky"
    os.makedirs(sticky)
    os.chmod(sticky, 0o1777)  # /tmp's mode: others' files there cannot be renamed over or written through
    metrics = MetricsFile(str(sticky / "metrics.jsonl"), begin_epoch=0)
    metrics.append({"epoch": 0})
    assert read(str(sticky / "metrics.jsonl")) == [{"epoch": 0}]


def test_metrics_of_a_fifo_or_a_huge_file_are_given_up_at_once(tmp_path, caplog, monkeypatch):
    fifo = tmp_path / "fifo" / "metrics.jsonl"
    os.makedirs(fifo.parent)
    os.mkfifo(fifo)  # opened without O_NONBLOCK it would wait for a writer forever
    with caplog.at_level(logging.WARNING, logger="trainer"):
        assert MetricsFile(str(fifo), begin_epoch=0).path is None
    huge = tmp_path / "huge" / "metrics.jsonl"
    os.makedirs(huge.parent)
    with open(huge, "wb") as f:
        f.truncate(65 << 20)  # sparse: costs nothing to make
    with caplog.at_level(logging.WARNING, logger="trainer"):
        assert MetricsFile(str(huge), begin_epoch=0).path is None
    messages = [r.getMessage() for r in caplog.records]
    assert "is not a regular file" in messages[0] and "is larger than 64 MiB" in messages[1], messages


def test_a_workers_profile_replaces_a_link_at_its_name(tmp_path, victim):
    import json

    import mxnet as mx

    os.symlink(victim, tmp_path / "worker.json")
    profiles = profiling.start("worker.json", "", rank=0, num_workers=1, directory=str(tmp_path))
    (mx.nd.ones((4, 4)) * 2).wait_to_read()
    profiles.stop()
    assert victim.read_bytes() == VICTIM_TEXT
    assert not os.path.islink(tmp_path / "worker.json")
    with open(tmp_path / "worker.json") as f:
        assert "traceEvents" in json.load(f)
    assert sorted(os.listdir(tmp_path)) == ["victim", "worker.json"]


def test_checkpoints_are_refused_at_start_where_another_user_may_plant_links(tmp_path):
    """Said before MXNet starts, not at the first checkpoint hours later: exit 2, one line."""
    from conftest import run_trainer

    shared = tmp_path / "shared"
    os.makedirs(shared)
    os.chmod(shared, 0o777)
    result = run_trainer("fit", "--benchmark", "1", "--num-epochs", "1", "--model-prefix", shared / "m", timeout=60)
    assert result.returncode == 2, result.stderr[-2000:]
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"trainer: error: --model-prefix {shared / 'm'}: {shared} is not this user's own")
    assert os.listdir(shared) == []


def test_a_server_works_in_its_run_directory_only_when_no_other_user_can_plant_there(tmp_path, monkeypatch, caplog):
    from mxlaunch.trainer import cli

    own, shared = tmp_path / "own", tmp_path / "shared"
    os.makedirs(shared)
    os.chmod(shared, 0o777)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LAUNCH_RUN_DIR", str(own))
    cli._into_run_dir()
    assert os.getcwd() == str(own)
    monkeypatch.setenv("LAUNCH_RUN_DIR", str(shared))
    with caplog.at_level(logging.WARNING, logger="trainer"):
        cli._into_run_dir()
    private = os.getcwd()
    assert private != str(shared) and stat.S_IMODE(os.stat(private).st_mode) == 0o700
    assert f"cannot work in {shared}" in caplog.records[0].getMessage()
    os.rmdir(private)


def test_a_rec_in_a_folder_others_can_write_gets_a_private_index_and_trains(tmp_path):
    """Shared data (another user's folder, or one anyone can write): the index is never written beside it."""
    shared = tmp_path / "shared"
    os.makedirs(shared)
    rec = str(shared / "data.rec")
    write_records(rec, [(0, encode_png(np.zeros((4, 4, 3), np.uint8)))] * 3)
    os.remove(index_path(rec))
    os.chmod(shared, 0o777)
    path = index.training_index(rec, None)
    assert not path.startswith(str(shared)) and len(open(path).read().splitlines()) == 3
    assert sorted(os.listdir(shared)) == ["data.rec"]


def test_what_a_killed_save_left_is_swept_after_the_next_checkpoint(tmp_path, module):
    """A writer killed mid-save leaves its private folder (a partial checkpoint as large as a whole one); the
    next save sweeps those older than model.UNFINISHED_AGE, never a live one nor another file."""
    prefix = str(tmp_path / "ck" / "m")
    model.save_checkpoint(prefix, 1, module, states_devices=1)
    folder = tmp_path / "ck"
    old, fresh = folder / ".m-0002.params.k1lled00", folder / ".m-0002.states.stillup0"
    for left in (old, fresh):
        left.mkdir()
        (left / "partial").write_bytes(b"x" * 100)
    (folder / ".m-notes.txt.abcdefgh").mkdir()  # not a checkpoint's: kept
    past = os.stat(old).st_mtime - model.UNFINISHED_AGE - 1
    os.utime(old, (past, past))
    assert model.sweep_unfinished(prefix) == [str(old)]
    assert sorted(n for n in os.listdir(folder) if n.startswith(".")) == [".m-0002.states.stillup0",
                                                                          ".m-notes.txt.abcdefgh"]
