"""The scheduler's port, chosen without the probe-then-release race.

Binding port 0, reading the number and closing the socket leaves a window in which anything else can
take the port (and the kernel hands out exactly such ports as ephemeral ones). Instead: pick a random
port *outside* the kernel's ephemeral range (so no outgoing connection is ever given it), skip ports
already listening here, and let the scheduler itself bind it. The job waits for the scheduler to say it
bound the port before any other role starts (so no worker ever talks to a stranger on that port), and
if the bind fails it starts the scheduler again on another port (launcher/job.py).
"""
from __future__ import annotations

import random
from typing import Iterable, Optional, Set, Tuple

LOW, HIGH = 20000, 60999
BIND_FAILED_MARKERS = ("bind failed", "Address already in use")


def ephemeral_range(path: str = "/proc/sys/net/ipv4/ip_local_port_range") -> Tuple[int, int]:
    try:
        with open(path) as f:
            low, high = (int(x) for x in f.read().split())
        return low, high
    except (OSError, ValueError):
        return 32768, 60999  # Linux default


def listening_ports(paths: Iterable[str] = ("/proc/net/tcp", "/proc/net/tcp6")) -> Set[int]:
    """TCP ports in LISTEN state on this machine (empty where /proc/net is unavailable)."""
    ports: Set[int] = set()
    for path in paths:
        try:
            with open(path) as f:
                next(f, None)
                for line in f:
                    fields = line.split()
                    if len(fields) > 3 and fields[3] == "0A":
                        ports.add(int(fields[1].rsplit(":", 1)[1], 16))
        except OSError:
            continue
    return ports


def choose_port(rng: Optional[random.Random] = None, avoid: Iterable[int] = ()) -> int:
    """A port outside the ephemeral range that nothing here listens on, nor in `avoid`."""
    rng = rng or random.SystemRandom()
    eph_low, eph_high = ephemeral_range()
    taken = listening_ports() | set(avoid)
    candidates = [p for p in range(LOW, HIGH + 1) if not (eph_low <= p <= eph_high) and p not in taken]
    if not candidates:  # an unusual ephemeral range covering everything: fall back to the whole span
        candidates = [p for p in range(LOW, HIGH + 1) if p not in taken]
    return rng.choice(candidates)


def bind_failed(log_tail: Iterable[str]) -> bool:
    """Whether a scheduler's last lines say it could not bind its port."""
    return any(marker in line for line in log_tail for marker in BIND_FAILED_MARKERS)
