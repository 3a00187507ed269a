"""Training progress, read from what MXNet rank 0 (worker-0) logs: MXNet's own line formats
(`Epoch[0] Batch [20-40]\tSpeed: ...`, `Epoch[0] Validation-accuracy=...`, `Epoch[0] Learning rate=...`) and
the trainer's plan line (`rank 0 of 2: N examples, B updates ... per epoch, epochs a..b`), which gives the
totals. A workload that logs none of them simply shows no progress.

`Progress.feed` takes one line; `status()` is the live line for a terminal, `epoch_line(e)` the plain line
written once per epoch without one. The per-epoch values also stand in for metrics.jsonl when a workload
does not write one (launcher/jobs/summary.py).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional

NUMBER = r"([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|nan|inf)"
PLAN = re.compile(r"rank \d+ of \d+: \d+ examples, (\d+) updates .*per epoch, epochs (\d+)\.\.(\d+)")
BATCH = re.compile(r"Epoch\[(\d+)\] Batch \[\d+-(\d+)\]\s+Speed: " + NUMBER + " samples/sec")
LEARNING_RATE = re.compile(r"Epoch\[(\d+)\] Learning rate=" + NUMBER)
TRAIN = re.compile(r"Epoch\[(\d+)\] Train-accuracy=" + NUMBER)
TIME_COST = re.compile(r"Epoch\[(\d+)\] Time cost=" + NUMBER)
VALIDATION = re.compile(r"Epoch\[(\d+)\] Validation-accuracy=" + NUMBER)


def duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


@dataclass
class EpochRecord:
    """One epoch as rank 0 logged it (the fields of a metrics.jsonl record)."""

    epoch: int
    lr: Optional[float] = None
    train: Optional[float] = None
    validation: Optional[float] = None
    seconds: Optional[float] = None
    speed: Optional[float] = None


@dataclass
class Progress:
    batches: Optional[int] = None  # updates per epoch
    first_epoch: Optional[int] = None
    last_epoch: Optional[int] = None  # the job's last epoch (epochs first..last)
    epoch: Optional[int] = None  # the epoch running now
    batch: Optional[int] = None  # batches done in it
    speed: Optional[float] = None
    lr: Optional[float] = None
    records: Dict[int, EpochRecord] = field(default_factory=dict)
    epoch_started: Optional[float] = None
    durations: List[float] = field(default_factory=list)  # wall seconds of finished epochs (validation included)
    finished: Optional[int] = None  # the newest finished epoch (time cost seen)
    reported: Optional[int] = None  # the newest epoch whose plain line was given out

    def _record(self, epoch: int) -> EpochRecord:
        return self.records.setdefault(epoch, EpochRecord(epoch))

    def _enter(self, epoch: int, now: float) -> None:
        if self.epoch == epoch:
            return
        if self.epoch is not None and self.epoch_started is not None and epoch > self.epoch:
            self.durations.append(now - self.epoch_started)
        if self.epoch is not None or self.epoch_started is None:  # the first epoch began at the plan line
            self.epoch_started = now
        self.epoch, self.batch = epoch, 0
        if self.first_epoch is None:
            self.first_epoch = epoch

    def feed(self, text: str, now: float) -> bool:
        """Take one line of rank 0's; whether it changed anything."""
        if "Epoch[" not in text and " per epoch, epochs " not in text:
            return False
        m = PLAN.search(text)
        if m:
            self.batches, self.first_epoch, self.last_epoch = int(m.group(1)), int(m.group(2)), int(m.group(3))
            self.epoch_started = now
            return True
        m = BATCH.search(text)
        if m:
            self._enter(int(m.group(1)), now)
            self.batch, self.speed = int(m.group(2)), float(m.group(3))
            self._record(self.epoch).speed = self.speed
            return True
        m = LEARNING_RATE.search(text)
        if m:
            self._enter(int(m.group(1)), now)
            self.lr = self._record(self.epoch).lr = float(m.group(2))
            return True
        for pattern, name in ((TRAIN, "train"), (TIME_COST, "seconds"), (VALIDATION, "validation")):
            m = pattern.search(text)
            if m:
                epoch = int(m.group(1))
                record = self._record(epoch)
                setattr(record, name, float(m.group(2)))
                if record.lr is None:
                    record.lr = self.lr
                if name == "seconds":
                    self.finished = max(epoch, self.finished if self.finished is not None else epoch)
                    if self.batches:
                        self.batch = self.batches
                return True
        return False

    # ------------------------------------------------------------------------------------------ views
    @property
    def last_validation(self) -> Optional[EpochRecord]:
        done = [r for r in self.records.values() if r.validation is not None]
        return max(done, key=lambda r: r.epoch) if done else None

    def total_epochs(self) -> Optional[int]:
        return None if self.last_epoch is None else self.last_epoch + 1

    def eta(self, now: float) -> Optional[float]:
        total, epoch = self.total_epochs(), self.epoch
        if total is None or epoch is None or self.epoch_started is None:
            return None
        fraction = min(1.0, self.batch / self.batches) if self.batches and self.batch is not None else 0.0
        if self.durations:
            per_epoch = sum(self.durations) / len(self.durations)
        elif fraction > 0:
            per_epoch = (now - self.epoch_started) / fraction
        else:
            return None
        return max(0.0, (total - epoch - fraction) * per_epoch)

    def status(self, now: float) -> Optional[str]:
        """The live line: epoch e/E, batch b/B, samples/s, ETA, last validation accuracy, lr."""
        if self.epoch is None:
            return None
        total = self.total_epochs()
        parts = [f"epoch {self.epoch + 1}/{total}" if total else f"Epoch[{self.epoch}]"]
        if self.batch is not None:
            parts.append(f"batch {self.batch}/{self.batches}" if self.batches else f"batch {self.batch}")
        if self.speed is not None:
            parts.append(f"{self.speed:.0f} samples/s")
        eta = self.eta(now)
        if eta is not None:
            parts.append(f"ETA {duration(eta)}")
        val = self.last_validation
        if val is not None:
            parts.append(f"validation {val.validation:.4f} (Epoch[{val.epoch}])")
        if self.lr is not None:
            parts.append(f"lr {self.lr:g}")
        return "  ".join(parts)

    def epochs_to_report(self, final: bool = False) -> List[int]:
        """Finished epochs whose plain line is due: once its validation is in, or once a later epoch
        began (it had none), or at the end of the job."""
        if self.finished is None:
            return []
        start = (self.reported + 1) if self.reported is not None else (self.first_epoch or 0)
        due = []
        for e in range(start, self.finished + 1):
            record = self.records.get(e)
            if record is None:
                continue
            if record.validation is not None or final or (self.epoch is not None and self.epoch > e):
                due.append(e)
            else:
                break
        if due:
            self.reported = due[-1]
        return due

    def epoch_line(self, epoch: int, now: float) -> str:
        r = self.records[epoch]
        total = self.total_epochs()
        parts = [f"Epoch[{epoch}]" + (f" {epoch + 1}/{total}" if total else "")]
        for label, value in (("train", r.train), ("validation", r.validation)):
            if value is not None:
                parts.append(f"{label} {value:.4f}")
        if r.lr is not None:
            parts.append(f"lr {r.lr:g}")
        if r.speed is not None:
            parts.append(f"{r.speed:.0f} samples/s")
        if r.seconds is not None:
            parts.append(f"{r.seconds:.1f}s")
        eta = self.eta(now)
        if eta is not None and total is not None and epoch + 1 < total:
            parts.append(f"ETA {duration(eta)}")
        return "  ".join(parts)
