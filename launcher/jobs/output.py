"""Role output: every line, raw, to the role's own log file under RUN_DIR/logs/; the workload's own lines
also to the console with the role's prefix (coloured on a terminal). Engine chatter (ps-lite's and
libmxnet's own log lines: `is_engine_chatter`) stays in the log unless `verbose`. Keeps each role's last
lines for the failure message, and feeds rank 0's (worker-0's) lines to the progress display.

Beside each log, `<role>.log.times` holds the launcher's receive time of each line (one `%.3f` per line,
in step with the log), so `launch logs --merge` can interleave roles while the log itself stays exactly
what the role wrote.

Only the job's main thread calls it (the runners' pump threads hand lines over through the event queue),
so lines never interleave mid-line and no lock is needed.
"""
from __future__ import annotations

import collections
import os
import re
import shutil
import sys
import time
from typing import Callable, Deque, Dict, IO, Iterable, List, Optional

from mxlaunch.launcher.jobs import rundir
from mxlaunch.infra.transport.roles import Role
from mxlaunch.launcher.jobs.progress import Progress
from mxlaunch.infra.transport.roles import SCHEDULER_ID, WORKER, RoleId
from mxlaunch.files import open_new

TAIL_LINES = 15
# ANSI colours, cycled over the roles; the scheduler and the launcher's own notices get their own.
PALETTE = ("36", "32", "33", "35", "34", "96", "92", "93", "95", "94")
SCHEDULER_COLOUR, NOTICE_COLOUR, ERROR_COLOUR = "90", "1", "1;31"
TIMES_SUFFIX = ".times"
RANK0 = RoleId(WORKER, 0).name  # worker-i is MXNet rank i (launcher/jobs/plan.py rank_order)
# dmlc-core's log format, used by ps-lite and libmxnet alike: `[03:34:17] ../3rdparty/ps-lite/src/van.cc:199: ...`
# (LOG(INFO/WARNING) of the engine: binds, barriers, connections, `Subgraph backend MKLDNN is activated`).
ENGINE_LINE = re.compile(r"^\[\d\d:\d\d:\d\d\] [^\s:]+:\d+: ")


def is_engine_chatter(text: str) -> bool:
    """Whether a line is the engine's own log rather than the workload's (shown only with -v)."""
    return bool(ENGINE_LINE.match(text))


def times_path(log_path: str) -> str:
    return log_path + TIMES_SUFFIX


def use_colour(stream: IO) -> bool:
    if os.environ.get("NO_COLOR"):
        return False
    return bool(getattr(stream, "isatty", lambda: False)())


class RoleOutputSink:
    def __init__(self, run_dir: str, roles: Iterable[Role], show_host: bool,
                 stream: Optional[IO] = None, colour: Optional[bool] = None, append: bool = False,
                 verbose: bool = False, live: Optional[bool] = None, clock: Callable[[], float] = time.time):
        self.stream = stream or sys.stdout
        self.colour = use_colour(self.stream) if colour is None else colour
        self.verbose = verbose
        # a live status line needs a terminal that can redraw it; elsewhere one plain line per epoch
        self.live = bool(getattr(self.stream, "isatty", lambda: False)()) if live is None else live
        self.clock = clock
        self.progress = Progress()
        self._status = ""  # the live line now on screen ("" when none)
        self.logs: Dict[str, IO[bytes]] = {}
        self.times: Dict[str, IO[bytes]] = {}
        self.open_lines: set = set()  # roles whose last piece ended without a newline (a long line, or \r progress)
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
        path = rundir.log_path(self.run_dir, role.name)
        mode = "ab" if self.append else "wb"  # never through a symbolic link planted in logs/
        self.logs[role.name] = open_new(path, mode)
        self.times[role.name] = open_new(times_path(path), mode)
        self.tails[role.name] = collections.deque(maxlen=TAIL_LINES)

    def _paint(self, text: str, colour: str) -> str:
        return f"\033[{colour}m{text}\033[0m" if self.colour else text

    def line(self, name: str, data: bytes) -> None:
        now = self.clock()
        log = self.logs[name]
        log.write(data)  # byte for byte: a long line arrives in bounded pieces and is written as one line
        log.flush()  # `launch logs --follow` and a post-mortem read it while the job runs
        continuing = name in self.open_lines  # the rest of a line whose start was already timed
        (self.open_lines.discard if data.endswith(b"\n") else self.open_lines.add)(name)
        if not continuing:
            times = self.times[name]
            times.write(b"%.3f\n" % now)  # one time per line of the log (launch logs --merge)
            times.flush()
        text = data.decode("utf-8", "replace").rstrip("\r\n")
        self.tails[name].append(text)
        if self.verbose or not is_engine_chatter(text):
            self._echo(self.prefixes[name] + text)
        if name == RANK0 and self.progress.feed(text, now):
            self._show_progress(now)

    def _show_progress(self, now: float, final: bool = False) -> None:
        if self.live and not final:
            self._draw(self.progress.status(now) or "")
            return
        for epoch in self.progress.epochs_to_report(final=final):
            self.notice(self.progress.epoch_line(epoch, now))

    def mark(self, text: str) -> None:
        """A line of the launcher's own in every role's log (and on the console): where a restarted
        attempt begins in logs that go on (launch train --max-restarts)."""
        now, line = self.clock(), text.encode("utf-8", "replace") + b"\n"
        for name, log in self.logs.items():
            log.write(line)
            log.flush()
            self.times[name].write(b"%.3f\n" % now)
            self.times[name].flush()
        self.notice(text)

    def notice(self, text: str, error: bool = False) -> None:
        """A line of the launcher's own, on the console only."""
        self._echo(self._paint("[launch]", ERROR_COLOUR if error else NOTICE_COLOUR) + " " + text)

    def _draw(self, status: str) -> None:
        """Put the live line under the output (it is redrawn after every line)."""
        width = shutil.get_terminal_size((100, 24)).columns - 1
        self._status = status[:width]
        self._write("\r\033[K" + self._status)

    def _echo(self, text: str) -> None:
        if self._status:  # the line goes above the live line, which is drawn again below it
            self._write("\r\033[K" + text + "\n" + self._status)
        else:
            self._write(text + "\n")

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (BrokenPipeError, ValueError):
            pass  # a closed console must not stop the job's bookkeeping

    def end_progress(self) -> None:
        """Before the final report: the live line is taken away; epochs not yet reported are."""
        if self._status:
            self._write("\r\033[K")
            self._status = ""
        if not self.live:
            self._show_progress(self.clock(), final=True)

    def tail(self, name: str) -> List[str]:
        return list(self.tails.get(name, ()))

    def close(self) -> None:
        self.end_progress()
        for name in self.open_lines:  # a role's last line lacked its newline
            self.logs[name].write(b"\n")
        for f in (*self.logs.values(), *self.times.values()):
            f.close()
