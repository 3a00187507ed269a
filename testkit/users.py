"""What instance-like bed hosts need on this machine itself: the login user (`ubuntu`) and the mount points
(`/efs`, ...) that their mount namespaces cover. A mount namespace hides files, not the directory a mount
needs, nor the password database: both are machine-wide, and so shared by every run on this machine.

Each is made only when missing, and marked as made here (a file under STATE_ROOT/.made); what was made is
removed when the last live bed that uses it goes down (or is swept), never what this machine already had.
All of it under one file lock, so that two runs (one going down, one coming up) never race.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import pwd
import urllib.parse
from typing import Callable, Iterable, List

from testkit.system import BedError, run


def _marks_dir(state_root: str) -> str:
    return os.path.join(state_root, ".made")


def _mark(state_root: str, kind: str, name: str) -> str:
    return os.path.join(_marks_dir(state_root), f"{kind}-{urllib.parse.quote(name, safe='')}")


@contextlib.contextmanager
def machine_lock(state_root: str):
    os.makedirs(_marks_dir(state_root), exist_ok=True)
    with open(os.path.join(state_root, ".machine.lock"), "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def user_exists(user: str) -> bool:
    try:
        pwd.getpwnam(user)
        return True
    except KeyError:
        return False


def acquire(state_root: str, user: str, home: str, dirs: Iterable[str]) -> None:
    """`user` exists (a login shell, no password but not locked: sshd without PAM refuses locked accounts),
    and so does every directory of `dirs`."""
    with machine_lock(state_root):
        if not user_exists(user):
            run("useradd", "--no-create-home", "--home-dir", home, "--shell", "/bin/bash", "--user-group",
                "--password", "*", user)
            open(_mark(state_root, "user", user), "w").close()
        for d in dirs:
            if not os.path.isdir(d):
                os.makedirs(d, mode=0o755)
                open(_mark(state_root, "dir", d), "w").close()


def release(state_root: str, user: str, dirs: Iterable[str], still_used: Callable[[], bool]) -> List[str]:
    """Remove what `acquire` made, unless `still_used()` (asked under the lock: another live bed uses them).
    Returns the problems (empty: clean)."""
    problems = []
    with machine_lock(state_root):
        if still_used():
            return problems
        mark = _mark(state_root, "user", user)
        if os.path.exists(mark):
            try:
                run("userdel", user)
                os.unlink(mark)
            except BedError as exc:
                problems.append(f"user {user}: {exc}")
        for d in dirs:
            mark = _mark(state_root, "dir", d)
            if os.path.exists(mark):
                try:
                    os.rmdir(d)  # only if empty: whatever someone put there stays, and is reported
                    os.unlink(mark)
                except OSError as exc:
                    problems.append(f"directory {d}: {exc}")
    return problems


def made_here(state_root: str) -> List[str]:
    """What acquire made that is still there (`user-ubuntu`, `dir-%2Fefs`): for leak checks."""
    try:
        return sorted(os.listdir(_marks_dir(state_root)))
    except FileNotFoundError:
        return []
