"""SIGUSR1 asks a trainer to "checkpoint now and stop": how a launcher saves the work of a host about to go away
(a spot interruption notice). No MXNet here: the handler is installed before MXNet is imported.

Protocol (every rank installs the handler; it only sets a flag, read by the training loop at batch boundaries):
- rank 0 with --model-prefix finishes the batch in flight, writes `PREFIX-EEEE-BBBBBB.params` (E = the epoch in
  progress, B = its batches done, 1 <= B < updates per epoch) and exits `STOPPED_FOR_CHECKPOINT`; if the
  request lands after an epoch's last batch it finishes that epoch (validation, metrics, the normal
  `PREFIX-(E+1)` checkpoint) and stops then. Resume with `--load-epoch E --load-batch B`.
- rank 0 without --model-prefix stops with the same status and no checkpoint.
- other ranks log that the request is for rank 0 and go on (the launcher stops them).
"""
from __future__ import annotations

import signal

from mxlaunch.exits import Exit

STOPPED_FOR_CHECKPOINT = Exit.STOPPED_FOR_CHECKPOINT  # 75, sysexits' EX_TEMPFAIL: resume from the checkpoint it wrote
REQUEST_SIGNAL = signal.SIGUSR1


class StopRequest:
    """Whether a stop was requested since the loop last took it. Set from the signal handler and nothing more:
    MXNet may be inside any operation when the signal lands."""

    def __init__(self) -> None:
        self.pending = False

    def _handle(self, signum, frame) -> None:
        self.pending = True

    def install(self) -> "StopRequest":
        """Replace SIGUSR1's default action (terminate) with setting the flag; main thread only. The signal may
        land on any of MXNet's threads: their interrupted system calls restart (SA_RESTART) instead of
        failing with EINTR, which Python's handlers otherwise ask for."""
        signal.signal(REQUEST_SIGNAL, self._handle)
        signal.siginterrupt(REQUEST_SIGNAL, False)
        return self

    def take(self) -> bool:
        """True once per request (then cleared): the loop acts on it or logs it once."""
        pending, self.pending = self.pending, False
        return pending


class StoppedForCheckpoint(Exception):
    """The loop stopped on request (after writing its checkpoint, if it has a prefix): exit STOPPED_FOR_CHECKPOINT."""
