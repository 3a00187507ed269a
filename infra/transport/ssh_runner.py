"""SSHRunner: every role is a roleguard at the end of an SSH channel (the Runner seam of runner.py).

One connection per host (infra/transport/ssh.py), shared by all roles on that host: each role is one channel.
The remote command is the job's interpreter running the guard shipped over the channel's stdin
(`roleguard.bootstrap_argv`), so nothing of mxlaunch has to be installed on the hosts. The guard's
config line, with the role's environment, follows on stdin: the environment never appears on a command
line, here or there. The channel's stdin then stays open as the guard's lifeline: when the launcher
dies (even SIGKILL) or its connection is closed or reset, sshd closes the guard's stdin and the guard
kills the role's whole process group (TERM, then KILL after the grace). A silent network partition
(no FIN, no RST) is noticed by the launcher within PING_TIMEOUT s (`Connection.watch`: the job then
stops every other host); the partitioned host's sshd notices by its own ClientAliveInterval/CountMax.
"""
from __future__ import annotations

import base64
import contextlib
import dataclasses
import ipaddress
import os
import secrets
import sys
import threading
import time
from typing import Callable, Dict, List, Optional, Tuple

import paramiko

from mxlaunch.infra.transport.remote import roleguard, run_file, source
from mxlaunch.errors import UsageError
from mxlaunch.files import MIB, open_new
from mxlaunch.infra.transport.hosts import Host
from mxlaunch.infra.transport.runner import (Events, GuardSession, RoleEnded, RoleHandle, RoleLaunch, RoleResult, Runner,
                             pump_guard_output)
from mxlaunch.infra.transport.ssh import Connection, describe_error, parallel

GUARD_EXIT_WAIT = 2.0
PING_INTERVAL, PING_TIMEOUT = 2.0, 8.0  # a host that answers nothing for PING_TIMEOUT s is lost


def is_ip(address: str) -> bool:
    try:
        ipaddress.ip_address(address)
        return True
    except ValueError:
        return False


class SSHRoleHandle(RoleHandle):
    """A role whose channel is being opened (or is open). stop/kill before the channel exists are kept
    and applied the moment it does."""

    def __init__(self, session: GuardSession, conn: Connection):
        self.session = session
        self.conn = conn
        self.channel = None
        self._lock = threading.Lock()
        self._stop_requested = False
        self._killed = False

    def _send(self, data: bytes) -> bool:  # with the lock held; whether it was sent
        try:
            if self.channel is not None and not self.channel.closed:
                self.channel.sendall(data)
                return True
        except Exception:  # channel or transport gone (socket/EOF/SSH errors): RoleEnded is on the way
            pass
        return False

    def attach(self, channel, first_bytes: bytes) -> None:
        with self._lock:
            self.channel = channel
            if self._killed:
                channel.close()
                return
            self._send(first_bytes)
            if self._stop_requested:
                self._send(roleguard.STOP_LINE + b"\n")

    def stop(self) -> None:
        with self._lock:
            self._stop_requested = True
            self._send(roleguard.STOP_LINE + b"\n")

    def checkpoint(self) -> bool:
        with self._lock:  # never kept for later as a stop is: not sent now, the job stops at once instead
            return self._send(roleguard.CHECKPOINT_LINE + b"\n")

    def kill(self) -> None:
        """Cut the lifeline (sshd closes the guard's stdin), and SIGKILL the role's group directly."""
        with self._lock:
            self._killed = True
            try:
                if self.channel is not None:
                    self.channel.close()
            except Exception:
                pass
        pid = self.session.role_pid
        if pid and self.conn.alive:
            def _kill():
                try:
                    self.conn.run(["kill", "-KILL", "--", f"-{pid}"], timeout=5)
                except Exception:
                    pass
            threading.Thread(target=_kill, name=f"kill-{self.session.launch.role.name}", daemon=True).start()


class _LostConnection:
    """Between a guard's pump and the job's queue: a role whose guard vanished because the SSH connection
    died is reported as exactly that (the guard on the host has stopped the role)."""

    def __init__(self, events: Events, conn: Connection):
        self.events = events
        self.conn = conn

    def put(self, event) -> None:
        if isinstance(event, RoleEnded) and event.result.error and "without a report" in event.result.error \
                and not self.conn.alive:
            event = RoleEnded(dataclasses.replace(
                event.result, error=f"lost the SSH connection to {self.conn.host.target}"
                                    + (f" ({self.conn.lost})" if self.conn.lost else "")
                                    + " (the role's guard there stops it)"))
        self.events.put(event)

    def qsize(self) -> int:  # the pump's flow control asks how full the job's queue is
        return self.events.qsize()


RUN_FILES = ("metrics.jsonl",)  # what roles write into $LAUNCH_RUN_DIR when the job says nothing else
FETCH_LIMIT = 16 * MIB  # bytes of one run file: metrics.jsonl is a line per epoch, ~200 bytes each
PROFILE_FETCH_LIMIT = 64 * MIB  # a role's profile (MXNet's chrome trace): larger ones stay on their host
FETCH_TIMEOUT = 30.0  # seconds for one host's answer (a stat, or a file of up to FETCH_LIMIT)


class SSHRunner(Runner):
    """Starts roles over already-open connections: {Host: Connection} for every host of the plan."""

    def __init__(self, connections: Dict[Host, Connection], python: str,
                 before_first_start: Optional[Callable[[RoleLaunch], None]] = None,
                 run_dirs: Optional[Tuple[str, str]] = None, run_files: Tuple[str, ...] = RUN_FILES):
        """`run_dirs`: (the launcher's run directory, the roles' one on their hosts): on close, the `run_files`
        roles wrote there are fetched back (without it, from their LAUNCH_RUN_DIR into that same path here)."""
        if not python or not os.path.isabs(python):
            raise UsageError(f"--python must be an absolute path on the hosts in SSH mode, got {python!r}")
        self.connections = dict(connections)
        self.python = python
        self._before_first_start = before_first_start
        self._started_any = False
        self._run_dirs = run_dirs
        self._run_files = run_files
        self._role_hosts: List[Connection] = []
        for conn in self.connections.values():
            conn.watch(PING_INTERVAL, PING_TIMEOUT)

    def _connection(self, host: Host) -> Connection:
        try:
            return self.connections[host]
        except KeyError:
            raise RuntimeError(f"no SSH connection to {host.target}") from None

    def _ip_of(self, address: str) -> str:
        """The address a role should use for a host named in the plan (an IP: ps-lite needs one)."""
        if is_ip(address):
            return address
        for host, conn in self.connections.items():
            if host.address == address:
                return conn.ip
        return address

    def _resolved(self, launch: RoleLaunch) -> RoleLaunch:
        env = launch.role.env_dict()
        changed = False
        for key in ("DMLC_NODE_HOST", "DMLC_PS_ROOT_URI"):
            if key in env and not is_ip(env[key]):
                env[key] = self._ip_of(env[key])
                changed = True
        if not changed:
            return launch
        return dataclasses.replace(launch, role=dataclasses.replace(launch.role, env=tuple(env.items())))

    def start(self, launch: RoleLaunch, events: Events) -> SSHRoleHandle:
        if not self._started_any:
            self._started_any = True
            if self._before_first_start:
                self._before_first_start(launch)
        conn = self._connection(launch.role.host)
        launch = self._resolved(launch)
        env = launch.role.env_dict()
        if self._run_dirs is None and env.get("LAUNCH_RUN_DIR"):
            self._run_dirs = (env["LAUNCH_RUN_DIR"], env["LAUNCH_RUN_DIR"])
        if conn not in self._role_hosts:
            self._role_hosts.append(conn)
        session = GuardSession(launch=launch, token=secrets.token_hex(8))
        handle = SSHRoleHandle(session, conn)
        # Opening a channel is a network round trip: done on the role's own thread, so that starting many
        # roles on many hosts is one round trip, not one per role, and a slow host holds up no other.
        threading.Thread(target=self._run_role, args=(handle, events),
                         name=f"guard-{launch.role.name}@{launch.role.host.address}", daemon=True).start()
        return handle

    def _run_role(self, handle: SSHRoleHandle, events: Events) -> None:
        session, conn = handle.session, handle.conn
        role = session.launch.role
        try:
            channel = conn.open_channel(roleguard.bootstrap_argv(self.python))
        except Exception as exc:
            if isinstance(exc, paramiko.ChannelException):
                why = (f"sshd on {conn.host.target} refused another session ({exc}); sshd allows MaxSessions "
                       f"(default 10) roles per connection: raise it in sshd_config or place fewer roles there")
            else:
                why = f"could not open an SSH channel to {conn.host.target}: {describe_error(exc)}"
            now = time.time()
            events.put(RoleEnded(RoleResult(name=role.name, kind=role.kind, index=role.index, host=role.host.address,
                                            pid=None, start=now, end=now, exit_code=None, signal=None, error=why)))
            return
        channel.set_combine_stderr(True)  # the guard's own errors (bad interpreter, ...) reach the log
        stdout = channel.makefile("rb")
        handle.attach(channel, roleguard.bootstrap_payload() + session.config_line())

        def guard_status() -> Optional[int]:
            if channel.status_event.wait(GUARD_EXIT_WAIT):
                return channel.exit_status
            return None

        pump_guard_output(session, stdout, _LostConnection(events, conn), guard_status)

    def close(self) -> None:
        try:
            if self._run_dirs:
                fetch_run_files(self._role_hosts, *self._run_dirs, python=self.python, names=self._run_files)
        finally:
            for conn in self.connections.values():
                conn.close()


def remote_run_file(conn: Connection, python: str, folder: str, name: str, mode: str = "read",
                    limit: int = FETCH_LIMIT, timeout: Optional[float] = None) -> dict:
    """infra/transport/remote/run_file.py's reply for folder/name on `conn`'s host ("stat" or "read"): the file
    read there, never through a link, only as this user's regular file in this user's directory, at most
    `limit` bytes, within `timeout` s (FETCH_TIMEOUT). {"refused": why} for whatever kept it from being read
    ("timeout": True with it when the host gave no answer in time)."""
    return _run_file(conn, python, [mode, folder, name, str(limit)], limit * 4 // 3 + 4096, timeout)


def _run_file(conn: Connection, python: str, args: List[str], max_output: int, timeout: Optional[float]) -> dict:
    timeout = FETCH_TIMEOUT if timeout is None else timeout
    code, out, err = conn.run([python, "-c", source("run_file"), *args], timeout=timeout, max_output=max_output)
    reply = run_file.parse_reply(out) if code == 0 else None
    if reply is not None:
        return reply
    if code == -1:
        return {"refused": f"no answer within {timeout:g}s", "timeout": True}
    said = " ".join(err.strip().splitlines()[-1:])
    return {"refused": f"{python} gave no answer (exit status {code}{': ' + said if said else ''})"}


def fetch_limit(name: str) -> int:
    return FETCH_LIMIT if name in RUN_FILES else PROFILE_FETCH_LIMIT


def fetch_run_files(role_conns: List[Connection], local_dir: str, remote_dir: str, python: str,
                    warn: Callable[[str], None] = lambda text: print(f"launch: warning: {text}", file=sys.stderr),
                    names: Tuple[str, ...] = RUN_FILES) -> List[str]:
    """Bring the files roles wrote into their run directory (`remote_dir`, on their hosts) into the
    launcher's (`local_dir`): the newest copy on a host of the job wins and replaces the local one (a resumed
    job's metrics.jsonl holds every epoch). A copy that cannot be read safely (a link, another user's, too large,
    no answer in time) is left there, said in one line by `warn`. Each host is asked once for every file (one
    bounded answer), and a host that gave no answer in time is asked nothing more. Returns the local paths
    fetched."""
    wanted = [name for name in names if not (os.path.abspath(local_dir) == remote_dir
                                             and os.path.exists(os.path.join(local_dir, name)))]
    alive = [conn for conn in role_conns if conn.alive]
    if not wanted or not alive:
        return []
    replies = parallel(lambda conn: _run_file(conn, python, ["stats", remote_dir, *wanted], 1 << 20, None), alive,
                       timeout=FETCH_TIMEOUT + 5, name="run-file-stat")  # each bounded: this is a backstop
    newest: Dict[str, Tuple[float, Connection]] = {}
    for conn, reply in replies.items():
        reply = reply if isinstance(reply, dict) else {"refused": describe_error(reply)}
        if "refused" in reply:
            warn(f"{', '.join(wanted)} on {conn.host.target}: {reply['refused']}: not fetched")
        for name, found in (reply.get("files") or {}).items():
            if "refused" in found:
                warn(f"{name} on {conn.host.target}: {found['refused']}: not fetched")
            elif "mtime" in found and found["size"] > fetch_limit(name):
                warn(f"{name} on {conn.host.target}: {os.path.join(remote_dir, name)} is larger than "
                     f"{fetch_limit(name)} bytes: not fetched (left there)")
            elif "mtime" in found and (name not in newest or found["mtime"] > newest[name][0]):
                newest[name] = (found["mtime"], conn)
    fetched, silent = [], set()
    for name in wanted:
        if name in newest and newest[name][1] not in silent:
            conn, local = newest[name][1], os.path.join(local_dir, name)
            reply = _fetch_one(conn, python, remote_dir, name, local, warn, fetch_limit(name))
            if reply.get("timeout"):
                silent.add(conn)
            elif "data" in reply:
                fetched.append(local)
    return fetched


def _fetch_one(conn: Connection, python: str, remote_dir: str, name: str, local: str, warn, limit: int) -> dict:
    """The newest copy into `local`, whole or not at all (written beside it, then renamed). The host's reply:
    "data" in it when the copy was written ({"refused": why} else, said by `warn`)."""
    try:
        reply = remote_run_file(conn, python, remote_dir, name, "read", limit)
    except Exception as exc:  # the host went away: the run still has every log; the plot is what goes missing
        reply = {"refused": describe_error(exc)}
    if "data" not in reply:
        if "refused" in reply:
            warn(f"{name} on {conn.host.target}: {reply['refused']}: not fetched")
        return reply
    part = local + ".part"
    try:
        with open_new(part, "wb") as f:  # never through a planted link
            f.write(base64.b64decode(reply["data"]))
        os.replace(part, local)
        return reply
    except (OSError, ValueError, UsageError) as exc:
        with contextlib.suppress(OSError):
            os.remove(part)
        warn(f"{name} from {conn.host.target} not written to {local}: {getattr(exc, 'strerror', None) or exc}")
        return {"refused": str(exc)}
