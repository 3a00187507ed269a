"""Hosts: the one `Host` type, and (later) the one hostfile parser."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class Host:
    """One machine that runs roles. `address` is a hostname, an IPv4 or a bare IPv6 address."""

    address: str
    user: Optional[str] = None
    port: Optional[int] = None  # SSH port; None = ssh config / 22
    slots: int = 1  # how many workers this host takes

    @classmethod
    def loopback(cls, slots: int = 1) -> "Host":
        return cls("127.0.0.1", slots=slots)
