"""LocalRunner: every role is a local process under its own roleguard.

The guard's stdin is a pipe from this process: if the launcher dies in any way (even SIGKILL) the pipe
closes and the guard stops its role. Guards run in their own sessions, so a terminal's Ctrl-C reaches
only the launcher, which then stops the job in order.
"""
from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import threading
from typing import Optional

from mxlaunch.infra.transport.remote import roleguard
from mxlaunch.infra.transport.roles import MARKER_KEY
from mxlaunch.infra.transport.runner import Events, GuardSession, RoleHandle, RoleLaunch, Runner, pump_guard_output

GUARD_SCRIPT = os.path.abspath(roleguard.__file__)
GUARD_EXIT_WAIT = 2.0  # after its stdout closed, a guard is about to exit


class LocalRoleHandle(RoleHandle):
    def __init__(self, session: GuardSession, proc: subprocess.Popen):
        self.session = session
        self.proc = proc
        self._lock = threading.Lock()

    def _send(self, data: Optional[bytes]) -> bool:
        """Write to the guard's stdin (None: close it); whether it was written."""
        with self._lock:
            try:
                if data is None:
                    self.proc.stdin.close()
                elif not self.proc.stdin.closed:
                    self.proc.stdin.write(data)
                    self.proc.stdin.flush()
                    return True
            except (BrokenPipeError, ValueError, OSError):
                pass  # the guard is gone already: its RoleEnded is on the way
        return False

    def stop(self) -> None:
        self._send(roleguard.STOP_LINE + b"\n")

    def checkpoint(self) -> bool:
        return self._send(roleguard.CHECKPOINT_LINE + b"\n")

    def kill(self) -> None:
        self._send(None)
        for pid in (self.session.role_pid, self.proc.pid):
            if pid:
                try:
                    os.killpg(pid, signal.SIGKILL)  # both run in their own sessions: pgid == pid
                except (ProcessLookupError, PermissionError):
                    pass


class LocalRunner(Runner):
    def __init__(self, python: str = sys.executable):
        self.python = python

    def start(self, launch: RoleLaunch, events: Events) -> LocalRoleHandle:
        session = GuardSession(launch=launch, token=secrets.token_hex(8))
        role_env = launch.role.env_dict()
        # The guard carries the job's marker too (not a secret), so a scan finds every process of the job.
        guard_env = dict(os.environ, **{k: role_env[k] for k in (MARKER_KEY, "LAUNCH_ROLE") if k in role_env})
        proc = subprocess.Popen([self.python, GUARD_SCRIPT], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, env=guard_env, start_new_session=True)
        handle = LocalRoleHandle(session, proc)
        handle._send(session.config_line())

        def guard_status() -> Optional[int]:
            try:
                return proc.wait(timeout=GUARD_EXIT_WAIT)
            except subprocess.TimeoutExpired:
                return None

        threading.Thread(target=pump_guard_output, args=(session, proc.stdout, events, guard_status),
                         name=f"guard-{launch.role.name}", daemon=True).start()
        return handle
