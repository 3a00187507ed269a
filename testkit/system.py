"""Small system helpers the test bed is built from: run a command (bounded), pick a free private subnet or a free
port of 127.0.0.1, bounded polls, kill a set of pids and wait for them. No state; testkit.bed re-exports what
tests use."""
from __future__ import annotations

import ipaddress
import os
import random
import shutil
import signal
import socket
import subprocess
import time
from typing import List, Optional

IP = shutil.which("ip") or "/usr/sbin/ip"


class BedError(RuntimeError):
    pass


def run(*argv: str, timeout: float = 15, check: bool = True, input: Optional[bytes] = None) -> str:
    proc = subprocess.run(argv, capture_output=True, timeout=timeout, input=input,
                          stdin=None if input is not None else subprocess.DEVNULL)
    if check and proc.returncode != 0:
        raise BedError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.decode(errors='replace').strip()}")
    return proc.stdout.decode(errors="replace")


def used_networks() -> List[ipaddress.IPv4Network]:
    nets = []
    for line in run(IP, "-4", "-o", "addr", "show").splitlines() + run(IP, "-4", "route", "show").splitlines():
        for word in line.split():
            if "/" in word or word[:1].isdigit():
                try:
                    nets.append(ipaddress.IPv4Network(word, strict=False))
                except ValueError:
                    pass
    return nets


def pick_subnet6(rng: random.Random) -> ipaddress.IPv6Network:
    """A unique-local /64 (fd00::/8) that no address or route of this machine uses."""
    used = []
    for line in run(IP, "-6", "-o", "addr", "show").splitlines() + run(IP, "-6", "route", "show").splitlines():
        for word in line.split():
            try:
                used.append(ipaddress.IPv6Network(word, strict=False))
            except ValueError:
                pass
    for _ in range(200):
        net = ipaddress.IPv6Network(f"fd{rng.getrandbits(8):02x}:{rng.getrandbits(16):x}:{rng.getrandbits(16):x}::/64")
        if not any(net.overlaps(u) for u in used if u.prefixlen > 0):
            return net
    raise BedError("no free IPv6 /64 for the bed")


def pick_subnet(rng: random.Random) -> ipaddress.IPv4Network:
    used = used_networks()
    for _ in range(200):
        net = ipaddress.IPv4Network(f"10.{rng.randint(200, 254)}.{rng.randint(0, 255)}.0/24")
        if not any(net.overlaps(u) for u in used if u.prefixlen > 0):
            return net
    raise BedError("no free private /24 for the bed")


def pid_alive(pid: int) -> bool:
    """Alive and not a zombie (kill -0 calls a zombie alive)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on now (the kernel's pick)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float, interval: float = 0.02, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise BedError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def port_open(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=0.5):
            return True
    except OSError:
        return False


def read(path: str) -> str:
    try:
        with open(path) as fh:
            return fh.read()
    except OSError:
        return ""


def read_bytes(path: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError:
        return b""


def kill_and_wait(pids: List[int], timeout: float) -> List[int]:
    """TERM, wait (bounded), KILL, wait. Returns PIDs still alive."""
    pids = [p for p in pids if p != os.getpid()]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(pid_alive(p) for p in pids):
            time.sleep(0.02)
        pids = [p for p in pids if pid_alive(p)]
        if not pids:
            return []
    return pids
