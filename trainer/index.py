"""The `.idx` of a training `.rec`: what lets MXNet's ImageRecordIter shuffle it (and shard it by records).

MXNet's own CIFAR-10 files came without one, and ImageRecordIter then reads every epoch in file order. A `.rec`
without an `.idx` gets one: written beside it (as `im2rec` would), or, where that directory cannot be written,
into a temporary file this process removes at exit.
"""
from __future__ import annotations

import atexit
import logging
import os
import shutil
import tempfile
from typing import Optional

from mxlaunch.files import UnsafeFile, replaced
from mxlaunch.trainer.records import DataError, index_path, index_text

log = logging.getLogger("trainer")


def _write(text: str, path: str) -> None:
    """Whole or not at all, never through a planted link: several workers of one host may write the same index
    at once, and the data's folder may be shared."""
    with replaced(path) as tmp:
        with open(tmp, "w") as stream:
            stream.write(text)


def _private_copy(text: str, rec: str) -> str:
    directory = tempfile.mkdtemp(prefix="trainer-idx-")
    atexit.register(shutil.rmtree, directory, True)
    path = os.path.join(directory, os.path.basename(index_path(rec)))
    _write(text, path)
    return path


def training_index(rec: str, given: Optional[str], option: str = "--data-train-idx") -> str:
    """The index to read `rec` with: `given` (--data-train-idx), else the .idx beside it, else one built now."""
    if given:
        if not os.path.isfile(given):
            raise DataError(f"{option} {given}: no such file")
        return given
    beside = index_path(rec)
    if os.path.isfile(beside):
        return beside
    text = index_text(rec)
    count = text.count("\n")
    try:
        _write(text, beside)
    except (OSError, UnsafeFile) as exc:  # read-only, or another user's folder (shared data): never written there
        path = _private_copy(text, rec)
        why = exc.format_message() if isinstance(exc, UnsafeFile) else exc.strerror or exc
        log.info("%s has no index and its directory cannot hold one (%s): built one for this run in %s "
                 "(%d records), so that every epoch is shuffled", rec, why, path, count)
        return path
    log.info("%s has no index: wrote %s (%d records), so that every epoch is shuffled", rec, beside, count)
    return beside


def validation_index(rec: str, given: Optional[str]) -> str:
    """Validation reads in order: its index only when there is one ('' for none, as MXNet's scripts pass)."""
    if given:
        if not os.path.isfile(given):
            raise DataError(f"--data-val-idx {given}: no such file")
        return given
    beside = index_path(rec)
    return beside if os.path.isfile(beside) else ""
