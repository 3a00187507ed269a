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


class MetricsFile:
    """Appends epochs; on resume at epoch E the records of epochs >= E (from the lost run) are dropped.

    The metrics are a record of the training, not the training: a file that cannot be written is one
    warning, and training goes on (under dist_sync a dead rank 0 would take the whole job down)."""

    def __init__(self, path: Optional[str], begin_epoch: int):
        self.path = path
        if path:
            try:
                os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
                kept = [r for r in read(path) if r.get("epoch", 0) < begin_epoch]
                with open(path, "w") as stream:
                    stream.writelines(json.dumps(r) + "\n" for r in kept)
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
