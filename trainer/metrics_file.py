"""`metrics.jsonl`: one JSON object per epoch, written by rank 0, read by `launch plot`."""
from __future__ import annotations

import json
import logging
import os
from typing import List, Optional

log = logging.getLogger("trainer")


def default_path(model_prefix: Optional[str]) -> Optional[str]:
    """Into $LAUNCH_RUN_DIR when the launcher set it, else next to the checkpoints, else nowhere."""
    run_dir = os.environ.get("LAUNCH_RUN_DIR")
    if run_dir:
        return os.path.join(run_dir, "metrics.jsonl")
    if model_prefix:
        return os.path.join(os.path.dirname(os.path.abspath(model_prefix)), "metrics.jsonl")
    return None


def read(path: str) -> List[dict]:
    if not os.path.isfile(path):
        return []
    with open(path) as stream:
        return [json.loads(line) for line in stream if line.strip()]


def _kept(path: str, begin_epoch: int) -> List[str]:
    """The file's records, less a damaged line (a writer killed mid-line) and, for a run resumed at epoch E > 0,
    the records of epochs >= E at its end: the interrupted part of the training it continues, trained again now.
    Records before them (another run's too) stay."""
    if not os.path.isfile(path):
        return []
    records = []
    with open(path) as stream:
        for line in stream:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            epoch = record.get("epoch") if isinstance(record, dict) else None
            records.append((epoch, line if line.endswith("\n") else line + "\n"))
    if begin_epoch > 0:
        while records and isinstance(records[-1][0], int) and records[-1][0] >= begin_epoch:
            records.pop()
    return [line for _, line in records]


class MetricsFile:
    """Appends one record per epoch; never removes another run's records. A run resumed from its checkpoint at
    epoch E > 0 (`--load-epoch E`, or launch train --max-restarts) replaces the records of epochs >= E at the end
    of the file, so that a job restarted from its checkpoint keeps each epoch once; a new run (from scratch, a
    pretrained model or epoch 0) appends after whatever is there.

    The metrics are a record of the training, not the training: a file that cannot be written is one
    warning, and training goes on (under dist_sync a dead rank 0 would take the whole job down)."""

    def __init__(self, path: Optional[str], begin_epoch: int):
        self.path = path
        if path:
            try:
                os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
                kept = _kept(path, begin_epoch)
                tmp = f"{path}.tmp-{os.getpid()}"
                with open(tmp, "w") as stream:  # renamed over it: a kill now keeps the old file whole
                    stream.writelines(kept)
                os.replace(tmp, path)
            except (OSError, ValueError) as exc:
                self._give_up(exc)

    def _give_up(self, exc: Exception) -> None:
        log.warning("cannot write metrics to %s (%s): training goes on without metrics.jsonl", self.path,
                    getattr(exc, "strerror", None) or exc)
        self.path = None

    def append(self, record: dict) -> None:
        if self.path:
            try:
                with open(self.path, "a") as stream:
                    stream.write(json.dumps(record) + "\n")
            except OSError as exc:
                self._give_up(exc)
