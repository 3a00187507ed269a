"""One command on several hosts at once over the SSH transport, each host with its own outcome (fabric's
Group and GroupResult): connections open lazily, all hosts in parallel, and stay open for the next command.

    group = Group(options)                                   # nothing connects yet
    outcomes = group.run(hosts, ["true"], timeout=60)        # host -> Outcome, every host at once
    outcomes[host].ok, .status, .out, .err, .error, .why     # why: the transport's one line, "" when ok
    group.connection(host).sftp()                            # the same connection, for files
    group.close()

`connect` is the seam: the transport's own `connect` unless given (tests give a fake one and reach no host).
A connection that fails is dropped, so the next command to that host connects again (a booting host).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, Optional, Sequence, Union

from mxlaunch.infra.transport import timeouts
from mxlaunch.infra.transport.hosts import Host
from mxlaunch.infra.transport.ssh import Connection, SSHConnectError, connect, parallel
from mxlaunch.infra.transport.ssh_options import Endpoint, SSHOptions, _config, describe_error, failure_kind, resolve

Connector = Callable[[Host, SSHOptions], Connection]  # opens one authenticated connection, or raises


@dataclass(frozen=True)
class Outcome:
    """One host's result. `status`: the command's exit status, -1 when it timed out (it was then ended), None
    when it never ran; `error`: why it never ran (connecting, or the connection failing); `why`: one line
    (the transport's words) for anything but success."""

    host: Host
    status: Optional[int] = None
    out: str = ""
    err: str = ""
    error: Optional[BaseException] = None
    why: str = ""

    @property
    def ok(self) -> bool:
        return self.status == 0

    @property
    def kind(self) -> Optional[str]:
        """What a failure to connect says about the host (ssh_options.failure_kind); None when it answered."""
        return None if self.error is None else failure_kind(self.error)

    def tail(self, n: int = 300) -> str:
        """The end of what failed, on one line: the transport's reason when the command never ran, else the
        end of its output (stderr first), else `why`."""
        if self.error is not None:
            return self.why
        return " ".join((self.err or self.out).split())[-n:] or self.why


class Group:
    """Connections to any number of hosts with one set of SSH options; thread-safe."""

    def __init__(self, options: SSHOptions, connect: Optional[Connector] = None):
        self.options = options
        self._config = _config(options.config_path)
        self._connect = connect or (lambda host, opts: _default_connect(host, opts, self._config))
        self._lock = threading.Lock()
        self._open: Dict[Host, Connection] = {}

    def endpoint(self, host: Host) -> Endpoint:
        """Where `host` is reached (its ssh config's HostName, User, IdentityFile; the options)."""
        return resolve(host, self.options, self._config)

    def describe(self, host: Host, exc: BaseException) -> str:
        """The transport's one line for a failure with `host`."""
        return describe_error(exc, self.endpoint(host), self.options.connect_timeout)

    def _connection(self, host: Host) -> Connection:
        with self._lock:
            found = self._open.get(host)
        if found is not None and found.alive:
            return found
        conn = self._connect(host, self.options)
        with self._lock:
            stale, self._open[host] = self._open.get(host), conn
        if stale is not None:
            stale.close()
        return conn

    def connection(self, host: Host) -> Connection:
        """The open connection to `host`, connecting when there is none; SSHConnectError (one line) if it
        cannot."""
        try:
            return self._connection(host)
        except Exception as exc:
            raise SSHConnectError(f"{host.address}: {self.describe(host, exc)}") from exc

    def drop(self, host: Host) -> None:
        """Close the connection to `host` (the next command connects again)."""
        with self._lock:
            conn = self._open.pop(host, None)
        if conn is not None:
            conn.close()

    def _one(self, host: Host, argv: Sequence[str], timeout: float, stdin: Optional[bytes]) -> Outcome:
        try:
            conn = self._connection(host)
        except Exception as exc:
            return Outcome(host, error=exc, why=self.describe(host, exc))
        try:
            status, out, err = conn.run(argv, timeout=timeout, stdin=stdin)
        except Exception as exc:  # the connection broke under the command
            self.drop(host)
            return Outcome(host, error=exc, why=self.describe(host, exc))
        return Outcome(host, status, out, err, why="" if status == 0 else
                       f"timed out after {timeout:g}s" if status == -1 else f"exit {status}")

    def run(self, hosts: Iterable[Host], argv: Sequence[str], timeout: float = timeouts.COMMAND,
            stdin: Union[str, bytes, None] = None) -> Dict[Host, Outcome]:
        """`argv` on every host at once (connecting where needed); host -> Outcome. Bounded: connecting by
        the options' connect timeout, the command by `timeout`. A Ctrl-C raised while a host was served is
        raised here, after every host finished."""
        hosts = list(dict.fromkeys(hosts))
        data = stdin.encode() if isinstance(stdin, str) else stdin
        bound = timeout + 3 * self.options.connect_timeout + timeouts.KILL + timeouts.PID_WAIT
        found = parallel(lambda host: self._one(host, argv, timeout, data), hosts, timeout=bound, name="ssh-group")
        for value in found.values():
            if isinstance(value, BaseException) and not isinstance(value, Exception):
                raise value
        return {host: value if isinstance(value, Outcome) else
                Outcome(host, error=value, why=f"no answer within {bound:g}s") for host, value in found.items()}

    def close(self) -> None:
        with self._lock:
            conns, self._open = list(self._open.values()), {}
        for conn in conns:
            conn.close()

    def __enter__(self) -> "Group":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _default_connect(host: Host, options: SSHOptions, config) -> Connection:
    return connect(host, options, config)
