"""Which checkpoints a job has (the rules are infra/transport/remote/checkpoint_scan.py's: MXNet's epoch checkpoints
PREFIX-NNNN.params and the trainer's mid-epoch PREFIX-EEEE-BBBBBB.params, each with PREFIX-symbol.json, and only
whole params files count, so a writer killed mid-save never becomes the point a job resumes from), on this
machine or, for a remote job, on each worker host: checkpoint_scan runs there, one SSH exec per host, all hosts
at once, and reads the files where they are. `--resume` (resume.resume_spec) and restarts
(launcher/jobs/restarts.py) both ask here.

A new job's --model-prefix may already hold another run's checkpoints (the same command re-run with other
settings): `older_checkpoints` records them (each params file's Stamp) before attempt 1, and a restart resumes
only from what the job wrote since (`newest_of_job`), never from someone else's model."""
from __future__ import annotations

import json
import os
import posixpath
import select
import time
from dataclasses import dataclass
from typing import Callable, Dict, FrozenSet, List, Mapping, Optional, Set, Tuple

from mxlaunch.errors import CommandError
from mxlaunch.infra.transport.hosts import Host, place
from mxlaunch.infra.transport.remote import checkpoint_scan as scan, source
from mxlaunch.infra.transport.target import JobTarget, default_python

SCAN_TIMEOUT = 120.0  # one host's listing and checks (each newest params file: a few small reads per array)


@dataclass(frozen=True, order=True)
class Checkpoint:
    """A point a job can resume from, ordered as training goes: epoch checkpoint E (training resumes at the
    start of epoch E) < mid-epoch (E, B) (B > 0 batches of epoch E done) < epoch checkpoint E+1."""

    epoch: int
    batch: int = 0  # 0: the epoch checkpoint PREFIX-EEEE.params

    def params(self, prefix: str) -> str:
        return scan.params_name(prefix, self.epoch, self.batch)

    def __str__(self) -> str:
        """The one way a position is said: "epoch E", or "epoch E batch B" for a mid-epoch one."""
        return f"epoch {self.epoch}" + (f" batch {self.batch}" if self.batch else "")


Stamp = Tuple[int, int]  # a params file's (mtime, size): the trainer writes by temp + rename, so a rewrite changes it
Where = Optional[Host]  # the host a file was listed on; None: this machine
Mine = Callable[[Where, Checkpoint, Stamp], bool]  # whether a listed checkpoint may be resumed from
Listing = Dict[Checkpoint, Stamp]


def _kept(stamps: Listing, where: Where, mine: Optional[Mine]) -> List[Checkpoint]:
    """The checkpoints `mine` accepts (all without it), newest first: the order their wholeness is checked in
    (before that check: an older run's whole file must not hide ours)."""
    return sorted((p for p, stamp in stamps.items() if mine is None or mine(where, p, stamp)), reverse=True)


class Kept(set):
    """A host's checkpoints down to its newest whole one; `passed`: the newer ones that are not whole (a writer
    killed mid-save, a full disk, a damaged file), which a resume passes over and says so."""

    def __init__(self, points=(), passed=()):
        super().__init__(points)
        self.passed = frozenset(passed)


def _down_to(kept: List[Checkpoint], whole: Optional[Checkpoint]) -> Kept:
    """`kept` less its newest ones that are not whole, down to the newest whole one `whole` (none: nothing)."""
    return Kept((p for p in kept if whole is not None and p <= whole),
                (p for p in kept if whole is None or p > whole))


def passed_over_text(prefix: str, point: Optional[Checkpoint], passed) -> Optional[str]:
    """One line for a resume that passes over incomplete checkpoints newer than the one it takes (None: none)."""
    newer = sorted(p for p in passed if point is None or p > point)
    if not newer:
        return None
    taken = f"from {point}, the newest whole one" if point is not None else "with no whole checkpoint left"
    return (f"checkpoint {newer[-1]} of {prefix} is incomplete (cut short or damaged)"
            + (f", as are {len(newer) - 1} more since {newer[0]}" if len(newer) > 1 else "") + f": resuming {taken}")


def local_stamps(prefix: str) -> Listing:
    """Every checkpoint of `prefix` on this machine, with its params file's Stamp (mtime in ns)."""
    return {Checkpoint(e, b): (mtime, size) for e, b, mtime, size in scan.listing(prefix)}


def newest_local(prefix: str, mine: Optional[Mine] = None) -> Optional[Checkpoint]:
    """The newest whole checkpoint (epoch or mid-epoch) of `prefix` on this machine, or None; only those
    `mine` accepts, when given."""
    return max(local_points(prefix, mine), default=None)


def local_points(prefix: str, mine: Optional[Mine] = None) -> Kept:
    """This machine's checkpoints of `prefix` down to the newest whole one (with the newer ones passed over)."""
    kept = _kept(local_stamps(prefix), None, mine)
    whole = scan.first_whole(prefix, [(p.epoch, p.batch) for p in kept])
    return _down_to(kept, Checkpoint(*whole) if whole else None)


# --------------------------------------------------------------------------------- on the worker hosts
Choose = Callable[[Host, Listing], List[Checkpoint]]  # which of a host's checkpoints to check, newest first


class _Reader:
    """checkpoint_scan's reply lines from one channel, each wait bounded by one deadline."""

    def __init__(self, channel, deadline: float):
        self.channel, self.deadline, self.buf = channel, deadline, bytearray()

    def line(self) -> Optional[str]:
        """The next stdout line; None at the end of the program's output."""
        while b"\n" not in self.buf:
            if self.channel.recv_ready():
                self.buf += self.channel.recv(65536)
            elif self.channel.eof_received or self.channel.closed:
                return None
            elif time.monotonic() >= self.deadline:
                raise TimeoutError
            else:
                select.select([self.channel], [], [], 0.05)
        line, _, rest = self.buf.partition(b"\n")
        self.buf = rest
        return line.decode(errors="replace")

    def reply(self) -> dict:
        while True:  # lines before the reply (a chatty sitecustomize) are not ours
            line = self.line()
            if line is None:
                raise EOFError
            found = scan.parse_reply(line)
            if found is not None:
                return found


def _why(channel, python: str) -> str:
    """Why checkpoint_scan gave no reply: its interpreter's exit status and last stderr line."""
    err = bytearray()
    while channel.recv_stderr_ready():
        err += channel.recv_stderr(65536)
    rc = channel.recv_exit_status() if channel.status_event.wait(5) else None
    if rc == 127:
        return f"interpreter {python} not found"
    tail = " ".join(err.decode(errors="replace").strip().splitlines()[-1:])
    return f"{python} ended without a reply" + (f" (exit status {rc})" if rc is not None else "") + (
        f": {tail}" if tail else "")


def _scan_host(conn, python: str, prefix: str, choose: Optional[Choose],
               timeout: float) -> Tuple[Listing, Optional[Checkpoint]]:
    """checkpoint_scan on one host, one exec: (its checkpoints with their Stamps, the first whole one of those
    `choose` picks; None without `choose`, or when none is)."""
    channel = conn.open_with_pid([python, "-c", source("checkpoint_scan")])
    reader, pid = _Reader(channel, time.monotonic() + timeout), None
    try:
        while pid is None:  # lines before the wrapper's pid line are a shell start-up file's
            line = reader.line()
            if line is None:
                raise EOFError
            pid = conn.pid_in(channel, line)
        channel.sendall((json.dumps({"prefix": prefix}) + "\n").encode())
        stamps = {Checkpoint(e, b): (mtime, size) for e, b, mtime, size in reader.reply()["found"]}
        candidates = choose(conn.host, stamps) if choose else []
        if candidates:
            channel.sendall((json.dumps({"check": [[p.epoch, p.batch] for p in candidates]}) + "\n").encode())
        channel.shutdown_write()
        whole = reader.reply()["whole"] if candidates else None
        return stamps, Checkpoint(*whole) if whole else None
    except TimeoutError:  # a hung file system: the program must not stay behind
        conn.kill_group(pid or "")
        raise CommandError(f"no answer within {timeout:g}s") from None
    except (EOFError, OSError):  # it ended without a reply (a missing interpreter may end before the request)
        raise CommandError(_why(channel, python)) from None
    finally:
        channel.close()


def _on_each(target: JobTarget, hosts, prefix: str, choose: Optional[Choose] = None,
             timeout: float = SCAN_TIMEOUT) -> Dict[Host, Tuple[Listing, Optional[Checkpoint]]]:
    """`_scan_host` on every host at once, over SSH with the target's settings; a host that cannot be read
    fails the whole search (one line per host): a checkpoint that is not on every worker is no resume point."""
    from mxlaunch.infra.transport.ssh import SSHOptions, connect_all, parallel  # heavy

    python = target.python or default_python()
    connections = connect_all(hosts, target.ssh or SSHOptions())
    try:
        connections.raise_if_failed()
        found = parallel(lambda host: _scan_host(connections[host], python, prefix, choose, timeout),
                         connections.succeeded, timeout=timeout + 15, name="checkpoint-scan")
        failed = [f"{h.target}: {' '.join(str(r).split())}" for h, r in found.items() if isinstance(r, BaseException)]
        if failed:
            raise CommandError(f"cannot read the checkpoints {prefix}-*.params ({'; '.join(failed)})")
        return found
    finally:
        connections.close()


def remote_stamps(target: JobTarget, hosts, prefix: str) -> Dict[Host, Listing]:
    """Every checkpoint of `prefix` on each host, with its params file's Stamp (mtime in whole seconds)."""
    return {host: stamps for host, (stamps, _) in _on_each(target, hosts, prefix).items()}


def remote_points(target: JobTarget, hosts, prefix: str, mine: Optional[Mine] = None) -> Dict[Host, Set[Checkpoint]]:
    """Every checkpoint (epoch and mid-epoch) of `prefix` (a path on the hosts: relative ones are under the
    login directory) on each host, less the newest ones that are not whole; only those `mine` accepts, when
    given. Each host reads its own files: its newest params files are checked there until a whole one is found."""
    kept: Dict[Host, List[Checkpoint]] = {}

    def choose(host: Host, stamps: Listing) -> List[Checkpoint]:
        kept[host] = _kept(stamps, host, mine)
        return kept[host]

    return {host: _down_to(kept[host], whole) for host, (_, whole) in _on_each(target, hosts, prefix, choose).items()}


def _workers(spec) -> Tuple[Host, ...]:
    return tuple(dict.fromkeys(place(spec.hosts, spec.num_workers, spec.num_servers).workers))


def newest_everywhere(target: JobTarget, spec, prefix: str, remote=remote_points, mine: Optional[Mine] = None,
                      said: Optional[Callable[[str], None]] = None):
    """(the newest whole Checkpoint every worker can load or None, what each worker host has): on this
    machine, or, for a remote job, the newest one present on every worker host (each worker loads it;
    EFS makes them all see the same files). Mid-epoch checkpoints count, ordered by (epoch, batch).
    `--resume` and restarts (launcher/jobs/restarts.py) both ask here. `remote(target, hosts, prefix[, mine])`
    lists a remote job's checkpoints (remote_points). `mine`: only these count. `said` gets one line when newer
    checkpoints were passed over because they are not whole."""
    where = posixpath.join(spec.workdir, prefix)
    if target.local:
        found = {None: local_points(where, mine)}
    else:
        found = remote(target, _workers(spec), where) if mine is None else remote(target, _workers(spec), where,
                                                                                 mine)
    common = set.intersection(*map(set, found.values())) if found else set()
    point = max(common, default=None)
    text = passed_over_text(prefix, point, set().union(*(getattr(k, "passed", ()) for k in found.values())))
    if said and text:
        said(text)
    return point, ({} if target.local else found)


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
    (`remote(target, hosts, prefix)`: {host: {Checkpoint: Stamp}}, remote_stamps)."""
    where = posixpath.join(spec.workdir, prefix)
    listed = {None: local_stamps(where)} if target.local else remote(target, _workers(spec), where)
    return Older({host: frozenset(stamps.items()) for host, stamps in listed.items()},
                 Checkpoint(*loads) if loads else None)


def newest_of_job(target: JobTarget, spec, prefix: str, older: Optional[Older], remote=remote_points,
                  said: Optional[Callable[[str], None]] = None) -> Tuple[Optional[Checkpoint], int]:
    """(the newest whole checkpoint of this job every worker can load, or None; how many checkpoints older
    than the job were passed over): `newest_everywhere` that counts only what `older.mine` accepts (all of
    them when `older` is None: a resumed job continues from whatever is there)."""
    if older is None:
        return newest_everywhere(target, spec, prefix, remote, said=said)[0], 0
    ignored: Set[Checkpoint] = set()

    def mine(where: Where, point: Checkpoint, stamp: Stamp) -> bool:
        if older.mine(where, point, stamp):
            return True
        ignored.add(point)
        return False

    point, _ = newest_everywhere(target, spec, prefix, remote, mine, said)
    return point, len(ignored)


def checkpoint_time(target: JobTarget, spec, prefix: str, point: Optional[Checkpoint]) -> Optional[float]:
    """When checkpoint `point` was written (its params file's time), for this machine's files; None for a
    remote job's (read over SSH they would carry another clock) or no checkpoint."""
    if point is None or not target.local:
        return None
    try:
        return os.stat(point.params(posixpath.join(spec.workdir, prefix))).st_mtime
    except OSError:
        return None
