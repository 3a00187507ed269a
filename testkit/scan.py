"""A secret scan that would see any encoding of the value, and short-lived processes too.

The secret holds `'`, `"` and non-ASCII, so a leak through `shlex.join` (`'"'"'`), JSON (`\\u00fc`) or YAML would
never contain it verbatim: the scan looks for a quote-free ASCII marker inside it instead, which every such
encoding keeps intact. It polls every process's cmdline and environ on a thread, from before the launch until
the job is gone, so a `sh -c` or `env` that lives for milliseconds during start-up is seen as well.

    marker, secret = secret_with_marker()
    with SecretScan(marker) as scan:
        ... start the job, run it, end it ...
    assert not scan.leaks(job_id, launcher_pid=proc.pid)
"""
from __future__ import annotations

import os
import secrets
import threading
import time
from dataclasses import dataclass, replace
from typing import List, Optional, Set, Tuple


def secret_with_marker() -> Tuple[str, str]:
    """(marker, secret): a fresh marker (no other process on this machine carries it) inside a hostile value."""
    marker = f"s3cr3tMARK{secrets.token_hex(4)}"
    return marker, f"{marker} value; $(rm -rf /) `x` 'q' \"dq\" ünï,comma=eq"


@dataclass(frozen=True)
class Sighting:
    pid: int
    where: str  # "cmdline" or "environ"
    argv0: str
    cmdline: bytes
    job_id: Optional[str]  # the environ's LAUNCH_JOB_ID, when it also has DMLC_ROLE (a role's own environment)
    role: Optional[str]  # its LAUNCH_ROLE


def _read(path: str) -> Optional[bytes]:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:  # gone, or a kernel thread
        return None


def _env_value(environ: bytes, key: bytes) -> Optional[str]:
    for item in environ.split(b"\0"):
        if item.startswith(key + b"="):
            return item[len(key) + 1:].decode(errors="replace")
    return None


def sightings_now(marker: bytes, skip: int) -> Set[Sighting]:
    """One look at every process but `skip` (the scanning one): where `marker` appears."""
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == skip:
            continue
        cmdline = _read(f"/proc/{entry}/cmdline") or b""
        environ = _read(f"/proc/{entry}/environ") or b""
        if marker not in cmdline and marker not in environ:
            continue
        argv0 = cmdline.split(b"\0", 1)[0].decode(errors="replace")
        is_role = _env_value(environ, b"DMLC_ROLE") is not None
        job_id = _env_value(environ, b"LAUNCH_JOB_ID") if is_role else None
        role = _env_value(environ, b"LAUNCH_ROLE") if is_role else None
        for where, data in (("cmdline", cmdline), ("environ", environ)):
            if marker in data:
                found.add(Sighting(int(entry), where, argv0, cmdline, job_id, role))
    return found


class SecretScan:
    """Polls /proc for `marker` on a thread from __enter__ to __exit__ (bounded by `limit` seconds)."""

    def __init__(self, marker: str, limit: float = 120.0, interval: float = 0.005):
        self.marker = marker.encode()
        self.limit = limit
        self.interval = interval
        self.passes = 0
        self.sightings: Set[Sighting] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="secret-scan", daemon=True)

    def _poll(self) -> None:
        deadline = time.monotonic() + self.limit
        while not self._stop.is_set() and time.monotonic() < deadline:
            self.sightings |= sightings_now(self.marker, os.getpid())
            self.passes += 1
            self._stop.wait(self.interval)

    def __enter__(self) -> "SecretScan":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def roles_seen(self, job_id: str) -> Set[str]:
        """The roles of `job_id` whose own environment was seen carrying the marker (proof the scan saw them)."""
        return {s.role for s in self.sightings if s.where == "environ" and s.job_id == job_id}

    def _attributed(self) -> Set[Sighting]:
        """The sightings, each carrying the role its process was seen with in any pass: a process that exits
        between the reads of its cmdline and its environ shows the cmdline with an empty environ once."""
        known = {(s.pid, s.cmdline): (s.job_id, s.role) for s in self.sightings if s.role is not None}
        return {replace(s, job_id=known[(s.pid, s.cmdline)][0], role=known[(s.pid, s.cmdline)][1])
                if s.role is None and (s.pid, s.cmdline) in known else s
                for s in self.sightings}

    def leaks(self, job_id: str, launcher_pid: int) -> List[Sighting]:
        """Every sighting but the two legitimate ones: the launcher's command line (the user typed the value
        there; a child it forks shows that same command line until it execs) and a role's own environment
        (where the guard puts what it read from its stdin)."""
        typed = {s.cmdline for s in self.sightings if s.where == "cmdline" and s.pid == launcher_pid}
        return sorted((s for s in self._attributed()
                       if not (s.where == "cmdline" and s.cmdline in typed)
                       and not (s.where == "environ" and s.job_id == job_id)),
                      key=lambda s: (s.pid, s.where))
