"""A real multi-host cluster on this machine: network namespaces on a private bridge, one sshd each.

    bed = up(3)          # Bed: .hosts (launcher Host objects), .key, .known_hosts, .shared, ...
    ...
    bed.down()           # kills everything in the namespaces, stops sshd, removes veths, netns, bridge

Names are unique per run (prefix `mxb<6 hex>`), the subnet is a 10.x.y.0/24 that no interface or route of
this machine uses; no default route in the namespaces and ip_forward untouched, so nothing can leave the machine. Host keys are generated per run and written to
`known_hosts`; the client key pair too (keys from git would have the wrong mode). Every host's sshd records
the exact command of each session it serves (a ForceCommand wrapper): `bed.session_commands(i)`.

`bed_fixture(n, scope)` makes a pytest fixture that skips (with the reason: testkit.require) when not root or
when sshd or `ip netns` are missing, and always tears the bed down, even when a test fails.

`up(n, image=Image(...))` makes hosts that look like EC2 instances from the inside (login user `ubuntu`, own
mount namespace, /efs): testkit.image; the cluster in a box built on them: testkit.box.
The parts: system.py (commands, subnets, bounded waits), sshd.py (sshd_config, the ForceCommand recorder),
users.py (the login user and mount points on this machine), require.py (whether a bed can be made here).
"""
from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

from mxlaunch.infra.transport.hosts import Host
from testkit import users
from testkit.image import Image, inside_argv
from testkit.require import need_bed
from testkit.sshd import COMMANDS_FILE, SSH_KEYGEN, SSHD
from testkit.sshd import config as sshd_config
from testkit.sshd import record_command
from testkit.system import IP, BedError, wait_for  # noqa: F401 (re-exported: tests use them from here)
from testkit.system import kill_and_wait as _kill_and_wait
from testkit.system import pick_subnet as _pick_subnet
from testkit.system import pick_subnet6 as _pick_subnet6
from testkit.system import pid_alive as _pid_alive
from testkit.system import port_open as _port_open
from testkit.system import read as _read
from testkit.system import read_bytes as _read_bytes
from testkit.system import run as _run

STATE_ROOT = os.path.join(tempfile.gettempdir(), "mxlaunch-beds")


@dataclass
class BedHost:
    index: int
    netns: str
    address: str
    veth: str  # the root-namespace end, on the bridge
    dir: str
    sshd_pid: Optional[int] = None
    host_key_line: str = ""
    address6: str = ""  # the same host on IPv6 (a unique-local address of the bed's own /64)
    user: str = "root"  # the login user (an image's user: not root)

    @property
    def host(self) -> Host:
        return Host(self.address, user=self.user, port=22)


@dataclass
class Bed:
    name: str
    bridge: str
    subnet: str
    gateway: str  # the root namespace's address on the bridge (this machine, seen from the hosts)
    dir: str
    key: str  # client private key (ed25519)
    known_hosts: str
    shared: str  # stands in for EFS
    members: List[BedHost] = field(default_factory=list)
    image: Optional[Image] = None  # hosts that look like EC2 instances from the inside (testkit.image)

    @property
    def hosts(self) -> Tuple[Host, ...]:
        return tuple(m.host for m in self.members)

    def hostfile(self, slots: Optional[List[int]] = None) -> str:
        path = os.path.join(self.dir, "hostfile")
        with open(path, "w") as fh:
            for i, m in enumerate(self.members):
                fh.write(f"{m.user}@{m.address} slots={slots[i] if slots else 1}\n")
        return path

    # ------------------------------------------------------------------------------ inspection
    def pids(self, i: int) -> List[int]:
        """PIDs of every process in namespace i (sshd included)."""
        out = _run(IP, "netns", "pids", self.members[i].netns, check=False, timeout=5)
        return [int(p) for p in out.split() if p.isdigit() and _pid_alive(int(p))]

    def job_pids(self, i: int) -> List[int]:
        """PIDs in namespace i other than the listening sshd (i.e. sessions and what they started)."""
        return [p for p in self.pids(i) if p != self.members[i].sshd_pid]

    def cmdlines(self, i: int) -> List[List[str]]:
        lines = []
        for pid in self.pids(i):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as fh:
                    lines.append([a.decode(errors="replace") for a in fh.read().split(b"\0") if a])
            except OSError:
                pass
        return lines

    def session_commands(self, i: int) -> List[str]:
        """Every command an SSH session asked host i to run, in order, exactly as sshd received it."""
        raw = _read_bytes(os.path.join(self.members[i].dir, COMMANDS_FILE))
        return [c.decode(errors="replace") for c in raw.split(b"\0")[:-1]]

    def exec(self, i: int, *argv: str, timeout: float = 15) -> subprocess.CompletedProcess:
        """Run argv inside namespace i (no SSH), e.g. to probe connectivity between hosts."""
        return subprocess.run([IP, "netns", "exec", self.members[i].netns, *argv], capture_output=True,
                              text=True, timeout=timeout, stdin=subprocess.DEVNULL)

    def inside(self, i: int, *argv: str, user: Optional[str] = None, input: Optional[str] = None,
               timeout: float = 15) -> subprocess.CompletedProcess:
        """Run argv on host i as the host sees the world (its mount namespace too: an image's /efs, its
        private /home), as root or as `user`, without SSH. Needs host i's sshd running (it holds them)."""
        return subprocess.run(inside_argv(self.members[i].sshd_pid, user) + list(argv), capture_output=True,
                              text=True, timeout=timeout, input=input,
                              stdin=subprocess.DEVNULL if input is None else None)

    # ------------------------------------------------------------------------------- sshd control
    def start_sshd(self, i: int, timeout: float = 10, private_dir: Optional[str] = None) -> None:
        """Start host i's sshd. With `private_dir`, sshd (and so every session) runs in its own mount
        namespace with an empty tmpfs over that directory: what the host writes there, this machine does not
        see (a host without the shared file system, for that directory)."""
        m = self.members[i]
        pidfile = os.path.join(m.dir, "sshd.pid")
        if os.path.exists(pidfile):
            os.unlink(pidfile)
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        sshd = [SSHD, "-f", os.path.join(m.dir, "sshd_config"), "-E", os.path.join(m.dir, "sshd.log")]
        if self.image:
            sshd = self.image.start_argv(self.shared, sshd)
        elif private_dir:
            os.makedirs(private_dir, exist_ok=True)
            sshd = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                    'mount -t tmpfs tmpfs "$1" && shift && exec "$@"', "sh", private_dir, *sshd]
        _run(IP, "netns", "exec", m.netns, *sshd, timeout=timeout)
        m.sshd_pid = int(wait_for(lambda: _read(pidfile).strip(), timeout, what=f"{pidfile}"))
        wait_for(lambda: _port_open(m.address, 22), timeout, what=f"sshd on {m.address}:22")

    def set_sshd_option(self, i: int, key: str, value: str) -> None:
        """Change one sshd_config setting of host i (takes effect at its next start_sshd)."""
        path = os.path.join(self.members[i].dir, "sshd_config")
        lines = [line for line in _read(path).splitlines() if line.split()[:1] != [key]]
        with open(path, "w") as fh:
            fh.write("\n".join(lines + [f"{key} {value}"]) + "\n")

    def stop_sshd(self, i: int, timeout: float = 5) -> None:
        m = self.members[i]
        if m.sshd_pid:
            _kill_and_wait([m.sshd_pid], timeout)
            m.sshd_pid = None

    def firewall(self, i: int, ports: str = "20000-32767") -> None:
        """Silently drop TCP connections arriving at host i on `ports` (like a security group would):
        a blackhole policy rule ahead of the local table, for packets coming in on eth0 only."""
        m = self.members[i]
        for argv in (("rule", "add", "pref", "10", "iif", "eth0", "ipproto", "tcp", "dport", ports, "blackhole"),
                     ("rule", "add", "pref", "100", "lookup", "local"), ("rule", "del", "pref", "0")):
            _run(IP, "netns", "exec", m.netns, IP, *argv)

    def partition(self, i: int) -> None:
        """Cut host i off silently (its bridge port down: no FIN, no RST reaches anyone)."""
        _run(IP, "link", "set", self.members[i].veth, "down")

    def heal(self, i: int) -> None:
        _run(IP, "link", "set", self.members[i].veth, "up")

    def unfirewall(self, i: int) -> None:
        m = self.members[i]
        for argv in (("rule", "add", "pref", "0", "lookup", "local"), ("rule", "del", "pref", "10"),
                     ("rule", "del", "pref", "100")):
            _run(IP, "netns", "exec", m.netns, IP, *argv)

    def kill_jobs(self, i: int, timeout: float = 5) -> None:
        _kill_and_wait(self.job_pids(i), timeout)

    # ---------------------------------------------------------------------------------- teardown
    def down(self) -> List[str]:
        """Remove everything; returns the problems (empty list: clean). Never raises on a half-built bed."""
        problems = []
        for i, m in enumerate(self.members):
            try:
                pids = self.pids(i)
                if m.sshd_pid and _pid_alive(m.sshd_pid) and m.sshd_pid not in pids:
                    pids.append(m.sshd_pid)
                left = _kill_and_wait(pids, 5)
                if left:
                    problems.append(f"{m.netns}: processes survive SIGKILL: {left}")
            except Exception as exc:  # keep going: the links and namespaces must go regardless
                problems.append(f"{m.netns}: {exc}")
        for m in self.members:
            _run(IP, "link", "del", m.veth, check=False)
            _run(IP, "netns", "del", m.netns, check=False)
        _run(IP, "link", "del", self.bridge, check=False)
        problems += leftovers(self.name)
        if self.image:
            problems += users.release(STATE_ROOT, self.image.user, self.image.mountpoints,
                                      lambda: self.image.user in _image_users(but=self.name))
        if not problems:
            shutil.rmtree(self.dir, ignore_errors=True)
        return problems


def leftovers(name: str) -> List[str]:
    """Namespaces or links of bed `name` that still exist (a leak)."""
    found = []
    for line in _run(IP, "netns", "list", check=False).splitlines():
        if line.split() and line.split()[0].startswith(name):
            found.append(f"namespace {line.split()[0]} left behind")
    for line in _run(IP, "-o", "link", "show", check=False).splitlines():
        parts = line.split(":")
        if len(parts) > 1 and parts[1].strip().split("@")[0].startswith(name):
            found.append(f"link {parts[1].strip().split('@')[0]} left behind")
    return found


def sweep_stale() -> List[str]:
    """Tear down beds whose owning process is gone (a test run killed before its teardown could run).
    Beds of live processes, this one's or another run's, are left alone. Returns the names swept."""
    swept = []
    try:
        entries = os.listdir(STATE_ROOT)
    except FileNotFoundError:
        return swept
    netns = [line.split()[0] for line in _run(IP, "netns", "list", check=False).splitlines() if line.split()]
    for entry in entries:
        bed_dir = os.path.join(STATE_ROOT, entry)
        try:
            with open(os.path.join(bed_dir, "bed.json")) as fh:
                info = json.load(fh)
        except (OSError, ValueError):
            continue
        if _pid_alive(int(info.get("owner_pid", 0))):
            continue
        name = info["name"]
        image = Image(user=info["image_user"]) if info.get("image_user") else None
        bed = Bed(name=name, bridge=f"{name}br", subnet=info.get("subnet", ""), gateway="", dir=bed_dir,
                  key="", known_hosts="", shared="", image=image)
        for ns in sorted(n for n in netns if n.startswith(f"{name}h") and n[len(name) + 1:].isdigit()):
            i = int(ns[len(name) + 1:])
            pid = _read(os.path.join(bed_dir, f"h{i}", "sshd.pid")).strip()
            bed.members.append(BedHost(index=i, netns=ns, address="", veth=f"{name}v{i}",
                                       dir=os.path.join(bed_dir, f"h{i}"), sshd_pid=int(pid) if pid.isdigit() else None))
        if not bed.down():
            swept.append(name)
    return swept


def _image_users(but: str) -> List[str]:
    """The login users of the images of live beds other than `but`."""
    found = []
    for entry in os.listdir(STATE_ROOT):
        info = _bed_info(os.path.join(STATE_ROOT, entry))
        if info.get("image_user") and info.get("name") != but and _pid_alive(int(info.get("owner_pid", 0))):
            found.append(info["image_user"])
    return found


def _bed_info(bed_dir: str) -> dict:
    try:
        with open(os.path.join(bed_dir, "bed.json")) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return {}


def up(n: int, name: Optional[str] = None, image: Optional[Image] = None) -> Bed:
    """Create a bed of `n` hosts and start their sshd. On any failure, what was made is removed.
    With `image`, the hosts look like EC2 instances from the inside (testkit.image); nobody can log
    in until a key is put into the image user's authorized_keys (`image.boot`)."""
    if n < 1:
        raise BedError("a bed needs at least one host")
    sweep_stale()
    rng = random.Random()
    name = name or f"mxb{rng.getrandbits(24):06x}"
    net = _pick_subnet(rng)
    net6 = _pick_subnet6(rng)
    addrs = list(net.hosts())
    os.makedirs(STATE_ROOT, exist_ok=True)
    bed_dir = tempfile.mkdtemp(prefix=name + "-", dir=STATE_ROOT)
    bed = Bed(name=name, bridge=f"{name}br", subnet=str(net), gateway=str(addrs[0]), dir=bed_dir,
              key=os.path.join(bed_dir, "id_ed25519"), known_hosts=os.path.join(bed_dir, "known_hosts"),
              shared=os.path.join(bed_dir, "shared"), image=image)
    with open(os.path.join(bed_dir, "bed.json"), "w") as fh:
        json.dump({"name": name, "owner_pid": os.getpid(), "subnet": str(net),
                   "image_user": image.user if image else None}, fh)
    try:
        if image:
            image.check(bed_dir)
            users.acquire(STATE_ROOT, image.user, image.home, image.mountpoints)
            os.chmod(bed_dir, 0o711)  # the user's sessions run the record script and append to their record
        os.makedirs(bed.shared)
        _run(SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", f"{name}-client", "-f", bed.key)
        authorized = os.path.join(bed_dir, "authorized_keys")
        shutil.copy(bed.key + ".pub", authorized)
        record = os.path.join(bed_dir, "record-command")
        with open(record, "w") as fh:
            fh.write(record_command())
        os.chmod(record, 0o755)
        _run(IP, "link", "add", bed.bridge, "type", "bridge")
        _run(IP, "addr", "add", f"{bed.gateway}/24", "dev", bed.bridge)
        _run(IP, "-6", "addr", "add", f"{net6[1]}/64", "dev", bed.bridge, "nodad")
        _run(IP, "link", "set", bed.bridge, "up")
        for i in range(n):
            m = BedHost(index=i, netns=f"{name}h{i}", address=str(addrs[i + 1]), veth=f"{name}v{i}",
                        address6=str(net6[i + 2]), dir=os.path.join(bed_dir, f"h{i}"),
                        user=image.user if image else "root")
            bed.members.append(m)
            _make_host(bed, m, record, ".ssh/authorized_keys" if image else authorized)
        with open(bed.known_hosts, "w") as fh:
            for m in bed.members:
                fh.write(f"{m.address} {m.host_key_line}\n{m.address6} {m.host_key_line}\n")
        for i in range(n):
            bed.start_sshd(i)
    except BaseException:
        bed.down()
        raise
    return bed


def _make_host(bed: Bed, m: BedHost, record: str, authorized_keys: str) -> None:
    """Host m's namespace on the bed's bridge, its host key and sshd_config (sshd is not started)."""
    name = bed.name
    os.makedirs(m.dir)
    _run(IP, "netns", "add", m.netns)
    _run(IP, "link", "add", m.veth, "type", "veth", "peer", "name", f"{name}p{m.index}")
    _run(IP, "link", "set", f"{name}p{m.index}", "netns", m.netns)
    _run(IP, "link", "set", m.veth, "master", bed.bridge)
    _run(IP, "link", "set", m.veth, "up")
    ns = (IP, "netns", "exec", m.netns, IP)
    _run(*ns, "link", "set", f"{name}p{m.index}", "name", "eth0")
    _run(*ns, "addr", "add", f"{m.address}/24", "dev", "eth0")
    _run(*ns, "-6", "addr", "add", f"{m.address6}/64", "dev", "eth0", "nodad")
    _run(*ns, "link", "set", "eth0", "up")
    _run(*ns, "link", "set", "lo", "up")
    hostkey = os.path.join(m.dir, "ssh_host_ed25519_key")
    _run(SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", m.netns, "-f", hostkey)
    m.host_key_line = " ".join(_read(hostkey + ".pub").split()[:2])
    with open(os.path.join(m.dir, "sshd_config"), "w") as fh:
        fh.write(sshd_config(m.address, m.address6, m.dir, record, authorized_keys,
                             permit_root="no" if bed.image else "prohibit-password"))
    if bed.image:  # the login user's sessions append to the record (ForceCommand runs as that user)
        os.chmod(m.dir, 0o711)
        commands = os.path.join(m.dir, COMMANDS_FILE)
        open(commands, "w").close()
        shutil.chown(commands, bed.image.user, bed.image.user)


def bed_fixture(n: int, scope: str = "module"):
    """A pytest fixture yielding a bed of `n` hosts, made once per `scope` ("module" or "session") and shared
    by its tests. Where no bed can be made the test is skipped with the reason, or fails where the run
    requires the bed (testkit.require). Every test gets the bed clean (each sshd up, nothing else
    running in the namespaces); what a test leaves running there is killed after it and reported as that
    test's error. The bed is always torn down, even when a test fails."""
    import pytest  # the bench scripts use this module without pytest

    beds = {}  # the module (or session) node -> its bed

    def dirt(bed: Bed, settle: float) -> List[str]:
        """What is not as a fresh bed has it, after waiting up to `settle` s (a session ends a moment after
        its connection closes)."""
        deadline = time.monotonic() + settle
        while True:
            found = [f"host {m.index}: sshd not running" for m in bed.members
                     if not (m.sshd_pid and _pid_alive(m.sshd_pid))]
            for i in range(len(bed.members)):
                found += [f"host {i}: pid {p} {_read(f'/proc/{p}/cmdline').replace(chr(0), ' ').strip()!r}"
                          for p in bed.job_pids(i)]
            if not found or time.monotonic() >= deadline:
                return found
            time.sleep(0.05)

    def take_down(holder) -> None:
        problems = beds.pop(holder).down()
        assert not problems, f"test bed teardown left: {problems}"

    @pytest.fixture
    def _bed(request):
        need_bed()
        holder = request.node.getparent(pytest.Session if scope == "session" else pytest.Module)
        if holder not in beds:
            beds[holder] = up(n)
            holder.addfinalizer(lambda: take_down(holder))
        bed = beds[holder]
        found = dirt(bed, settle=5)  # even up(): its port probe leaves an `sshd: [accepted]` for a moment
        assert not found, f"the test bed is not clean at the start of this test: {found}"
        yield bed
        found = dirt(bed, settle=5)
        if found:
            for i, m in enumerate(bed.members):
                bed.kill_jobs(i)
                if not (m.sshd_pid and _pid_alive(m.sshd_pid)):
                    bed.start_sshd(i)
            pytest.fail(f"this test left the bed unclean (now cleaned): {found}", pytrace=False)

    return _bed
