"""--profile-worker-suffix and --profile-server-suffix: MXNet's profiler, per role, as common/fit.py starts it.

A worker writes its profile where the run's metrics.jsonl goes ($LAUNCH_RUN_DIR, else beside the checkpoints,
else the working directory): `rankR_SUFFIX` with several workers, else `SUFFIX`. Rank 0 starts the servers'
profilers (every worker did in MXNet; once is enough); each server writes `rankR_SUFFIX` into its working
directory, which is its $LAUNCH_RUN_DIR under `launch train` (trainer/cli.py). Profiling stops and the files
are written when training ends (MXNet's fit.py set the state to 'run' again there, so nothing was dumped).
"""
from __future__ import annotations

import atexit
import logging
import os
import re
from typing import Optional, Tuple

from mxlaunch.errors import UsageError
from mxlaunch.files import Replacement
from mxlaunch.trainer import metrics_file

log = logging.getLogger("trainer")


class Profiles:
    def __init__(self, worker_file: Optional[Replacement], servers: bool):
        self.worker_file, self.servers = worker_file, servers

    def stop(self) -> None:
        import mxnet as mx  # heavy

        if self.worker_file:
            mx.profiler.set_state(state="stop", profile_process="worker")
            mx.profiler.dump(profile_process="worker")
            self.worker_file.commit()
            log.info("profile written to %s", self.worker_file.path)
        if self.servers:
            mx.profiler.set_state(state="stop", profile_process="server")
            mx.profiler.dump(profile_process="server")
            log.info("servers' profiles written (rankR_SUFFIX in each server's run directory)")


def worker_file_name(suffix: str, rank: int, num_workers: int) -> str:
    return f"rank{rank}_{suffix}" if num_workers > 1 else suffix


def file_names(worker_suffix: str, server_suffix: str, num_workers: int, num_servers: int) -> Tuple[str, ...]:
    """Every profile a job of `num_workers` workers and `num_servers` servers writes into its run directory
    (MXNet's kvstore server puts rankR_ before its suffix; a worker does here with several workers)."""
    workers = tuple(worker_file_name(worker_suffix, rank, num_workers) for rank in range(num_workers))
    servers = tuple(f"rank{rank}_{server_suffix}" for rank in range(num_servers))
    return (workers if worker_suffix else ()) + (servers if server_suffix else ())


def start(worker_suffix: str, server_suffix: str, rank: int, num_workers: int, directory: Optional[str]) -> Profiles:
    import mxnet as mx  # heavy

    servers = bool(server_suffix) and rank == 0
    if servers:
        mx.profiler.set_config(filename=server_suffix, profile_all=True, profile_process="server")
        mx.profiler.set_state(state="run", profile_process="server")
    worker_file = None
    if worker_suffix:
        name = worker_file_name(worker_suffix, rank, num_workers)
        # MXNet's profiler opens the file by name: it writes into a private folder, moved into place at the end
        if directory:
            os.makedirs(directory, exist_ok=True)
        worker_file = Replacement(os.path.join(directory, name) if directory else name)
        atexit.register(worker_file.discard)  # a run that fails leaves no private folder behind
        mx.profiler.set_config(filename=worker_file.tmp, profile_all=True, profile_process="worker")
        mx.profiler.set_state(state="run", profile_process="worker")
    return Profiles(worker_file, servers)


def check_suffixes(worker_suffix: str, server_suffix: str) -> None:
    check_suffix("--profile-worker-suffix", worker_suffix)
    check_suffix("--profile-server-suffix", server_suffix)
    if worker_suffix and worker_suffix == server_suffix:
        raise UsageError(f"--profile-worker-suffix and --profile-server-suffix are both {worker_suffix!r}: worker "
                         f"and server of one rank would write the same rank0_{worker_suffix} (give two names)")
    if server_suffix and re.fullmatch(r"rank\d+_" + re.escape(server_suffix), worker_suffix):
        raise UsageError(f"--profile-worker-suffix {worker_suffix}: a server writes that file with "
                         f"--profile-server-suffix {server_suffix} (give a name without rankN_)")
    for option, suffix in (("--profile-worker-suffix", worker_suffix), ("--profile-server-suffix", server_suffix)):
        if suffix == metrics_file.FILE_NAME:
            raise UsageError(f"{option} {suffix}: rank 0 writes its metrics there (give another name)")


def check_suffix(option: str, suffix: str) -> None:
    """A file name, not a path: the profiler's directory is the run's, and a server puts rankR_ in front."""
    if suffix and (os.sep in suffix or ":" in suffix or "," in suffix or suffix in (".", "..")):
        raise UsageError(f"{option} {suffix!r}: give a file name (no '/', ':' or ','); it is written where the "
                         f"run's metrics.jsonl goes")
