"""SSH connections (paramiko): one per host, opened in parallel, shared by every role on that host.

    options = SSHOptions(key="~/.ssh/id_ed25519", user="ubuntu", known_hosts=None, accept_new=False)
    results = connect_all(hosts, options)          # HostResults: host -> Connection | exception
    results.raise_if_failed()                      # SSHConnectError: one line per failed host
    conn = results[host]; conn.run(["uname", "-a"], timeout=10)  # -> (rc, stdout, stderr)

Where a setting comes from (first found wins):
  user: `user@` in the hostfile, `--ssh-user`, `User` in ~/.ssh/config, the local user name.
  port: `:port` in the hostfile, `Port` in ~/.ssh/config, 22.
  address: `HostName` in ~/.ssh/config for the hostfile's name, else the name itself.
  keys: `--ssh-key`, then `IdentityFile`s of ~/.ssh/config, then ssh-agent keys; the default
        ~/.ssh/id_* files only when neither --ssh-key nor IdentityFile is given.
Host keys are always checked, against `--known-hosts` (else ~/.ssh/known_hosts and
/etc/ssh/ssh_known_hosts). A host with no known key is refused unless `accept_new`, which appends its
key to the known-hosts file (--known-hosts, else ~/.ssh/known_hosts). A known host whose key differs is
refused always (never "accept anything").

Every wait is bounded (the bounds: infra/transport/timeouts.py): TCP connect, SSH banner, authentication and
channel opening use `connect_timeout`; `run` takes its own timeout; `parallel` gives all hosts one deadline.
This is the product's one SSH transport: jobs, checkpoint scans, `launch cluster put/exec`, detach, and the
cluster steps (`up --wait ssh`, repair's probe, through infra/transport/group.py and upload.py) all use it;
only the interactive `launch cluster ssh` runs OpenSSH.
One connection per host carries every role's channel; only where sshd refuses another session
(MaxSessions, 10 by default) is an extra connection to that host opened. `Connection.watch` pings the
server and gives a silent host up after a timeout (a partition sends no FIN and no RST).
"""
from __future__ import annotations

import os
import secrets
import select
import shlex
import socket
import threading
import time
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import paramiko

from mxlaunch.errors import CommandError
from mxlaunch.exits import Exit
from mxlaunch.infra.transport import timeouts
from mxlaunch.infra.transport.hosts import Host
from mxlaunch.infra.transport.ssh_options import (DEFAULT_KNOWN_HOSTS, SYSTEM_KNOWN_HOSTS, Endpoint, SSHOptions, _config,
                                          _KnownHostsPolicy, describe_error, resolve)

MAX_EXTRA_CONNECTIONS = 8  # like ssh(1): the connection, not the remote command, failed
PID_WAIT = timeouts.PID_WAIT
MAX_OUTPUT = 64 << 20  # bytes of one stream `run` keeps: a command that says more is ended, not buffered on
PID_MARK = "@@mxlaunch-pid"  # with a token per channel: the wrapper's own line, not a start-up file's


class SSHConnectError(CommandError):
    """One or more hosts could not be connected to; the message has one line per host."""

    exit_code = Exit.SSH


class Connection:
    """One authenticated SSH connection to one host. Thread-safe: roles open channels concurrently."""

    def __init__(self, endpoint: Endpoint, client: paramiko.SSHClient, ip: str):
        self.endpoint = endpoint
        self.client = client
        self.ip = ip  # the address we actually reached (use for DMLC_NODE_HOST when the name is not an IP)
        self.timeout = timeouts.CONNECT
        self.lost: Optional[str] = None  # why the liveness watch gave the connection up
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._extra: List[paramiko.SSHClient] = []  # only when sshd's MaxSessions is reached
        self._reconnect: Optional[Callable[[], "Connection"]] = None

    @property
    def host(self) -> Host:
        return self.endpoint.host

    @property
    def transport(self) -> paramiko.Transport:
        return self.client.get_transport()

    @property
    def alive(self) -> bool:
        t = self.client.get_transport()
        return bool(t and t.is_active())

    def open_channel(self, argv: Union[str, Sequence[str]], timeout: Optional[float] = None) -> paramiko.Channel:
        """Start a remote command on a new channel of this connection. A list is quoted for the remote
        shell (`shlex.join`), so every argument arrives exactly. Never put secrets in `argv`."""
        command = argv if isinstance(argv, str) else shlex.join([str(a) for a in argv])
        channel = self._open_session(timeout or self.timeout)
        channel.exec_command(command)
        return channel

    def _open_session(self, timeout: float) -> paramiko.Channel:
        """A session on this connection; when sshd refuses one more (its MaxSessions, 10 by default), on
        an extra connection to the same host, opened as this one was (at most MAX_EXTRA_CONNECTIONS)."""
        with self._lock:
            clients = [self.client] + self._extra
        for client in clients:
            try:
                return client.get_transport().open_session(timeout=timeout)
            except paramiko.ChannelException:
                continue
        with self._lock:
            if self._reconnect is None or len(self._extra) >= MAX_EXTRA_CONNECTIONS:
                raise paramiko.ChannelException(2, f"sshd refused another session on {len(clients)} connection(s) "
                                                   f"(its MaxSessions)")
        extra = self._reconnect().client
        with self._lock:
            self._extra.append(extra)
        return extra.get_transport().open_session(timeout=timeout)

    def sftp(self, timeout: float = timeouts.SFTP_REQUEST) -> paramiko.SFTPClient:
        """An SFTP session on this connection; every request on it is bounded by `timeout` seconds (a host
        that stops answering raises instead of hanging the caller)."""
        sftp = self.client.open_sftp()
        sftp.get_channel().settimeout(timeout)
        return sftp

    def open_with_pid(self, argv: Union[str, Sequence[str]], timeout: Optional[float] = None) -> paramiko.Channel:
        """`open_channel`, the remote command's pid first on its stdout, on a line that begins with a marker made
        for this channel (`pid_in` finds it): without a pty, closing the channel does not end a remote command,
        so whoever may have to end it (`kill_group`) reads it first. What a shell start-up file prints comes
        before that line (a line of its own, even after output without a newline) and is never taken for the pid. A string is a command line for the remote shell; a
        list, an argv that arrives exactly."""
        marker = f"{PID_MARK}-{secrets.token_hex(8)}"
        # the wrapper prints its pid, then becomes the command (sshd made it a session, and group, leader); the
        # line begins with a newline: a start-up file's output that ends without one would otherwise begin it
        mark = r'printf "\n%s %s\n" "$1" "$$"'
        wrapped = (["sh", "-c", f'{mark}; exec sh -c "$2"', "sh", marker, argv] if isinstance(argv, str)
                   else ["sh", "-c", f'{mark}; shift; exec "$@"', "sh", marker, *[str(a) for a in argv]])
        channel = self.open_channel(wrapped, timeout=timeout)
        channel.pid_marker = marker.encode()
        return channel

    @staticmethod
    def pid_in(channel: paramiko.Channel, line: Union[bytes, str]) -> Optional[str]:
        """The pid on `line` when it is the wrapper's line of `channel` (open_with_pid), else None. Never 0 or
        1: `kill -- -1` would signal every process of the user."""
        words = (line.encode() if isinstance(line, str) else bytes(line)).split()
        if len(words) == 2 and words[0] == getattr(channel, "pid_marker", None) and words[1].isdigit() \
                and int(words[1]) > 1:
            return words[1].decode()
        return None

    @classmethod
    def _split_pid(cls, channel: paramiko.Channel, out: Union[bytes, bytearray]) -> Tuple[Optional[str], bytes]:
        """(the pid of the wrapper's line in `out`, what follows that line: the command's own output); without
        the line yet: (None, all of `out`)."""
        start = 0
        while True:
            end = out.find(b"\n", start)
            if end < 0:
                return None, bytes(out)
            pid = cls.pid_in(channel, out[start:end])
            if pid is not None:
                return pid, bytes(out[end + 1:])
            start = end + 1

    @classmethod
    def _pid_line(cls, channel: paramiko.Channel, out: bytearray, wait: float = PID_WAIT) -> Optional[str]:
        """The pid of a command started by `open_with_pid`: a slow host may not have sent it by the caller's
        deadline, and without it the command could not be ended; waited for, bounded."""
        until = time.monotonic() + wait
        while cls._split_pid(channel, out)[0] is None and time.monotonic() < until and not channel.closed:
            if channel.recv_ready():
                out += channel.recv(65536)
            else:
                select.select([channel], [], [], 0.05)
        return cls._split_pid(channel, out)[0]

    def kill_group(self, pid: Optional[Union[bytes, str]], signal_name: str = "KILL") -> None:
        """Send a signal to the process group of a command started by `open_with_pid` (and to the process
        itself, should it lead none), bounded; a host gone away leaves nothing to signal from here. `pid` is
        what `pid_in` found: anything but a number above 1 is ignored."""
        pid = (pid.decode(errors="replace") if isinstance(pid, bytes) else pid or "").strip()
        if not pid.isdigit() or int(pid) <= 1:
            return
        try:
            channel = self.open_channel(["kill", f"-{signal_name}", "--", f"-{pid}", pid], timeout=timeouts.KILL)
            channel.shutdown_write()
            channel.status_event.wait(timeouts.KILL)
            channel.close()
        except Exception:
            pass

    def run(self, argv: Union[str, Sequence[str]], timeout: float = timeouts.COMMAND,
            stdin: Optional[bytes] = None, max_output: int = MAX_OUTPUT) -> Tuple[int, str, str]:
        """Run a command to its end (bounded in time and in what is kept of its output): (exit status, stdout,
        stderr). -1 when it timed out or wrote more than `max_output` bytes to either stream, and then the
        command is killed: without a pty, closing the channel does not end it on the host."""
        channel = self.open_with_pid(argv, timeout=timeout)
        deadline = time.monotonic() + timeout
        out, err = bytearray(), bytearray()

        def text() -> Tuple[str, str]:  # stdout after the wrapper's pid line (a start-up file's noise before it)
            return self._split_pid(channel, out)[1].decode(errors="replace"), err.decode(errors="replace")
        try:
            if stdin:
                channel.sendall(stdin)
            channel.shutdown_write()
            while True:
                if len(out) > max_output or len(err) > max_output:
                    self.kill_group(self._pid_line(channel, out))
                    return -1, text()[0][:max_output], f"its output passed {max_output} bytes: ended"
                if channel.recv_ready():
                    out += channel.recv(65536)
                elif channel.recv_stderr_ready():
                    err += channel.recv_stderr(65536)
                elif channel.exit_status_ready() and (channel.eof_received or channel.closed):
                    break
                elif time.monotonic() >= deadline:
                    self.kill_group(self._pid_line(channel, out))
                    return (-1, *text())
                else:
                    select.select([channel], [], [], 0.05)
            return (channel.recv_exit_status(), *text())
        finally:
            channel.close()

    def stream(self, command: str, out: Callable[[str], None], err: Callable[[str], None],
               started: Callable[[str], None] = lambda pid: None) -> int:
        """Run `command` on this host, passing its output on line by line; its exit status (the remote
        process group is killed if we are interrupted: without a pty, closing the channel would not).
        `started` gets the remote pid line, for a caller in another thread that may have to `kill_group` it."""
        channel = self.open_with_pid(command)
        channel.shutdown_write()
        stdout, stderr = channel.makefile("rb"), channel.makefile_stderr("rb")
        pid, held = None, None
        for raw in stdout:  # what a shell start-up file printed comes first: passed on, never taken for the pid
            pid = self.pid_in(channel, raw)
            if pid is not None:
                break
            if held is not None:
                out(held)
            held = raw.decode(errors="replace").rstrip("\n")
        # the line just before the pid line was ended by the wrapper's leading newline: empty, it is the wrapper's
        if held is not None and (held or pid is None):
            out(held)
        started(pid or "")
        errors = threading.Thread(target=lambda: [err(line) for line in _lines(stderr)], daemon=True)
        errors.start()
        try:
            for line in _lines(stdout):
                out(line)
            errors.join(timeout=10)
            status = channel.recv_exit_status()
            # -1: sshd reported a signal, not a status; 255 would read as "could not reach the host" (Exit.SSH)
            return Exit.FAILED if status < 0 else status
        except BaseException:
            self.kill_group(pid, "TERM")
            raise
        finally:
            channel.close()

    def watch(self, interval: float = timeouts.PING_INTERVAL, timeout: float = timeouts.PING_TIMEOUT) -> None:
        """Ask the server for a reply every `interval` s; when none comes within `timeout` s (a silent
        network partition: no FIN, no RST, TCP would wait many minutes) close the connection, so that
        every channel on it ends at once and its roles are reported lost. paramiko's own keepalive
        wants no reply, so it cannot tell."""
        def ask(done: threading.Event) -> None:
            try:
                self.transport.global_request("keepalive@openssh.com", wait=True)
            except Exception:
                pass
            done.set()

        def loop() -> None:
            while self.alive and not self._closed.wait(interval):
                done = threading.Event()
                threading.Thread(target=ask, args=(done,), name=f"ssh-ping-{self.endpoint.hostname}",
                                 daemon=True).start()
                if not done.wait(timeout) and not self._closed.is_set():
                    self.lost = f"no answer for {timeout:g}s"
                    self._close_clients()
                    return

        threading.Thread(target=loop, name=f"ssh-watch-{self.endpoint.hostname}", daemon=True).start()

    def _close_clients(self) -> None:
        with self._lock:
            extra, self._extra = self._extra, []
        for client in [self.client] + extra:
            client.close()

    def close(self) -> None:
        self._closed.set()
        self._close_clients()

    def __repr__(self) -> str:
        return f"<Connection {self.endpoint.label} ip={self.ip}>"


def _lines(stream) -> Iterator[str]:
    for raw in stream:
        yield raw.decode(errors="replace").rstrip("\n")


def connect(host: Host, options: SSHOptions, config: Optional[paramiko.SSHConfig] = None) -> Connection:
    """Open and authenticate one connection (bounded by options.connect_timeout). Raises on failure."""
    endpoint = resolve(host, options, config)
    timeout = options.connect_timeout
    sock = socket.create_connection((endpoint.hostname, endpoint.port), timeout=timeout)
    client = paramiko.SSHClient()
    try:
        ip = sock.getpeername()[0]
        if options.known_hosts:
            path = os.path.expanduser(options.known_hosts)
            if os.path.exists(path):
                client.load_host_keys(path)
        else:
            for path in (SYSTEM_KNOWN_HOSTS, DEFAULT_KNOWN_HOSTS):
                if os.path.exists(os.path.expanduser(path)):
                    client.load_system_host_keys(os.path.expanduser(path))
        record = os.path.expanduser(options.known_hosts or DEFAULT_KNOWN_HOSTS) if options.accept_new else None
        client.set_missing_host_key_policy(_KnownHostsPolicy(record))
        client.connect(endpoint.hostname, port=endpoint.port, username=endpoint.user,
                       key_filename=list(endpoint.key_files) or None, timeout=timeout, sock=sock,
                       allow_agent=options.use_agent, look_for_keys=endpoint.look_for_keys,
                       banner_timeout=timeout, auth_timeout=timeout, channel_timeout=timeout)
    except BaseException:
        client.close()  # stops the transport thread before the socket goes
        sock.close()
        raise
    conn = Connection(endpoint, client, ip)
    conn.timeout = timeout
    conn._reconnect = lambda: connect(host, options, config)
    return conn


class HostResults(Dict[Host, Union[Connection, BaseException]]):
    """host -> Connection, or the exception connecting raised (fabric's GroupResult, for connections)."""

    def __init__(self, *args, endpoints: Optional[Dict[Host, Endpoint]] = None, timeout: float = 0, **kw):
        super().__init__(*args, **kw)
        self.endpoints = endpoints or {}
        self.timeout = timeout

    @property
    def succeeded(self) -> Dict[Host, Connection]:
        return {h: r for h, r in self.items() if isinstance(r, Connection)}

    @property
    def failed(self) -> Dict[Host, BaseException]:
        return {h: r for h, r in self.items() if not isinstance(r, Connection)}

    def message(self, host: Host) -> str:
        result = self[host]
        return "ok" if isinstance(result, Connection) else describe_error(result, self.endpoints.get(host),
                                                                          self.timeout)

    def lines(self) -> List[str]:
        return [f"{h.target}: {self.message(h)}" for h in self.failed]

    def raise_if_failed(self) -> None:
        if self.failed:
            raise SSHConnectError("; ".join(self.lines()))

    def close(self) -> None:
        for conn in self.succeeded.values():
            conn.close()


def connect_all(hosts: Iterable[Host], options: SSHOptions) -> HostResults:
    """One connection per distinct host, all opened in parallel; every host gets a result."""
    hosts = list(dict.fromkeys(hosts))
    config = _config(options.config_path)
    endpoints = {h: resolve(h, options, config) for h in hosts}
    results = HostResults(endpoints=endpoints, timeout=options.connect_timeout)
    if not hosts:
        return results
    for host, result in parallel(lambda h: connect(h, options, config), hosts,
                                 timeout=3 * options.connect_timeout + 5, name="ssh-connect").items():
        results[host] = result
    return results


def parallel(fn, items, timeout: float, name: str = "parallel") -> dict:
    """fn(item) for every item at once, one daemon thread each; item -> result, or the exception it
    raised, or a TimeoutError when it had not finished `timeout` s after the start (it is then left
    behind: nothing waits for it, so a stuck host never holds up the others or the caller)."""
    items = list(items)
    results: dict = {}
    done = threading.Condition()

    def run(item) -> None:
        try:
            value = fn(item)
        except BaseException as exc:  # every item gets its own result; reported by the caller
            value = exc
        with done:
            results[item] = value
            done.notify_all()

    for i, item in enumerate(items):
        threading.Thread(target=run, args=(item,), name=f"{name}-{i}", daemon=True).start()
    deadline = time.monotonic() + timeout
    with done:
        while len(results) < len(items) and done.wait(max(0.0, deadline - time.monotonic())):
            pass
        finished = dict(results)
    return {item: finished.get(item, TimeoutError(f"did not finish within {timeout:g}s")) for item in items}
