"""A fake of the SSH transport (mxlaunch.infra.transport.ssh.Connection) for tests that must reach no host:
the cluster steps against moto, whose instance addresses are made up and must never be contacted.

    net = FakeNetwork()                               # every command answers (0, "", "")
    net.fail("c-1", ConnectionRefusedError(111, "Connection refused"), times=2)   # its first 2 connects raise
    remote.wait_ssh_and_install(hosts, ssh, ..., connect=net.connect)             # where the product takes a connector
    net.calls                                         # every command, in order: Call(address, argv, stdin, endpoint)
    net.commands()                                    # [(address, "the command line")]
    net.files["/efs/mxlaunch/wheels/x.whl"]           # what SFTP wrote: FakeFile(data, mtime)

`connect` resolves each host with the product's own resolver (ssh_options.resolve: the ssh config, user and
key the product passed), so a test sees where the product would have connected (`Call.endpoint`, `net.connects`)
and with which options (`net.options`). `answer(call)` decides every command's (status, stdout, stderr) and may
raise (a KeyboardInterrupt, as a Ctrl-C would); `run_here(paths)` answers by running the command here. Every
fake host shares one file system for SFTP (the cluster's EFS). Host keys are not modelled: the real bed tests
them.
"""
from __future__ import annotations

import errno
import os
import posixpath
import shlex
import stat
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

from mxlaunch.infra.transport.hosts import Host
from mxlaunch.infra.transport.ssh import Connection
from mxlaunch.infra.transport.ssh_options import Endpoint, SSHOptions, _config, resolve

Reply = Tuple[int, str, str]


@dataclass(frozen=True)
class Call:
    """One command a fake host was asked to run."""

    address: str  # the host as the product named it (an alias, a private address)
    argv: Tuple[str, ...]  # as the host's shell splits the command line
    stdin: Optional[str]
    endpoint: Endpoint  # where a real connection would have gone
    command: str  # the command line the host's shell runs


@dataclass
class FakeFile:
    data: bytes
    mtime: int


@dataclass
class FakeNetwork:
    """Fake hosts reached through `connect`; what they were asked, and the files they hold."""

    answer: Callable[[Call], Optional[Reply]] = lambda call: None  # None: (0, "", "")
    calls: List[Call] = field(default_factory=list)
    connects: List[Endpoint] = field(default_factory=list)
    options: List[SSHOptions] = field(default_factory=list)
    files: Dict[str, FakeFile] = field(default_factory=dict)
    dirs: set = field(default_factory=lambda: {"/"})
    failures: Dict[str, list] = field(default_factory=dict)  # address -> [exception, tries left (None: always)]

    def __post_init__(self) -> None:
        self.lock = threading.Lock()

    def fail(self, address: str, exc: BaseException, times: Optional[int] = None) -> None:
        """Connecting to `address` raises `exc` (the first `times` tries; None: every try)."""
        self.failures[address] = [exc, times]

    def connect(self, host: Host, options: SSHOptions) -> "FakeConnection":
        """The product's connector: a FakeConnection, or the exception `fail` set for this host."""
        endpoint = resolve(host, options, _config(options.config_path))
        with self.lock:
            self.connects.append(endpoint)
            self.options.append(options)
            failure = self.failures.get(host.address)
            if failure and failure[1] is not None:
                failure[1] -= 1
                if failure[1] < 0:
                    failure = None
        if failure:
            raise failure[0]
        return FakeConnection(self, endpoint)

    def commands(self) -> List[Tuple[str, str]]:
        """(address, command line) of every command, in order."""
        return [(c.address, c.command) for c in self.calls]

    def reply(self, call: Call) -> Reply:
        with self.lock:
            self.calls.append(call)
        found = self.answer(call)
        return (0, "", "") if found is None else found


class FakeConnection(Connection):
    """A Connection whose commands are answered by its FakeNetwork; `run` and `sftp` only (what the cluster
    steps and the preflight use)."""

    def __init__(self, net: FakeNetwork, endpoint: Endpoint):  # no paramiko client behind it
        self.net, self.endpoint, self.ip, self.timeout, self.lost = net, endpoint, endpoint.hostname, 10.0, None
        self._closed = threading.Event()

    @property
    def alive(self) -> bool:
        return not self._closed.is_set()

    def run(self, argv: Union[str, Sequence[str]], timeout: float = 60.0,
            stdin: Optional[bytes] = None, max_output: int = 0) -> Reply:
        if not self.alive:
            raise EOFError("the connection is closed")
        line = argv if isinstance(argv, str) else shlex.join(str(a) for a in argv)
        text = stdin.decode() if isinstance(stdin, bytes) else stdin
        return self.net.reply(Call(self.endpoint.host.address, tuple(shlex.split(line)), text, self.endpoint, line))

    def open_channel(self, argv, timeout=None):
        raise NotImplementedError("the fake runs commands to their end only (Connection.run)")

    def sftp(self, timeout: float = 60.0) -> "FakeSFTP":
        return FakeSFTP(self.net, self.endpoint.host.address)

    def close(self) -> None:
        self._closed.set()


class _Attributes:
    def __init__(self, filename: str, mode: int, size: int = 0, mtime: int = 0):
        self.filename, self.st_mode, self.st_size, self.st_mtime = filename, mode, size, mtime


class FakeSFTP:
    """The SFTP requests the product makes, on the network's one file system."""

    def __init__(self, net: FakeNetwork, address: str):
        self.net, self.address = net, address

    def __enter__(self) -> "FakeSFTP":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        pass

    def stat(self, path: str) -> _Attributes:
        path = posixpath.normpath(path)
        if path in self.net.dirs:
            return _Attributes(posixpath.basename(path), stat.S_IFDIR | 0o755)
        if path in self.net.files:
            f = self.net.files[path]
            return _Attributes(posixpath.basename(path), stat.S_IFREG | 0o644, len(f.data), f.mtime)
        raise FileNotFoundError(errno.ENOENT, "No such file")

    def mkdir(self, path: str) -> None:
        path = posixpath.normpath(path)
        if posixpath.dirname(path) not in self.net.dirs or path in self.net.dirs or path in self.net.files:
            raise OSError(errno.EPERM, "Failure")
        self.net.dirs.add(path)

    def listdir_attr(self, folder: str) -> List[_Attributes]:
        folder = posixpath.normpath(folder)
        if folder not in self.net.dirs:
            raise FileNotFoundError(errno.ENOENT, "No such file")
        return [self.stat(p) for p in sorted(self.net.files) + sorted(self.net.dirs)
                if p != folder and posixpath.dirname(p) == folder]

    def put(self, local: str, remote: str, callback=None, confirm: bool = True) -> None:
        remote = posixpath.normpath(remote)
        if posixpath.dirname(remote) not in self.net.dirs:
            raise FileNotFoundError(errno.ENOENT, "No such file")
        with open(local, "rb") as fh:
            data = fh.read()
        self.net.files[remote] = FakeFile(data, int(time.time()))
        if callback:
            callback(len(data), len(data))

    def utime(self, path: str, times: Tuple[int, int]) -> None:
        self.net.files[posixpath.normpath(path)].mtime = int(times[1])

    def posix_rename(self, old: str, new: str) -> None:
        self.net.files[posixpath.normpath(new)] = self.net.files.pop(posixpath.normpath(old))


def run_here(paths: Dict[str, str], python: Optional[Tuple[str, str]] = None) -> Callable[[Call], Reply]:
    """An `answer` that runs each command here, through `sh -c` as a host's shell would, with the PATH of
    `paths[address]`; `python`: (the hosts' interpreter path, the one to run instead here)."""
    def answer(call: Call) -> Reply:
        argv = list(call.argv)
        if python and argv and argv[0] == python[0]:
            argv[0] = python[1]
        proc = subprocess.run(["/bin/sh", "-c", shlex.join(argv)], input=call.stdin, capture_output=True, text=True,
                              timeout=120, env=dict(os.environ, PATH=paths[call.address]))
        return proc.returncode, proc.stdout, proc.stderr
    return answer
