"""The job's ports (the scheduler's, then one per server and worker), chosen without the probe-then-release race.

Binding port 0, reading the number and closing the socket leaves a window in which anything else can
take the port (and the kernel hands out exactly such ports as ephemeral ones). Instead: pick a random
port *outside* the kernel's ephemeral range (so no outgoing connection is ever given it), skip ports
already listening here, and let each role bind its own. A job takes a block of `span` consecutive ports: the scheduler's, then
one per server and worker in plan order (their `PORT`, which decides MXNet's ranks: launcher/jobs/plan.py).
The job confirms every bind from ps-lite's own lines; a failed or moved bind restarts the whole start on
another block (launcher/jobs/job.py).
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


def choose_port(rng: Optional[random.Random] = None, avoid: Iterable[int] = (), span: int = 1) -> int:
    """The first of `span` consecutive ports outside the ephemeral range that nothing here listens on;
    none of them in `avoid` (ports that failed before)."""
    rng = rng or random.SystemRandom()
    eph_low, eph_high = ephemeral_range()
    taken = listening_ports() | set(avoid)
    free = [p for p in range(LOW, HIGH + 1) if not (eph_low <= p <= eph_high) and p not in taken]
    if len(free) < span:  # an unusual ephemeral range covering everything: fall back to the whole span
        free = [p for p in range(LOW, HIGH + 1) if p not in taken]
    free_set = set(free)
    starts = [p for p in free if all(p + k in free_set for k in range(1, span))]
    return rng.choice(starts or free)


def bind_failed(log_tail: Iterable[str]) -> bool:
    """Whether a scheduler's last lines say it could not bind its port."""
    return any(marker in line for line in log_tail for marker in BIND_FAILED_MARKERS)
