"""`metrics.jsonl`: one JSON object per epoch, written by rank 0, read by `launch plot`."""
from __future__ import annotations

import json
import logging
import os
import secrets
from typing import List, Optional

from mxlaunch.errors import UsageError
from mxlaunch.files import MIB, OwnDirectory

log = logging.getLogger("trainer")
FILE_NAME = "metrics.jsonl"
READ_LIMIT = 64 * MIB  # a record per epoch, ~200 bytes: a larger file is not this one


def default_path(model_prefix: Optional[str]) -> Optional[str]:
    """Into $LAUNCH_RUN_DIR when the launcher set it, else next to the checkpoints, else nowhere."""
    run_dir = os.environ.get("LAUNCH_RUN_DIR")
    if run_dir:
        return os.path.join(run_dir, FILE_NAME)
    if model_prefix:
        return os.path.join(os.path.dirname(os.path.abspath(model_prefix)), FILE_NAME)
    return None


def read(path: str) -> List[dict]:
    if not os.path.isfile(path):
        return []
    with open(path) as stream:
        return [json.loads(line) for line in stream if line.strip()]


def _kept(directory: OwnDirectory, name: str, begin_epoch: int) -> List[str]:
    """The file's records, less a damaged line (a writer killed mid-line) and, for a run resumed at epoch E > 0,
    the records of epochs >= E at its end: the interrupted part of the training it continues, trained again now.
    Records before them (another run's too) stay."""
    try:
        data = directory.open(name, "rb", limit=READ_LIMIT)
    except FileNotFoundError:
        return []
    records = []
    for line in data.decode("utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        epoch = record.get("epoch") if isinstance(record, dict) else None
        records.append((epoch, line + "\n"))
    if begin_epoch > 0:
        while records and isinstance(records[-1][0], int) and records[-1][0] >= begin_epoch:
            records.pop()
    return [line for _, line in records]


class MetricsFile:
    """Appends one record per epoch; never removes another run's records. A run resumed from its checkpoint at
    epoch E > 0 (`--load-epoch E`, or launch train --max-restarts) replaces the records of epochs >= E at the end
    of the file, so that a job restarted from its checkpoint keeps each epoch once; a new run (from scratch, a
    pretrained model or epoch 0) appends after whatever is there.

    Written only into a directory no other user can plant files in, never through a link, read bounded
    (files.OwnDirectory). The metrics are a record of the training, not the training: a file that cannot be
    written is one warning, and training goes on (under dist_sync a dead rank 0 would take the whole job down)."""

    def __init__(self, path: Optional[str], begin_epoch: int):
        self.path = path
        self._directory: Optional[OwnDirectory] = None
        if path:
            folder, self._name = os.path.split(os.path.abspath(path))
            try:
                os.makedirs(folder, exist_ok=True)
                self._directory = OwnDirectory(folder)
                kept = _kept(self._directory, self._name, begin_epoch)
                tmp = f".{self._name}.{secrets.token_hex(8)}"  # renamed over it: a kill now keeps the old file whole
                with self._directory.open(tmp, "x") as stream:
                    stream.writelines(kept)
                self._directory.replace(tmp, self._name)
            except (OSError, ValueError, UsageError) as exc:
                self._give_up(exc)

    def _give_up(self, exc: Exception) -> None:
        why = exc.format_message() if isinstance(exc, UsageError) else getattr(exc, "strerror", None) or exc
        log.warning("cannot write metrics to %s (%s): training goes on without metrics.jsonl", self.path, why)
        self.path = None
        if self._directory:
            self._directory.close()
            self._directory = None

    def append(self, record: dict) -> None:
        if self.path and self._directory:
            try:
                with self._directory.open(self._name, "a") as stream:
                    stream.write(json.dumps(record) + "\n")
            except (OSError, UsageError) as exc:
                self._give_up(exc)
