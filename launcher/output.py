"""Role output: every line to the console with its role's prefix (coloured on a terminal) and, raw, to
the role's own log file under RUN_DIR/logs/. Keeps each role's last lines for the failure message.

Only the job's main thread calls it (the runners' pump threads hand lines over through the event queue),
so lines never interleave mid-line and no lock is needed.
"""
from __future__ import annotations

import collections
import os
import sys
from typing import Deque, Dict, IO, Iterable, List, Optional

from mxlaunch.launcher import rundir
from mxlaunch.launcher.plan import Role
from mxlaunch.launcher.roles import SCHEDULER_ID

TAIL_LINES = 15
# ANSI colours, cycled over the roles; the scheduler and the launcher's own notices get their own.
PALETTE = ("36", "32", "33", "35", "34", "96", "92", "93", "95", "94")
SCHEDULER_COLOUR, NOTICE_COLOUR, ERROR_COLOUR = "90", "1", "1;31"


def use_colour(stream: IO) -> bool:
    if os.environ.get("NO_COLOR"):
        return False
    return bool(getattr(stream, "isatty", lambda: False)())


class RoleOutputSink:
    def __init__(self, run_dir: str, roles: Iterable[Role], show_host: bool,
                 stream: Optional[IO] = None, colour: Optional[bool] = None, append: bool = False):
        self.stream = stream or sys.stdout
        self.colour = use_colour(self.stream) if colour is None else colour
        self.logs: Dict[str, IO[bytes]] = {}
        self.tails: Dict[str, Deque[str]] = {}
        self.prefixes: Dict[str, str] = {}
        self.run_dir = run_dir
        self.append = append
        for i, role in enumerate(roles):
            self.add_role(role, show_host, PALETTE[i % len(PALETTE)])

    def add_role(self, role: Role, show_host: bool, colour: str) -> None:
        if role.name in self.logs:
            return
        label = f"{role.label} @{role.host.address}" if show_host else role.label
        colour = SCHEDULER_COLOUR if role.id == SCHEDULER_ID else colour
        self.prefixes[role.name] = self._paint(f"[{label}]", colour) + " "
        self.logs[role.name] = open(rundir.log_path(self.run_dir, role.name), "ab" if self.append else "wb")
        self.tails[role.name] = collections.deque(maxlen=TAIL_LINES)

    def _paint(self, text: str, colour: str) -> str:
        return f"\033[{colour}m{text}\033[0m" if self.colour else text

    def line(self, name: str, data: bytes) -> None:
        log = self.logs[name]
        log.write(data if data.endswith(b"\n") else data + b"\n")
        log.flush()  # `launch logs --follow` and a post-mortem read it while the job runs
        text = data.decode("utf-8", "replace").rstrip("\r\n")
        self.tails[name].append(text)
        self._echo(self.prefixes[name] + text)

    def notice(self, text: str, error: bool = False) -> None:
        """A line of the launcher's own, on the console only."""
        self._echo(self._paint("[launch]", ERROR_COLOUR if error else NOTICE_COLOUR) + " " + text)

    def _echo(self, text: str) -> None:
        try:
            self.stream.write(text + "\n")
            self.stream.flush()
        except (BrokenPipeError, ValueError):
            pass  # a closed console must not stop the job's bookkeeping

    def tail(self, name: str) -> List[str]:
        return list(self.tails.get(name, ()))

    def close(self) -> None:
        for log in self.logs.values():
            log.close()
