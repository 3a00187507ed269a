"""--profile-worker-suffix and --profile-server-suffix: MXNet's profiler, per role, as common/fit.py starts it.

A worker writes its profile where the run's metrics.jsonl goes ($LAUNCH_RUN_DIR, else beside the checkpoints,
else the working directory): `rankR_SUFFIX` with several workers, else `SUFFIX`. Rank 0 starts the servers'
profilers (every worker did in MXNet; once is enough); each server writes `rankR_SUFFIX` into its working
directory, which is its $LAUNCH_RUN_DIR under `launch train` (trainer/cli.py). Profiling stops and the files
are written when training ends (MXNet's fit.py set the state to 'run' again there, so nothing was dumped).
"""
from __future__ import annotations

import logging
import os
from typing import Optional

from mxlaunch.errors import UsageError

log = logging.getLogger("trainer")


class Profiles:
    def __init__(self, worker_file: Optional[str], servers: bool):
        self.worker_file, self.servers = worker_file, servers

    def stop(self) -> None:
        import mxnet as mx  # heavy

        if self.worker_file:
            mx.profiler.set_state(state="stop", profile_process="worker")
            mx.profiler.dump(profile_process="worker")
            log.info("profile written to %s", self.worker_file)
        if self.servers:
            mx.profiler.set_state(state="stop", profile_process="server")
            mx.profiler.dump(profile_process="server")
            log.info("servers' profiles written (rankR_SUFFIX in each server's run directory)")


def start(worker_suffix: str, server_suffix: str, rank: int, num_workers: int, directory: Optional[str]) -> Profiles:
    import mxnet as mx  # heavy

    servers = bool(server_suffix) and rank == 0
    if servers:
        mx.profiler.set_config(filename=server_suffix, profile_all=True, profile_process="server")
        mx.profiler.set_state(state="run", profile_process="server")
    worker_file = None
    if worker_suffix:
        name = f"rank{rank}_{worker_suffix}" if num_workers > 1 else worker_suffix
        worker_file = os.path.join(directory, name) if directory else name
        mx.profiler.set_config(filename=worker_file, profile_all=True, profile_process="worker")
        mx.profiler.set_state(state="run", profile_process="worker")
    return Profiles(worker_file, servers)


def check_suffix(option: str, suffix: str) -> None:
    """A file name, not a path: the profiler's directory is the run's, and a server puts rankR_ in front."""
    if suffix and (os.sep in suffix or ":" in suffix or "," in suffix or suffix in (".", "..")):
        raise UsageError(f"{option} {suffix!r}: give a file name (no '/', ':' or ','); it is written where the "
                         f"run's metrics.jsonl goes")
