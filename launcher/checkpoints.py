"""Which checkpoints a job has: MXNet's PREFIX-symbol.json + PREFIX-NNNN.params (after epoch NNNN-1), and the
trainer's mid-epoch PREFIX-EEEE-BBBBBB.params (epoch EEEE in progress, BBBBBB batches of it done: rank 0's save
on a spot notice), on this machine or, for a remote job, on each worker host over SFTP. Only whole params files
count (launcher/paramsfile.py), so a writer killed mid-save never becomes the point a job resumes from.
`--resume` (rundir.resume_spec) and restarts (launcher/restarts.py) both ask here."""
from __future__ import annotations

import os
import posixpath
import re
from dataclasses import dataclass
from typing import Dict, Optional, Set, Union

from mxlaunch.launcher import paramsfile
from mxlaunch.launcher.hosts import Host, place
from mxlaunch.launcher.target import JobTarget

SYMBOL_SUFFIX = "-symbol.json"  # MXNet's PREFIX-symbol.json, written before any PREFIX-NNNN.params


@dataclass(frozen=True, order=True)
class Checkpoint:
    """A point a job can resume from, ordered as training goes: epoch checkpoint E (training resumes at the
    start of epoch E) < mid-epoch (E, B) (B > 0 batches of epoch E done) < epoch checkpoint E+1."""

    epoch: int
    batch: int = 0  # 0: the epoch checkpoint PREFIX-EEEE.params

    def params(self, prefix: str) -> str:
        return f"{prefix}-{self.epoch:04d}" + (f"-{self.batch:06d}" if self.batch else "") + ".params"

    def __str__(self) -> str:
        return f"epoch {self.epoch}" + (f" batch {self.batch}" if self.batch else "")


Found = Union[int, Checkpoint]  # what a listing gives: an epoch checkpoint may come as its plain epoch number


def as_checkpoint(found: Found) -> Checkpoint:
    return found if isinstance(found, Checkpoint) else Checkpoint(int(found))


def checkpoints_in(names, prefix_name: str) -> Set[Checkpoint]:
    """Every checkpoint among file names: PREFIX-NNNN.params and PREFIX-EEEE-BBBBBB.params (B > 0); none
    without PREFIX-symbol.json, which every checkpoint needs. Temporary files (`.params.tmp-<pid>`) never match."""
    names = list(names)
    if prefix_name + SYMBOL_SUFFIX not in names:
        return set()
    pattern = re.compile(re.escape(prefix_name) + r"-(\d+)(?:-(\d*[1-9]\d*))?\.params")  # a batch count > 0
    return {Checkpoint(int(m.group(1)), int(m.group(2) or 0)) for m in map(pattern.fullmatch, names) if m}


def checkpoint_epochs(names, prefix_name: str) -> Set[int]:
    """The N of every epoch checkpoint PREFIX-NNNN.params among file names (none without PREFIX-symbol.json)."""
    return {c.epoch for c in checkpoints_in(names, prefix_name) if not c.batch}


def _whole(points: set, is_whole) -> set:
    """`points` (epochs or Checkpoints) less the newest ones whose params file is not whole (`is_whole(point)`),
    down to the newest whole one: a writer killed mid-save, a full disk. Older ones are not read (the newest
    whole one wins)."""
    kept = set(points)
    for point in sorted(points, reverse=True):
        if is_whole(point):
            break
        kept.discard(point)
    return kept


def newest_checkpoint(prefix: str) -> Optional[int]:
    """The highest N of a whole PREFIX-NNNN.params on this machine (older ones when the newest is cut
    short), or None."""
    try:
        names = os.listdir(os.path.dirname(prefix) or ".")
    except OSError:
        return None
    epochs = _whole(checkpoint_epochs(names, os.path.basename(prefix)),
                    lambda e: paramsfile.local_complete(f"{prefix}-{e:04d}.params"))
    return max(epochs, default=None)


def newest_local(prefix: str) -> Optional[Checkpoint]:
    """The newest whole checkpoint (epoch or mid-epoch) of `prefix` on this machine, or None."""
    try:
        names = os.listdir(os.path.dirname(prefix) or ".")
    except OSError:
        return None
    found = _whole(checkpoints_in(names, os.path.basename(prefix)),
                   lambda c: paramsfile.local_complete(c.params(prefix)))
    return max(found, default=None)


def remote_points(target: JobTarget, hosts, prefix: str) -> Dict[Host, Set[Checkpoint]]:
    """Every checkpoint (epoch and mid-epoch) of `prefix` (a path on the hosts: relative ones are under the
    login directory, as sftp and the roles' workdir see them) on each host, over SSH with the target's
    settings; each host's newest params files are read over SFTP until a whole one is found."""
    from mxlaunch.launcher.ssh import SSHOptions, connect_all

    def whole_over(sftp, point: Checkpoint) -> bool:
        try:
            with sftp.open(point.params(prefix), "rb") as stream:
                return paramsfile.is_complete(stream, stream.stat().st_size)
        except IOError:
            return False

    connections = connect_all(hosts, target.ssh or SSHOptions())
    try:
        connections.raise_if_failed()
        found = {}
        for host, conn in connections.succeeded.items():
            with conn.sftp() as sftp:
                try:
                    names = sftp.listdir(posixpath.dirname(prefix) or ".")
                except IOError:  # no such directory: no checkpoint there
                    names = []
                found[host] = _whole(checkpoints_in(names, posixpath.basename(prefix)),
                                     lambda c: whole_over(sftp, c))
        return found
    finally:
        connections.close()


def remote_checkpoints(target: JobTarget, hosts, prefix: str) -> Dict[Host, Set[int]]:
    """The epoch checkpoints (their N) of `remote_points`, per host."""
    return {host: {c.epoch for c in points if not c.batch}
            for host, points in remote_points(target, hosts, prefix).items()}


def newest_everywhere(target: JobTarget, spec, prefix: str, remote=remote_points):
    """(the newest whole Checkpoint every worker can load or None, what each worker host has): on this
    machine, or, for a remote job, the newest one present on every worker host (each worker loads it;
    EFS makes them all see the same files). Mid-epoch checkpoints count, ordered by (epoch, batch).
    `--resume` and restarts (launcher/restarts.py) both ask here. `remote(target, hosts, prefix)` lists a
    remote job's checkpoints (epochs as Checkpoints or plain numbers)."""
    where = posixpath.join(spec.workdir, prefix)
    if target.local:
        return newest_local(where), {}
    workers = tuple(dict.fromkeys(place(spec.hosts, spec.num_workers, spec.num_servers).workers))
    found = {host: {as_checkpoint(f) for f in points} for host, points in remote(target, workers, where).items()}
    common = set.intersection(*found.values()) if found else set()
    return max(common, default=None), found


def checkpoint_time(target: JobTarget, spec, prefix: str, point: Optional[Found]) -> Optional[float]:
    """When checkpoint `point` was written (its params file's time), for this machine's files; None for a
    remote job's (read over SSH they would carry another clock) or no checkpoint."""
    if point is None or not target.local:
        return None
    try:
        return os.stat(as_checkpoint(point).params(posixpath.join(spec.workdir, prefix))).st_mtime
    except OSError:
        return None
