"""Which checkpoints a job has: MXNet's PREFIX-symbol.json + PREFIX-NNNN.params, on this machine or, for a
remote job, on each worker host over SFTP; only whole params files count (launcher/paramsfile.py), so a writer
killed mid-save never becomes the epoch a job resumes from. `--resume` (rundir.resume_spec) and restarts
(launcher/restarts.py) both ask here."""
from __future__ import annotations

import os
import posixpath
import re
from typing import Dict, Optional, Set

from mxlaunch.launcher import paramsfile
from mxlaunch.launcher.hosts import Host, place
from mxlaunch.launcher.target import JobTarget

SYMBOL_SUFFIX = "-symbol.json"  # MXNet's PREFIX-symbol.json, written before any PREFIX-NNNN.params


def checkpoint_epochs(names, prefix_name: str) -> Set[int]:
    """The N of every PREFIX-NNNN.params among file names (MXNet's checkpoint naming); none without
    PREFIX-symbol.json, which every checkpoint needs. Temporary files (`.params.tmp-<pid>`) never match."""
    names = list(names)
    if prefix_name + SYMBOL_SUFFIX not in names:
        return set()
    pattern = re.compile(re.escape(prefix_name) + r"-(\d+)\.params")
    return {int(m.group(1)) for m in map(pattern.fullmatch, names) if m}


def _whole(epochs: Set[int], is_whole) -> Set[int]:
    """`epochs` less the newest ones whose params file is not whole (`is_whole(epoch)`), down to the newest
    whole one: a writer killed mid-save, a full disk. Older ones are not read (the newest whole one wins)."""
    kept = set(epochs)
    for epoch in sorted(epochs, reverse=True):
        if is_whole(epoch):
            break
        kept.discard(epoch)
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


def remote_checkpoints(target: JobTarget, hosts, prefix: str) -> Dict[Host, Set[int]]:
    """The checkpoint epochs of `prefix` (a path on the hosts: relative ones are under the login directory,
    as sftp and the roles' workdir see them) on each host, over SSH with the target's settings; each host's
    newest params files are read over SFTP until a whole one is found (a cut-short one is left out)."""
    from mxlaunch.launcher.ssh import SSHOptions, connect_all

    def whole_over(sftp, epoch: int) -> bool:
        try:
            with sftp.open(f"{prefix}-{epoch:04d}.params", "rb") as stream:
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
                found[host] = _whole(checkpoint_epochs(names, posixpath.basename(prefix)),
                                     lambda e: whole_over(sftp, e))
        return found
    finally:
        connections.close()


def newest_everywhere(target: JobTarget, spec, prefix: str, remote=remote_checkpoints):
    """(the newest whole checkpoint every worker can load or None, what each worker host has): on this
    machine, or, for a remote job, the newest epoch present on every worker host (each worker loads it;
    EFS makes them all see the same files). `--resume` and restarts (launcher/restarts.py) both ask here."""
    where = posixpath.join(spec.workdir, prefix)
    if target.local:
        return newest_checkpoint(where), {}
    workers = tuple(dict.fromkeys(place(spec.hosts, spec.num_workers, spec.num_servers).workers))
    found = remote(target, workers, where)
    common = set.intersection(*found.values()) if found else set()
    return max(common, default=None), found


def checkpoint_time(target: JobTarget, spec, prefix: str, epoch: Optional[int]) -> Optional[float]:
    """When checkpoint `epoch` was written (its params file's time), for this machine's files; None for a
    remote job's (read over SSH they would carry another clock) or no checkpoint."""
    if epoch is None or not target.local:
        return None
    try:
        return os.stat(f"{posixpath.join(spec.workdir, prefix)}-{epoch:04d}.params").st_mtime
    except OSError:
        return None
