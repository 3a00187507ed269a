"""Processes a test run started, found by a mark in their environment, and killed by pid or process group.

A test session puts `MXLAUNCH_TEST_OWNER=<pid>:<start time>` in its own environment first thing; every
process it starts inherits it (the launcher, its guards, the roles they start, a trainer). A run killed
before its teardown (SIGKILL of pytest) leaves them running with an owner that is gone: the next session's
`sweep_orphans()` finds them in /proc and kills them. The start time makes the mark unique even when the
kernel reuses the owner's pid. Processes of a live run, this one's or another's, are never touched.
"""
from __future__ import annotations

import os
import signal
import time
from typing import Callable, Dict, List, Optional

OWNER_KEY = "MXLAUNCH_TEST_OWNER"
Environ = Dict[bytes, bytes]


def _stat(pid: int) -> Optional[List[str]]:
    """The fields of /proc/PID/stat after the command name (state first), or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    return raw[raw.rfind(b")") + 2:].decode().split()


def alive(pid: int) -> bool:
    """Alive and not a zombie (a zombie is gone for every purpose but its exit status)."""
    fields = _stat(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def mark_of(pid: int) -> Optional[str]:
    """`<pid>:<start time in clock ticks since boot>`: names one process, even after its pid is reused."""
    fields = _stat(pid)
    return None if fields is None else f"{pid}:{fields[19]}"


def owner_alive(mark: str) -> bool:
    pid, _, _ = mark.partition(":")
    return pid.isdigit() and alive(int(pid)) and mark_of(int(pid)) == mark


def mark_session() -> str:
    """Make this process the owner of every process it starts from now on."""
    os.environ[OWNER_KEY] = mark_of(os.getpid())
    return os.environ[OWNER_KEY]


def environ(pid: int) -> Optional[Environ]:
    """The environment PID started with; None when it is gone, a zombie, or not ours to read."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    if not alive(pid):
        return None
    return dict(item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)


def _ancestors() -> List[int]:
    """This process and its parents: never killed, whatever their environment says."""
    chain, pid = [], os.getpid()
    while pid > 1 and pid not in chain:
        chain.append(pid)
        fields = _stat(pid)
        pid = int(fields[1]) if fields else 0
    return chain


def kill_where(matches: Callable[[Environ], bool], timeout: float = 5.0) -> List[int]:
    """SIGKILL every live process whose environment `matches`, and the whole process group of each one that
    leads its group (started in its own session: what it started stays in that group even with a clean
    environment). Waits, bounded, until they are gone; returns the pids it killed."""
    spared = set(_ancestors())
    own_group = os.getpgid(0)
    killed = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in spared:
            continue
        pid = int(entry)
        env = environ(pid)
        if env is None or not matches(env):
            continue
        try:
            if os.getpgid(pid) == pid != own_group:
                os.killpg(pid, signal.SIGKILL)
            else:
                os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        except (ProcessLookupError, PermissionError):
            continue
    deadline = time.monotonic() + timeout
    while any(alive(p) for p in killed) and time.monotonic() < deadline:
        time.sleep(0.02)
    return killed


def kill_marked(key: str, value: str, timeout: float = 5.0) -> List[int]:
    """Kill every process whose environment holds KEY=VALUE (a mark a test put on what it started)."""
    wanted = value.encode()
    return kill_where(lambda env: env.get(key.encode()) == wanted, timeout)


def sweep_orphans(timeout: float = 5.0) -> List[int]:
    """Kill what test runs that are gone left running (their owner mark names a process that no longer is)."""
    key = OWNER_KEY.encode()
    return kill_where(lambda env: key in env and not owner_alive(env[key].decode(errors="replace")), timeout)
