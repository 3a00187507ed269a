"""The Runner seam: how the job lifecycle starts roles, without knowing where they run.

A `Runner` starts each role under a roleguard (infra/transport/remote/roleguard.py) — a local process, or one at
the end of an SSH channel — and returns a `RoleHandle`. Everything a role does comes back as events
on one queue, in order: `RoleStarted`, `RoleOutput` (one line), then exactly one `RoleEnded` carrying
its `RoleResult`; a guard that watches its host for spot interruptions may put one `SpotNotice` between. `pump_guard_output` turns a guard's stdout into those events and is shared by every
runner; a runner only has to supply the guard's stdout, its stdin (the lifeline) and its exit status.
"""
from __future__ import annotations

import abc
import json
import queue
import signal
import time
from dataclasses import dataclass
from typing import BinaryIO, Callable, Optional, Tuple

from mxlaunch.infra.transport.remote import roleguard
from mxlaunch.infra.transport.roles import Role

Events = queue.SimpleQueue  # put() is reentrant: safe from signal handlers and from pump threads
# The most bytes of one RoleOutput. A role writing without newlines (progress bars redrawn with \r) is
# forwarded in pieces of at most this size, never held whole: 100 MB of it costs the launcher no memory.
PIECE = 64 * 1024
CONTROL_START = roleguard.CONTROL_PREFIX.encode()
# Flow control: while more events than this wait for the job loop (a slow console), a pump reads no more,
# so the role's pipe fills and the role waits instead of the launcher's memory growing. Bounded: after
# MAX_STALL seconds a piece goes on all the same (a loop that stopped reading must not hang a pump forever).
MAX_QUEUED, MAX_STALL, STALL_POLL = 256, 10.0, 0.002


@dataclass(frozen=True)
class RoleLaunch:
    """Everything a runner needs to start one role."""

    role: Role
    argv: Tuple[str, ...]
    cwd: Optional[str]
    grace: float = 1.0  # seconds between SIGTERM and SIGKILL when the role is stopped
    spot_poll: Optional[float] = None  # its guard polls the host's spot notice this often (None: it does not)


@dataclass(frozen=True)
class RoleResult:
    """How one role ended (one per role: the runners' shared result type)."""

    name: str
    kind: str
    index: int
    host: str
    pid: Optional[int]
    start: Optional[float]  # wall-clock seconds (time.time())
    end: Optional[float]
    exit_code: Optional[int]
    signal: Optional[int]
    stopped: Optional[str] = None  # why the launcher stopped it ("stop", "lifeline", ...), None if it ended itself
    error: Optional[str] = None  # it could not be started, or its guard failed

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.signal and not self.error

    def how(self) -> str:
        """'exit code 3', 'signal 9 (SIGKILL)', or the start error."""
        if self.error:
            return self.error
        if self.signal:
            try:
                return f"signal {self.signal} ({signal.Signals(self.signal).name})"
            except ValueError:
                return f"signal {self.signal}"
        return f"exit code {self.exit_code}"


@dataclass(frozen=True)
class RoleStarted:
    name: str
    pid: int
    time: float


@dataclass(frozen=True)
class RoleOutput:
    name: str
    data: bytes  # one line, newline included; a longer line comes in pieces of at most PIECE bytes without it


@dataclass(frozen=True)
class RoleEnded:
    result: RoleResult


@dataclass(frozen=True)
class SpotNotice:
    """The role's host has a spot interruption notice (its guard read it from the metadata service)."""

    name: str  # the role whose guard watched
    action: str  # terminate | stop | hibernate
    time: str  # when AWS will act (its ISO text, UTC)


class RoleHandle(abc.ABC):
    """A started role. Both methods return at once; the outcome arrives as `RoleEnded`."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Ask the guard to stop the role: SIGTERM to its group, SIGKILL after the grace."""

    @abc.abstractmethod
    def kill(self) -> None:
        """Last resort when the guard does not answer: cut the lifeline / kill what can be reached."""

    def checkpoint(self) -> bool:
        """Ask the guard to send SIGUSR1 to the role (rank 0: save a checkpoint now, then exit 75); whether the
        request was sent (False: nothing will come of it, so the job must not wait for it)."""
        return False


class Runner(abc.ABC):
    """Starts roles. Implementations: local processes (local_runner.py), SSH (ssh mode)."""

    @abc.abstractmethod
    def start(self, launch: RoleLaunch, events: Events) -> RoleHandle:
        """Start the role's guard; never blocks on the role itself."""

    def close(self) -> None:
        """Release whatever the runner holds (connections); roles are already ended."""


@dataclass
class GuardSession:
    """What `pump_guard_output` learns about one guard; shared with the handle (kill uses the pid)."""

    launch: RoleLaunch
    token: str
    role_pid: Optional[int] = None
    start: Optional[float] = None
    ended: bool = False

    def config_line(self) -> bytes:
        """The guard's first stdin line (roleguard protocol): env travels here, never on a command line."""
        config = {"argv": list(self.launch.argv), "env": self.launch.role.env_dict(), "cwd": self.launch.cwd,
                  "grace": self.launch.grace, "token": self.token}
        if self.launch.spot_poll is not None:
            config["spot"] = {"interval": self.launch.spot_poll}
        return (json.dumps(config) + "\n").encode("utf-8")


def pieces(stdout: BinaryIO, limit: int = PIECE):
    """The stream's lines, each at most `limit` bytes: a longer one comes in pieces, cut after its last
    carriage return when it has one (a progress bar's redraw stays whole), else at `limit`."""
    carry = b""
    while True:
        raw = carry + stdout.readline(limit - len(carry))
        carry = b""
        if not raw:
            return
        if not raw.endswith(b"\n") and len(raw) >= limit:
            cut = raw.rfind(b"\r") + 1
            if 0 < cut < len(raw):
                raw, carry = raw[:cut], raw[cut:]
        yield raw


def _wait_for_room(events: Events) -> None:
    give_up = time.monotonic() + MAX_STALL
    while events.qsize() > MAX_QUEUED and time.monotonic() < give_up:
        time.sleep(STALL_POLL)  # flow control, not synchronisation: the queue has no blocking bound


def pump_guard_output(session: GuardSession, stdout: BinaryIO, events: Events,
                      guard_status: Callable[[], Optional[int]]) -> None:
    """Read a guard's stdout to its end, emitting events; always ends with exactly one RoleEnded.

    `guard_status` waits (bounded) for the guard to end and returns its exit status (None if unknown);
    the status matters only when the guard ended without its `exit` line (killed, or its host went away).
    """
    role = session.launch.role
    payload = None
    at_line_start = True  # control lines only ever start a line (the guard puts a newline before them)
    try:
        for raw in pieces(stdout):
            control = None
            if at_line_start and raw.startswith(CONTROL_START) and raw.endswith(b"\n"):
                control = roleguard.parse_control_line(raw.decode("utf-8", "replace").rstrip("\n"), session.token)
            at_line_start = raw.endswith(b"\n")
            if control is None:
                events.put(RoleOutput(role.name, raw))
                _wait_for_room(events)
                continue
            event, data = control
            if event == "started":
                session.role_pid = int(data["pid"])
                session.start = time.time()
                events.put(RoleStarted(role.name, session.role_pid, session.start))
            elif event == "exit":
                payload = data
            elif event == "spot" and isinstance(data, dict):
                events.put(SpotNotice(role.name, str(data.get("action")), str(data.get("time"))))
    except Exception as exc:  # a transport error mid-read: the role still gets its one RoleEnded, never a hang
        payload = payload or {"code": None, "signal": None, "stopped": None,
                              "error": f"its output could not be read ({type(exc).__name__}: {exc})"}
    end = time.time()
    if payload is None:
        status = guard_status()
        payload = {"code": None, "signal": None, "stopped": None,
                   "error": f"its roleguard ended without a report (status {status})"}
    session.ended = True
    events.put(RoleEnded(RoleResult(
        name=role.name, kind=role.kind, index=role.index, host=role.host.address, pid=session.role_pid,
        start=session.start, end=end, exit_code=payload.get("code"), signal=payload.get("signal"),
        stopped=payload.get("stopped"), error=payload.get("error"))))
    guard_status()  # reap the guard (it exits right after its report)
