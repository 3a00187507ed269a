"""Which checkpoints a job has: MXNet's PREFIX-symbol.json + PREFIX-NNNN.params (after epoch NNNN-1), and the
trainer's mid-epoch PREFIX-EEEE-BBBBBB.params (epoch EEEE in progress, BBBBBB batches of it done: rank 0's save
on a spot notice), on this machine or, for a remote job, on each worker host over SFTP. Only whole params files
count (launcher/paramsfile.py), so a writer killed mid-save never becomes the point a job resumes from.
`--resume` (rundir.resume_spec) and restarts (launcher/restarts.py) both ask here.

A new job's --model-prefix may already hold another run's checkpoints (the same command re-run with other
settings): `older_checkpoints` records them (each params file's Stamp) before attempt 1, and a restart resumes
only from what the job wrote since (`newest_of_job`), never from someone else's model."""
from __future__ import annotations

import os
import posixpath
import re
from dataclasses import dataclass
from typing import Callable, Dict, FrozenSet, Mapping, Optional, Set, Tuple, Union

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
Stamp = Tuple[int, int]  # a params file's (mtime, size): the trainer writes by temp + rename, so a rewrite changes it
Where = Optional[Host]  # the host a file was listed on; None: this machine
Mine = Callable[[Where, Checkpoint, Stamp], bool]  # whether a listed checkpoint may be resumed from


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


def local_stamps(prefix: str) -> Dict[Checkpoint, Stamp]:
    """Every checkpoint of `prefix` on this machine, with its params file's Stamp (mtime in ns)."""
    try:
        names = os.listdir(os.path.dirname(prefix) or ".")
    except OSError:
        return {}
    found = {}
    for point in checkpoints_in(names, os.path.basename(prefix)):
        try:
            st = os.stat(point.params(prefix))
        except OSError:  # gone since the listing
            continue
        found[point] = (st.st_mtime_ns, st.st_size)
    return found


def _kept(stamps: Mapping[Checkpoint, Stamp], where: Where, mine: Optional[Mine]) -> Set[Checkpoint]:
    return {point for point, stamp in stamps.items() if mine is None or mine(where, point, stamp)}


def newest_local(prefix: str, mine: Optional[Mine] = None) -> Optional[Checkpoint]:
    """The newest whole checkpoint (epoch or mid-epoch) of `prefix` on this machine, or None; only those
    `mine` accepts, when given (before the wholeness check: an older run's whole file must not hide ours)."""
    found = _whole(_kept(local_stamps(prefix), None, mine), lambda c: paramsfile.local_complete(c.params(prefix)))
    return max(found, default=None)


def _on_each(target: JobTarget, hosts, read) -> dict:
    """{host: read(host, sftp)} for each host, over SSH with the target's settings."""
    from mxlaunch.launcher.ssh import SSHOptions, connect_all

    connections = connect_all(hosts, target.ssh or SSHOptions())
    try:
        connections.raise_if_failed()
        found = {}
        for host, conn in connections.succeeded.items():
            with conn.sftp() as sftp:
                found[host] = read(host, sftp)
        return found
    finally:
        connections.close()


def _sftp_stamps(sftp, prefix: str) -> Dict[Checkpoint, Stamp]:
    try:
        entries = {e.filename: e for e in sftp.listdir_attr(posixpath.dirname(prefix) or ".")}
    except IOError:  # no such directory: no checkpoint there
        return {}
    found = {}
    for point in checkpoints_in(entries, posixpath.basename(prefix)):
        attrs = entries[posixpath.basename(point.params(prefix))]
        found[point] = (attrs.st_mtime, attrs.st_size)  # SFTP's mtime: whole seconds
    return found


def remote_stamps(target: JobTarget, hosts, prefix: str) -> Dict[Host, Dict[Checkpoint, Stamp]]:
    """Every checkpoint of `prefix` on each host, with its params file's Stamp, over SFTP."""
    return _on_each(target, hosts, lambda host, sftp: _sftp_stamps(sftp, prefix))


def remote_points(target: JobTarget, hosts, prefix: str, mine: Optional[Mine] = None) -> Dict[Host, Set[Checkpoint]]:
    """Every checkpoint (epoch and mid-epoch) of `prefix` (a path on the hosts: relative ones are under the
    login directory, as sftp and the roles' workdir see them) on each host, over SSH with the target's
    settings; only those `mine` accepts, when given; each host's newest params files are read over SFTP
    until a whole one is found."""
    def whole_over(sftp, point: Checkpoint) -> bool:
        try:
            with sftp.open(point.params(prefix), "rb") as stream:
                return paramsfile.is_complete(stream, stream.stat().st_size)
        except IOError:
            return False

    return _on_each(target, hosts, lambda host, sftp: _whole(_kept(_sftp_stamps(sftp, prefix), host, mine),
                                                             lambda c: whole_over(sftp, c)))


def remote_checkpoints(target: JobTarget, hosts, prefix: str) -> Dict[Host, Set[int]]:
    """The epoch checkpoints (their N) of `remote_points`, per host."""
    return {host: {c.epoch for c in points if not c.batch}
            for host, points in remote_points(target, hosts, prefix).items()}


def _workers(spec) -> Tuple[Host, ...]:
    return tuple(dict.fromkeys(place(spec.hosts, spec.num_workers, spec.num_servers).workers))


def newest_everywhere(target: JobTarget, spec, prefix: str, remote=remote_points, mine: Optional[Mine] = None):
    """(the newest whole Checkpoint every worker can load or None, what each worker host has): on this
    machine, or, for a remote job, the newest one present on every worker host (each worker loads it;
    EFS makes them all see the same files). Mid-epoch checkpoints count, ordered by (epoch, batch).
    `--resume` and restarts (launcher/restarts.py) both ask here. `remote(target, hosts, prefix[, mine])`
    lists a remote job's checkpoints (epochs as Checkpoints or plain numbers). `mine`: only these count."""
    where = posixpath.join(spec.workdir, prefix)
    if target.local:
        return newest_local(where, mine), {}
    listed = remote(target, _workers(spec), where) if mine is None else remote(target, _workers(spec), where, mine)
    found = {host: {as_checkpoint(f) for f in points} for host, points in listed.items()}
    common = set.intersection(*found.values()) if found else set()
    return max(common, default=None), found


@dataclass(frozen=True)
class Older:
    """The checkpoints a job's --model-prefix held when the job started, per host listed (None: this
    machine), each with its params file's Stamp. The job's own are the others: absent from this record, or
    rewritten since (another Stamp). A host the record never saw (an instance replaced since) is judged
    against every recorded host's files: on EFS they are the same files. `loads`: the checkpoint the command
    itself loads (--load-epoch E [--load-batch B]), which it may still fall back to."""

    files: Mapping[Where, FrozenSet[Tuple[Checkpoint, Stamp]]]
    loads: Optional[Checkpoint] = None

    def mine(self, where: Where, point: Checkpoint, stamp: Stamp) -> bool:
        if point == self.loads:
            return True
        seen = self.files[where] if where in self.files else frozenset().union(*self.files.values())
        return (point, stamp) not in seen


def older_checkpoints(target: JobTarget, spec, prefix: str, loads: Optional[Tuple[int, int]] = None,
                      remote=remote_stamps) -> Older:
    """What `prefix` holds before a new job's first attempt: on this machine, or on every worker host
    (`remote(target, hosts, prefix)`: {host: {Checkpoint: Stamp}}, over SFTP)."""
    where = posixpath.join(spec.workdir, prefix)
    listed = {None: local_stamps(where)} if target.local else remote(target, _workers(spec), where)
    return Older({host: frozenset(stamps.items()) for host, stamps in listed.items()},
                 Checkpoint(*loads) if loads else None)


def newest_of_job(target: JobTarget, spec, prefix: str, older: Optional[Older],
                  remote=remote_points) -> Tuple[Optional[Checkpoint], int]:
    """(the newest whole checkpoint of this job every worker can load, or None; how many checkpoints older
    than the job were passed over): `newest_everywhere` that counts only what `older.mine` accepts (all of
    them when `older` is None: a resumed job continues from whatever is there)."""
    if older is None:
        return newest_everywhere(target, spec, prefix, remote)[0], 0
    ignored: Set[Checkpoint] = set()

    def mine(where: Where, point: Checkpoint, stamp: Stamp) -> bool:
        if older.mine(where, point, stamp):
            return True
        ignored.add(point)
        return False

    point, _ = newest_everywhere(target, spec, prefix, remote, mine)
    return point, len(ignored)


def checkpoint_time(target: JobTarget, spec, prefix: str, point: Optional[Found]) -> Optional[float]:
    """When checkpoint `point` was written (its params file's time), for this machine's files; None for a
    remote job's (read over SSH they would carry another clock) or no checkpoint."""
    if point is None or not target.local:
        return None
    try:
        return os.stat(as_checkpoint(point).params(posixpath.join(spec.workdir, prefix))).st_mtime
    except OSError:
        return None
