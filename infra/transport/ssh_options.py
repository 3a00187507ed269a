"""Where and how to reach a host over SSH, before any connection: the options (--ssh-key, --ssh-user,
--known-hosts, accept-new), the endpoint they resolve to with ~/.ssh/config (see infra/transport/ssh.py's docstring for
the order), the host-key policy, and the transport's error vocabulary: the one line that explains a failed
connection (`describe_error`) and what it says about the host (`failure_kind`)."""
from __future__ import annotations

import base64
import errno
import getpass
import hashlib
import os
import socket
import threading
from dataclasses import dataclass
from typing import List, Optional, Tuple

import paramiko

from mxlaunch.errors import CommandError
from mxlaunch.infra.transport import timeouts
from mxlaunch.infra.transport.hosts import Host

DEFAULT_CONFIG = "~/.ssh/config"
DEFAULT_KNOWN_HOSTS = "~/.ssh/known_hosts"
SYSTEM_KNOWN_HOSTS = "/etc/ssh/ssh_known_hosts"

_known_hosts_lock = threading.Lock()


class HostKeyError(Exception):
    """The host's key is unknown (and accept-new is off) or differs from the recorded one."""


@dataclass(frozen=True)
class SSHOptions:
    key: Optional[str] = None  # --ssh-key
    user: Optional[str] = None  # --ssh-user
    known_hosts: Optional[str] = None  # --known-hosts
    accept_new: bool = False  # --accept-new-host-keys
    config_path: Optional[str] = DEFAULT_CONFIG  # None: no ssh config
    use_agent: bool = True
    connect_timeout: float = timeouts.CONNECT


@dataclass(frozen=True)
class Endpoint:
    """Where and as whom to connect for one hostfile Host, after ~/.ssh/config and the options."""

    host: Host
    hostname: str
    port: int
    user: str
    key_files: Tuple[str, ...]
    look_for_keys: bool

    @property
    def label(self) -> str:
        return f"{self.user}@{self.hostname}:{self.port}"


def _config(path: Optional[str]) -> Optional[paramiko.SSHConfig]:
    if not path:
        return None
    path = os.path.expanduser(path)
    if not os.path.isfile(path):
        return None
    try:
        return paramiko.SSHConfig.from_path(path)
    except Exception as exc:
        raise CommandError(f"cannot read ssh config {path}: {exc}") from exc


def resolve(host: Host, options: SSHOptions, config: Optional[paramiko.SSHConfig] = None) -> Endpoint:
    """Pure (given the parsed config): the endpoint for `host`. Precedence in the module docstring."""
    entry = config.lookup(host.address) if config else {}
    hostname = entry.get("hostname", host.address)
    port = host.port or int(entry.get("port", 22))
    user = host.user or options.user or entry.get("user") or getpass.getuser()
    keys: List[str] = []
    if options.key:
        keys.append(os.path.expanduser(options.key))
    for path in entry.get("identityfile", []) if config else []:
        path = os.path.expanduser(path)
        if path not in keys and os.path.exists(path):
            keys.append(path)
    return Endpoint(host, hostname, port, user, tuple(keys), look_for_keys=not keys)


def fingerprint(key: paramiko.PKey) -> str:
    digest = hashlib.sha256(key.asbytes()).digest()
    return f"{key.get_name()} SHA256:{base64.b64encode(digest).decode().rstrip('=')}"


class _KnownHostsPolicy(paramiko.MissingHostKeyPolicy):
    """Called by paramiko only for a host with no recorded key: refuse, or record it (accept-new)."""

    def __init__(self, record_to: Optional[str]):
        self.record_to = record_to  # None: refuse

    def missing_host_key(self, client, hostname, key):
        if self.record_to is None:
            raise HostKeyError(f"host key {fingerprint(key)} is not in known_hosts; check it and add it "
                               f"(ssh-keyscan), or pass --accept-new-host-keys")
        line = f"{hostname} {key.get_name()} {key.get_base64()}\n"
        with _known_hosts_lock:
            os.makedirs(os.path.dirname(self.record_to) or ".", mode=0o700, exist_ok=True)
            with open(self.record_to, "a") as fh:
                fh.write(line)
        client.get_host_keys().add(hostname, key.get_name(), key)


REFUSED = "refused"  # nothing listens on the port (sshd not started yet)
UNREACHABLE = "unreachable"  # no answer at all: host down, port filtered, no route
LOGIN = "login"  # SSH answered; authentication failed
HOST_KEY = "host key"  # SSH answered with a key that is not accepted (unknown, or changed)
OTHER = "other"


def failure_kind(exc: BaseException) -> str:
    """What an exception raised while connecting says about the host: one of REFUSED, UNREACHABLE, LOGIN,
    HOST_KEY, OTHER (the SSH handshake itself failed, e.g. no banner from a booting host)."""
    if isinstance(exc, (HostKeyError, paramiko.BadHostKeyException)):
        return HOST_KEY
    if isinstance(exc, (paramiko.AuthenticationException, paramiko.PasswordRequiredException)) or (
            isinstance(exc, paramiko.SSHException) and "No authentication methods available" in str(exc)):
        return LOGIN
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return UNREACHABLE
    if isinstance(exc, ConnectionRefusedError) or getattr(exc, "errno", None) == errno.ECONNREFUSED:
        return REFUSED
    if isinstance(exc, OSError) and exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        return UNREACHABLE
    return OTHER


def describe_error(exc: BaseException, endpoint: Optional[Endpoint] = None, timeout: float = 0) -> str:
    """One line a user can act on, for an exception raised while connecting."""
    where = endpoint.label if endpoint else "host"
    if isinstance(exc, HostKeyError):
        return str(exc)
    if isinstance(exc, paramiko.BadHostKeyException):
        return (f"host key {fingerprint(exc.key)} does NOT match the one in known_hosts "
                f"({fingerprint(exc.expected_key)}): refusing (possible man-in-the-middle, or a reinstalled host: "
                f"remove its old line from known_hosts)")
    if isinstance(exc, paramiko.PasswordRequiredException):
        return (f"key {', '.join(endpoint.key_files) if endpoint else ''} is protected by a passphrase: "
                f"add it to ssh-agent (ssh-add) and leave --ssh-key out")
    if isinstance(exc, paramiko.AuthenticationException):
        tried = ", ".join(endpoint.key_files) if endpoint and endpoint.key_files else "default keys"
        return f"authentication failed as {endpoint.user if endpoint else '?'} (tried {tried} and ssh-agent)"
    if isinstance(exc, paramiko.SSHException) and "No authentication methods available" in str(exc):
        return (f"no key to authenticate as {endpoint.user if endpoint else '?'}: pass --ssh-key, "
                f"set IdentityFile in ~/.ssh/config, or add a key to ssh-agent")
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return f"cannot connect to {where}: timed out after {timeout:g}s (host down or port filtered?)"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve host name {endpoint.hostname if endpoint else ''}: {exc.strerror}"
    if isinstance(exc, ConnectionRefusedError) or getattr(exc, "errno", None) == errno.ECONNREFUSED:
        return f"cannot connect to {where}: connection refused (is sshd running on port {endpoint.port if endpoint else 22}?)"
    if isinstance(exc, OSError) and exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        return f"cannot connect to {where}: {exc.strerror}"
    if isinstance(exc, paramiko.SSHException):
        return f"ssh error with {where}: {' '.join(str(exc).split())}"
    if isinstance(exc, OSError):
        return f"cannot connect to {where}: {exc.strerror or exc}"
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"
