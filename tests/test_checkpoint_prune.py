"""A newer checkpoint removes the mid-epoch checkpoints it supersedes (trainer/model.py prune_mid_epoch): files
made by hand, no MXNet. The end-to-end case is in test_trainer_interrupt (a resumed run removes its start)."""
from __future__ import annotations

import logging
import os

import pytest

from mxlaunch.trainer import model

NAMES = ["m-symbol.json", "m-0001.params", "m-0002.params", "m-0002.states",
         "m-0001-000005.params", "m-0001-000005.states", "m-0002-000003.params", "m-0002-000003.states",
         "m-0002-000007.states",  # a .states whose .params was never written (its writer killed between the two)
         "m-0003-000001.params", "m2-0001-000005.params", "m-0001-000009.params.tmp-77"]


def folder(tmp_path, names=NAMES):
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    return str(tmp_path / "m")


def left(tmp_path):
    return sorted(os.listdir(tmp_path))


@pytest.mark.parametrize("epoch, batch, gone", [
    (2, 0, ["m-0001-000005.params", "m-0001-000005.states"]),  # whole checkpoint 2: epoch 2's own ones stay
    (3, 0, ["m-0001-000005.params", "m-0001-000005.states", "m-0002-000003.params", "m-0002-000003.states",
            "m-0002-000007.states"]),
    (2, 5, ["m-0001-000005.params", "m-0001-000005.states", "m-0002-000003.params", "m-0002-000003.states"]),
    (1, 5, []),  # nothing older than itself; never itself
])
def test_only_older_mid_epoch_files_of_this_prefix_go(tmp_path, epoch, batch, gone):
    prefix = folder(tmp_path)
    removed = model.prune_mid_epoch(prefix, epoch, batch)
    assert sorted(os.path.basename(p) for p in removed) == sorted(gone)
    assert left(tmp_path) == sorted(set(NAMES) - set(gone))  # other prefixes, temporaries, whole ones: kept


def test_a_prefix_with_regex_characters_is_taken_literally(tmp_path):
    folder(tmp_path, ["m+(1).-0001-000005.params", "mm(1)x-0001-000005.params"])
    removed = model.prune_mid_epoch(str(tmp_path / "m+(1)."), 2)
    assert [os.path.basename(p) for p in removed] == ["m+(1).-0001-000005.params"]
    assert left(tmp_path) == ["mm(1)x-0001-000005.params"]


def test_a_file_that_cannot_be_removed_is_a_warning_not_the_end_of_the_run(tmp_path, monkeypatch, caplog):
    prefix = folder(tmp_path)
    real_remove = os.remove

    def refuse(path):
        if path.endswith("m-0001-000005.params"):
            raise PermissionError(13, "Permission denied", path)
        real_remove(path)

    monkeypatch.setattr(os, "remove", refuse)
    with caplog.at_level(logging.WARNING, logger="trainer"):
        removed = model.prune_mid_epoch(prefix, 2)
    assert removed == []  # its .states stays with it: never a .params whose states are gone
    assert {"m-0001-000005.params", "m-0001-000005.states"} <= set(left(tmp_path))
    assert "could not remove the superseded checkpoint file" in caplog.text and "Permission denied" in caplog.text


def test_a_missing_folder_removes_nothing(tmp_path):
    assert model.prune_mid_epoch(str(tmp_path / "none" / "m"), 5) == []
