"""`launch cluster put` and `launch cluster exec`: files onto the cluster's EFS, commands on its instances.

Both go over SSH (paramiko, infra/transport/ssh.py) with the cluster's ssh config, key and known_hosts, as
`launch train --cluster` does; a host key seen for the first time is recorded, as the cluster's ssh config
says (`StrictHostKeyChecking accept-new`), and a changed one is refused.

    put NAME SRC [DEST]        SRC (a file or a folder) into the folder DEST (default /efs/data/) through
                               instance 0, over SFTP; a file already there with the same size and mtime is
                               skipped, so a second put copies nothing. Each file lands under a temporary
                               name and is renamed when complete: an interrupted put leaves no torn file.
    exec NAME [INDEX|--all] -- CMD...   CMD on instance INDEX (default 0) or on every instance at once;
                               the exit status is the remote one (with --all: 1 if any failed). The
                               cluster's venv comes first on PATH, so `trainer`, `launch` and `python` are its.
"""
from __future__ import annotations

import os
import posixpath
import shlex
import stat
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import List, Optional, Tuple

import click

from mxlaunch.errors import CommandError, UsageError
from mxlaunch.exits import Exit
from mxlaunch.infra.cloud import local_state
from mxlaunch.infra.cloud.aws import Aws
from mxlaunch.infra.cloud.cluster_target import cluster_target
from mxlaunch.infra.cloud.spec import validate_name

DEFAULT_DEST = "/efs/data/"
PROGRESS_BYTES = 16 * 1024 * 1024  # files at least this big get a progress bar (on a terminal)
SFTP_TIMEOUT = 60.0  # one SFTP request (not a whole file)


def _cluster(name: str, region: Optional[str], profile: Optional[str]):
    """The cluster's JobTarget: its running instances (private addresses, in `launch cluster ssh`'s order)
    and the SSH settings to reach them."""
    from mxlaunch.infra.transport.ssh import SSHOptions  # heavy

    validate_name(name)
    aws = Aws(region=region or local_state.read_meta(name).region, profile=profile)
    return cluster_target(name, aws=aws, ssh=SSHOptions(accept_new=True))


def _connect(target, hosts) -> dict:
    from mxlaunch.infra.transport.ssh import connect_all  # heavy

    connections = connect_all(hosts, target.ssh)
    try:
        connections.raise_if_failed()
    except BaseException:
        connections.close()
        raise
    return connections.succeeded


# ------------------------------------------------------------------------------------------------------ put

@dataclass(frozen=True)
class Copy:
    local: str
    remote: str
    size: int
    mtime: int  # whole seconds: what SFTP's utime keeps


def plan_copies(src: str, dest: str, follow_links: bool = False) -> List[Copy]:
    """Every file under SRC (or SRC itself), and where it goes: DEST/<name of SRC>/... Pure but for stat.
    SRC itself may be a link (it is what the user named); a link inside it is copied as what it points to
    with `follow_links` (as `cp -rL`), and otherwise refused by name: an EFS copy of a link into this
    machine's file system would point nowhere, and a skipped file must never read as copied. A FIFO, a socket
    or a device (also behind a followed link) has no content to copy: refused by name as well."""
    src = os.path.abspath(os.path.expanduser(src))
    if not os.path.exists(src):
        raise UsageError(f"{src}: no such file or folder")
    base = posixpath.join(dest, os.path.basename(src.rstrip(os.sep)))
    if os.path.isdir(src):
        paths, links, others = _walk(src, base, follow_links)
    else:
        paths, links, others = ([(src, base)], [], []) if os.path.isfile(src) else ([], [], [os.path.basename(src)])
    if links:
        _refuse(src, links, "symbolic link(s) that put does not copy",
                "they point to nothing or back into a folder already copied" if follow_links
                else "give -L/--follow-links to copy what they point to")
    if others:
        _refuse(src, others, "file(s) that put does not copy", "FIFOs, sockets or devices: no content to copy")
    copies = []
    for local, remote in paths:
        st = os.stat(local)
        copies.append(Copy(local, remote, st.st_size, int(st.st_mtime)))
    return copies


def _refuse(src: str, names: List[str], what: str, how: str) -> None:
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    raise UsageError(f"{src} holds {len(names)} {what}: {shown} ({how})")


def _walk(src: str, base: str, follow_links: bool) -> Tuple[List[Tuple[str, str]], List[str], List[str]]:
    """(local, remote) of every regular file under the folder SRC; the links that cannot be copied (all of
    them without `follow_links`; with it, the dangling ones and those leading back into a folder on the way:
    a loop); and what is neither a folder nor a regular file (FIFOs, sockets, devices)."""
    paths: List[Tuple[str, str]] = []
    links: List[str] = []
    others: List[str] = []

    def visit(folder: str, parts: Tuple[str, ...], seen: frozenset) -> None:
        for entry in sorted(os.scandir(folder), key=lambda e: e.name):
            shown = os.path.relpath(entry.path, os.path.dirname(src))
            if entry.is_symlink() and (not follow_links or not os.path.exists(entry.path)):
                links.append(shown)
            elif entry.is_dir(follow_symlinks=True):
                key = (entry.stat().st_dev, entry.stat().st_ino)
                if key in seen:
                    links.append(shown)
                else:
                    visit(entry.path, parts + (entry.name,), seen | {key})
            elif entry.is_file(follow_symlinks=True):
                paths.append((entry.path, posixpath.join(base, *parts, entry.name)))
            else:
                others.append(shown)

    top = os.stat(src)
    visit(src, (), frozenset({(top.st_dev, top.st_ino)}))
    return paths, links, others


def _remote_stat(sftp, path: str) -> Optional[Tuple[int, int]]:
    try:
        st = sftp.stat(path)
    except IOError:
        return None
    return (st.st_size, int(st.st_mtime)) if stat.S_ISREG(st.st_mode or 0) else None


def _makedirs(sftp, path: str, made: set) -> None:
    if path in made or path in ("", "/"):
        return
    try:
        if stat.S_ISDIR(sftp.stat(path).st_mode or 0):
            made.add(path)
            return
    except IOError:
        pass
    _makedirs(sftp, posixpath.dirname(path), made)
    try:
        sftp.mkdir(path)
    except IOError as exc:
        raise CommandError(f"cannot create {path} on the cluster: {exc.strerror or exc}") from exc
    made.add(path)


def copy_files(sftp, copies: List[Copy], echo=lambda line: None, show_progress: bool = False) -> Tuple[int, int]:
    """Upload what is not already there (same size and mtime); returns (files copied, bytes copied)."""
    made: set = set()
    copied = sent = 0
    for c in copies:
        if _remote_stat(sftp, c.remote) == (c.size, c.mtime):
            continue
        _makedirs(sftp, posixpath.dirname(c.remote), made)
        part = c.remote + ".part"
        if show_progress and c.size >= PROGRESS_BYTES:
            with click.progressbar(length=c.size, label=posixpath.basename(c.remote), file=sys.stderr) as bar:
                last = [0]

                def advance(done: int, _total: int) -> None:
                    bar.update(done - last[0])
                    last[0] = done
                sftp.put(c.local, part, callback=advance)
        else:
            sftp.put(c.local, part)
        sftp.utime(part, (c.mtime, c.mtime))
        sftp.posix_rename(part, c.remote)
        copied, sent = copied + 1, sent + c.size
        echo(f"  {c.remote} ({c.size:,} bytes)")
    return copied, sent


@click.command()
@click.argument("name")
@click.argument("src", type=click.Path(exists=True))
@click.argument("dest", default=DEFAULT_DEST)
@click.option("--region", help="AWS region (default: the cluster's, else boto3's configuration).")
@click.option("--profile", help="AWS profile (default: AWS_PROFILE / boto3's configuration).")
@click.option("-L", "--follow-links", is_flag=True,
              help="Copy what symbolic links inside SRC point to (as `cp -rL`); without it they are refused.")
@click.option("-v", "--verbose", is_flag=True, help="Name every file copied.")
def put(name, src, dest, region, profile, follow_links, verbose) -> None:
    """Copy SRC (a file or folder) into DEST on the cluster's EFS (default /efs/data/), through instance 0.

    Files already there with the same size and mtime are skipped; symbolic links inside SRC are refused
    by name unless -L."""
    if not posixpath.isabs(dest):
        raise UsageError(f"DEST must be an absolute path on the cluster (e.g. {DEFAULT_DEST}), got {dest!r}")
    copies = plan_copies(src, dest, follow_links)
    target = _cluster(name, region, profile)
    first = target.hosts[0]
    conn = _connect(target, [first])[first]
    try:
        with conn.sftp(SFTP_TIMEOUT) as sftp:
            echo = (lambda line: click.echo(line, err=True)) if verbose else (lambda line: None)
            copied, sent = copy_files(sftp, copies, echo, show_progress=sys.stderr.isatty())
    finally:
        conn.close()
    click.echo(f"{name}-0:{posixpath.join(dest, os.path.basename(os.path.abspath(src)))}: copied {copied} file(s) "
               f"({sent / 1e6:,.1f} MB), {len(copies) - copied} already there")


# ----------------------------------------------------------------------------------------------------- exec

def remote_command(words: Tuple[str, ...], venv_bin: str) -> str:
    """The shell command line for CMD: one word is a command line for the remote shell (`'cd /efs && ls'`);
    several are an argv, quoted so that each arrives exactly. The cluster's venv comes first on PATH."""
    line = words[0] if len(words) == 1 else shlex.join(words)
    return f"PATH={shlex.quote(venv_bin)}:\"$PATH\"; export PATH; {line}"


class _DashDash(click.Command):
    """CMD is everything after the first `--` (so INDEX and options stay before it, and CMD keeps its own)."""

    def parse_args(self, ctx, args):
        if "--" in args:
            i = args.index("--")
            ctx.meta["exec_command"], args = tuple(args[i + 1:]), args[:i]
        return super().parse_args(ctx, args)


@click.command(name="exec", cls=_DashDash)
@click.argument("name")
@click.argument("index", type=int, required=False)
@click.option("--all", "all_", is_flag=True, help="Run on every instance at once (output prefixed by instance).")
@click.option("--region", help="AWS region (default: the cluster's, else boto3's configuration).")
@click.option("--profile", help="AWS profile (default: AWS_PROFILE / boto3's configuration).")
@click.pass_context
def exec_(ctx, name, index, all_, region, profile) -> int:
    """Run CMD (after '--') on instance INDEX (default 0) or --all of cluster NAME; its exit status.

    One word is a shell command line ('cd /efs && ls'); several are the command's exact arguments."""
    words = ctx.meta.get("exec_command") or ()
    if not words:
        raise UsageError("put the command after '--', e.g. launch cluster exec NAME -- nvidia-smi")
    if all_ and index is not None:
        raise UsageError("give INDEX or --all, not both")
    target = _cluster(name, region, profile)
    count = len(target.hosts)
    if index is not None and not 0 <= index < count:
        raise UsageError(f"cluster {name} has {count} running instance(s): INDEX must be 0..{count - 1}")
    chosen = list(range(count)) if all_ else [index or 0]
    hosts = [target.hosts[i] for i in chosen]
    command = remote_command(words, posixpath.dirname(target.python))
    connections = _connect(target, hosts)
    try:
        if not all_:
            conn = connections[hosts[0]]
            return conn.stream(command, click.echo, lambda line: click.echo(line, err=True))
        return _exec_all(name, chosen, hosts, connections, command)
    finally:
        for conn in connections.values():
            conn.close()


def _exec_all(name, chosen, hosts, connections, command) -> int:
    """Every instance at once; each one's result (an exit status, or what went wrong) before judging. Ctrl-C
    (or any end of this thread) stops the command on every instance, as single-host exec does: the streams
    run in other threads, which an interrupt never reaches."""
    lock = threading.Lock()
    pids: dict = {}  # instance -> its remote pid line
    stopping = threading.Event()

    def started_on(i: int):
        def record(pid: str) -> None:
            with lock:
                pids[i] = pid
                late = stopping.is_set()
            if late:  # started after the stop went round: ends itself
                connections[hosts[chosen.index(i)]].kill_group(pid, "TERM")
        return record

    def say(prefix: str, to_err: bool):
        def emit(line: str) -> None:
            with lock:
                click.echo(f"{prefix} {line}", err=to_err)
        return emit

    def result(i: int):
        prefix = f"[{name}-{i}]"
        if stopping.is_set():  # queued behind the pool's threads until after the stop: never started
            return KeyboardInterrupt()
        try:
            return connections[hosts[chosen.index(i)]].stream(command, say(prefix, False), say(prefix, True),
                                                               started=started_on(i))
        except Exception as exc:  # one host's failure is its result, not the others' end
            return exc

    pool, futures = ThreadPoolExecutor(max_workers=min(len(chosen), 32)), {}
    try:
        futures.update((i, pool.submit(result, i)) for i in chosen)
        results = {i: future.result() for i, future in futures.items()}  # as long as the commands run
    except BaseException:
        with lock:
            stopping.set()
            running = dict(pids)
        for future in futures.values():  # more instances than threads: the queued ones never start
            future.cancel()
        for i, pid in running.items():
            connections[hosts[chosen.index(i)]].kill_group(pid, "TERM")
        raise
    finally:
        pool.shutdown(wait=False)  # the caller closes the connections, which ends every stream
    failed = [f"{name}-{i} ({r if isinstance(r, BaseException) else f'exit {r}'})"
              for i, r in results.items() if isinstance(r, BaseException) or r != 0]
    if failed:
        raise CommandError(f"failed on {len(failed)} of {len(chosen)} instance(s): {', '.join(failed)}")
    return Exit.OK
