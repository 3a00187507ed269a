"""Hosts: the one `Host` type, the one hostfile parser, and the pure placement of roles onto hosts.

Grammar, one host per line or per comma-separated entry of `--hosts`:

    [user@]host[:port] [slots=N]        # comment
    [user@][ipv6]:port  |  [user@][ipv6]  |  [user@]ipv6   (bare IPv6 only without a port)

`parse_hosts(spec)` is the single entry point for `--hosts FILE` and `--hosts h1,user@h2:2222`; every
error is a `HostfileError` (a UsageError, exit 2) naming the file (or `--hosts`), the line or entry, and
what was expected.
"""
from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass
from typing import Iterable, List, Optional, Sequence, Tuple

from mxlaunch.errors import UsageError

EXPECTED = "expected [user@]host[:port] [slots=N]"
_USER = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_DIGITS = re.compile(r"[0-9]{1,6}")  # ASCII only: str.isdigit() also takes '²', which int() refuses
_ZONE = re.compile(r"[A-Za-z0-9_.-]{1,64}")  # an interface name: it reaches ssh and the roles' environment
DEFAULT_SSH_PORT = 22
_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9_]([A-Za-z0-9_-]{0,62})(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,62}))*\.?$")


class HostfileError(UsageError):
    """A hostfile (or --hosts list) that cannot be used as given."""


@dataclass(frozen=True)
class Host:
    """One machine that runs roles. `address` is a hostname, an IPv4 or a bare IPv6 address."""

    address: str
    user: Optional[str] = None
    port: Optional[int] = None  # SSH port; None = ssh config / 22
    slots: int = 1  # how many workers this host takes (0: scheduler/servers only)

    @classmethod
    def loopback(cls, slots: int = 1) -> "Host":
        return cls("127.0.0.1", slots=slots)

    @property
    def is_ipv6(self) -> bool:
        return ":" in self.address

    @property
    def target(self) -> str:
        """`[user@]host[:port]` as written in a hostfile (IPv6 in brackets when a port follows)."""
        addr = f"[{self.address}]" if self.is_ipv6 and self.port else self.address
        user = f"{self.user}@" if self.user else ""
        port = f":{self.port}" if self.port else ""
        return f"{user}{addr}{port}"

    def __str__(self) -> str:
        return self.target


# ---------------------------------------------------------------------------------------------- parsing

def _fail(where: str, why: str, text: str) -> HostfileError:
    return HostfileError(f"{where}: {why}, got {text!r} ({EXPECTED})")


def _check_address(addr: str, where: str, text: str) -> str:
    if ":" in addr:
        _, percent, zone = addr.partition("%")
        if percent and not _ZONE.fullmatch(zone):
            raise _fail(where, f"IPv6 zone id {zone!r} may hold only letters, digits, '_', '.' and '-'", text)
        try:
            return str(ipaddress.IPv6Address(addr))
        except ValueError:
            raise _fail(where, f"{addr!r} is not a valid IPv6 address", text) from None
    if re.fullmatch(r"[0-9.]+", addr):
        try:
            return str(ipaddress.IPv4Address(addr))
        except ValueError:
            raise _fail(where, f"{addr!r} is not a valid IPv4 address", text) from None
    if not _HOSTNAME.match(addr):
        raise _fail(where, f"{addr!r} is not a valid host name", text)
    return addr


def _check_port(port: str, where: str, text: str) -> int:
    if not _DIGITS.fullmatch(port) or not 1 <= int(port) <= 65535:
        raise _fail(where, f"port {port!r} is not a number in 1..65535", text)
    return int(port)


def parse_host(text: str, where: str = "--hosts") -> Host:
    """Parse one entry `[user@]host[:port] [slots=N]` (no comment, not blank). `where` prefixes errors."""
    fields = text.split()
    if not fields:
        raise _fail(where, "empty host entry", text)
    target, options = fields[0], fields[1:]
    slots = 1
    seen_slots = False
    for opt in options:
        key, eq, value = opt.partition("=")
        if key != "slots" or not eq:
            raise _fail(where, f"unknown field {opt!r}", text)
        if seen_slots:
            raise _fail(where, "slots given twice", text)
        if not _DIGITS.fullmatch(value):
            raise _fail(where, f"slots must be a whole number from 0 to 999999, not {value!r}", text)
        slots, seen_slots = int(value), True

    user: Optional[str] = None
    if "@" in target:
        user, _, target = target.rpartition("@")
        if not _USER.match(user):
            raise _fail(where, f"{user!r} is not a valid user name", text)
    port: Optional[int] = None
    if target.startswith("["):
        close = target.find("]")
        if close < 0:
            raise _fail(where, "'[' without ']' around an IPv6 address", text)
        addr, rest = target[1:close], target[close + 1:]
        if ":" not in addr:
            raise _fail(where, "brackets are only for IPv6 addresses", text)
        if rest:
            if not rest.startswith(":"):
                raise _fail(where, f"unexpected {rest!r} after ']'", text)
            port = _check_port(rest[1:], where, text)
    elif target.count(":") == 1:
        addr, _, port_text = target.partition(":")
        port = _check_port(port_text, where, text)
    else:  # a name, IPv4, or a bare IPv6 address (no port possible without brackets)
        addr = target
    if not addr:
        raise _fail(where, "missing host", text)
    return Host(_check_address(addr, where, text), user=user, port=port, slots=slots)


def _entries_from_file(path: str) -> List[Tuple[str, str]]:
    try:
        with open(path, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise HostfileError(f"cannot read hostfile {path}: {getattr(exc, 'strerror', None) or exc}") from exc
    entries = []
    for number, line in enumerate(lines, 1):
        body = line.split("#", 1)[0].strip()
        if body:
            entries.append((f"{path}:{number}", body))
    if not entries:
        raise HostfileError(f"{path}: no hosts in the hostfile ({EXPECTED}, one per line)")
    return entries


def _entries_from_list(spec: str) -> List[Tuple[str, str]]:
    parts = spec.split(",")
    entries = []
    for number, part in enumerate(parts, 1):
        body = part.strip()
        if not body:
            raise HostfileError(f"--hosts entry {number}: empty entry in {spec!r} ({EXPECTED}, comma-separated)")
        entries.append((f"--hosts entry {number}", body))
    return entries


def looks_like_file(spec: str) -> bool:
    """A `--hosts` value names a file when such a file exists or it contains a path separator."""
    return os.path.isfile(spec) or os.sep in spec or spec.startswith(("~", "."))


def parse_hosts(spec: str) -> Tuple[Host, ...]:
    """`--hosts FILE` or `--hosts h1,user@h2:2222`: the hosts, in order. Duplicates are an error."""
    spec = (spec or "").strip()
    if not spec:
        raise HostfileError(f"--hosts: empty ({EXPECTED}, or a hostfile)")
    if looks_like_file(spec):
        path = os.path.expanduser(spec)
        if not os.path.exists(path):
            raise HostfileError(f"hostfile {spec} does not exist")
        entries = _entries_from_file(path)
    else:
        entries = _entries_from_list(spec)
    return _unique([(where, parse_host(body, where)) for where, body in entries])


def parse_hostfile_text(text: str, name: str = "hostfile") -> Tuple[Host, ...]:
    """Parse hostfile content (used for rendered files and tests); errors name `name:line`."""
    entries = [(f"{name}:{n}", line.split("#", 1)[0].strip()) for n, line in enumerate(text.splitlines(), 1)]
    entries = [(w, b) for w, b in entries if b]
    if not entries:
        raise HostfileError(f"{name}: no hosts ({EXPECTED}, one per line)")
    return _unique([(where, parse_host(body, where)) for where, body in entries])


def _unique(parsed: Sequence[Tuple[str, Host]]) -> Tuple[Host, ...]:
    """Each machine once: the same address and SSH port (no port is SSH's 22) twice is refused."""
    first_seen = {}
    for where, host in parsed:
        key = (host.address.lower(), host.port or DEFAULT_SSH_PORT)
        if key in first_seen:
            raise HostfileError(f"{where}: host {host.target} is listed twice (first at {first_seen[key]}); "
                                f"give it slots=N instead")
        first_seen[key] = where
    return tuple(host for _, host in parsed)


# -------------------------------------------------------------------------------------------- placement

@dataclass(frozen=True)
class Placement:
    """Which host runs which role. `servers[i]` runs server i, `workers[r]` runs worker rank r."""

    scheduler: Host
    servers: Tuple[Host, ...]
    workers: Tuple[Host, ...]

    def roles(self) -> Tuple[Tuple[str, int, Host], ...]:
        """(role, index, host) in start order: scheduler, servers, workers."""
        return ((("scheduler", 0, self.scheduler),)
                + tuple(("server", i, h) for i, h in enumerate(self.servers))
                + tuple(("worker", i, h) for i, h in enumerate(self.workers)))

    def hosts_used(self) -> Tuple[Host, ...]:
        seen: List[Host] = []
        for _, _, host in self.roles():
            if host not in seen:
                seen.append(host)
        return tuple(seen)


def place(hosts: Iterable[Host], num_workers: int, num_servers: int) -> Placement:
    """Pure placement: scheduler on the first host, servers round-robin over all hosts, workers fill each
    host's slots in hostfile order (ranks contiguous per host). More workers than slots is an error."""
    hosts = tuple(hosts)
    if not hosts:
        raise UsageError("no hosts to place the job on")
    if num_workers < 1:
        raise UsageError(f"need at least 1 worker, got {num_workers}")
    if num_servers < 0:
        raise UsageError(f"the number of servers cannot be negative, got {num_servers}")
    total = sum(h.slots for h in hosts)
    if num_workers > total:
        raise UsageError(f"{num_workers} workers need {num_workers} slots but the hosts offer {total} "
                         f"(raise slots=N in the hostfile or use fewer workers)")
    workers: List[Host] = []
    for host in hosts:
        workers.extend([host] * min(host.slots, num_workers - len(workers)))
    servers = tuple(hosts[i % len(hosts)] for i in range(num_servers))
    return Placement(scheduler=hosts[0], servers=servers, workers=tuple(workers))
