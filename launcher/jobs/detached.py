"""Jobs that run on without this machine: `launch train --cluster NAME --detach` starts the launcher itself on
instance 0, and `launch runs/logs/stop --cluster NAME` reach its runs there.

    start(request, target, spec, run) -> DetachedRun   # run id, its directory on EFS, the launcher's pid
    resume(request, target, run) -> DetachedRun        # --detach --resume RUN: that run's job, resumed there
    remove_own_key(request)                            # the detached launcher's key folder, when it ends

The detached launcher is the same `launch train` (preflight, teardown on failure, --max-restarts), run as
`--hosts` on the instances' private addresses with the cluster's resolved job (the command with --gpus, the
instance type's role environment, workdir, the venv's python), in the cluster's EFS venv, in its own session
(infra/transport/remote/detach_starter.py). Its run directory is RUNS/<run> on EFS (RUNS = the cluster's WORKDIR/runs): any
machine with the cluster's state reads it through instance 0.

What instance 0 needs to reach the other instances goes there by SFTP, into a 0700 folder of its home for
this run alone (KEYS/NAME/RUN, KEYS = ~/.mxlaunch/detach): the cluster's own SSH key (never a personal one:
--ssh-key naming another key is refused, as is a passphrase-protected key: nobody is there to type it) and a
known_hosts of every instance's PRIVATE address holding the host keys this machine has just verified. Never on a
command line, never in user data. The roles' environment goes on the starter's stdin (infra/transport/remote/detach_starter.py:
a pipe to the launcher, no file). The detached launcher removes its folder when it ends, however it ends
(launcher/jobs/modes.py detached_run), except by SIGKILL: then `launch stop` removes it after its own SIGKILL,
and otherwise the next start on the cluster does (a resume of that run overwrites it first).

Restarts of a detached job (--max-restarts) run on the same instances: the instances hold no AWS credentials
(by design), so a detached launcher cannot replace an instance. A restart that cannot begin ends the launcher
with a line naming what does: `launch cluster repair NAME`, then `launch train --cluster NAME --detach --resume
RUN` (resume(): the run's job on the cluster's instances as they are now, a new known_hosts with them).
"""
from __future__ import annotations

import json
import os
import posixpath
import re
import stat
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Dict, List, Tuple

from mxlaunch.errors import CommandError, UsageError
from mxlaunch.infra.cloud import local_state
from mxlaunch.infra.cloud.spec import WORKDIR
from mxlaunch.infra.transport.remote.detach_starter import KEY_NAME, KEYS, remove_keys
from mxlaunch.infra.transport.target import JobTarget
from mxlaunch.launcher.jobs import rundir
from mxlaunch.launcher.jobs.instance0 import option_args, tri_state

if TYPE_CHECKING:
    from mxlaunch.launcher.jobs.plan import JobSpec
    from mxlaunch.launcher.jobs.request import TrainRequest

RUNS = posixpath.join(WORKDIR, rundir.DEFAULT_PARENT)  # every detached run's directory is here, on EFS
STARTER = "mxlaunch.infra.transport.remote.detach_starter"
START_TIMEOUT = 30.0  # the starter returns as soon as the launcher is exec'd
SFTP_TIMEOUT = 30.0
RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
# --env-worker/--env-server values reach the detached launcher through its own environment: never these,
# which would change how the launcher itself runs (give them with --env, which goes through a pipe)
OWN_ENVIRONMENT = re.compile(r"PATH|HOME|PYTHON\w*|LD_\w*|MXLAUNCH_\w*")


@dataclass(frozen=True)
class DetachedRun:
    cluster: str
    run: str  # the run's id: its directory's name
    run_dir: str  # on EFS, as instance 0 sees it
    pid: int  # the launcher's, on instance 0
    console: str  # its console output (launcher/jobs/launcher_record.py detached_paths)


def run_dir_of(run: str) -> str:
    """RUNS/<run> for a run id (a run directory's name, as `launch runs --cluster` lists it)."""
    if not RUN_NAME.fullmatch(run or ""):
        raise UsageError(f"RUN {run!r}: expected a run id as `launch runs --cluster NAME` lists it "
                         f"(letters, digits, '.', '_', '-')")
    return posixpath.join(RUNS, run)


# every character str.splitlines() ends a line at: an instance 0 whose mxlaunch reads --env-file with it would
# split a value there (its tail a second variable, or named in an error)
LINE_BREAKS = frozenset("\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029")


def _env_file_text(pairs) -> str:
    """The roles' environment as --env-file lines (launcher/jobs/env_options.py read_env_file reads each value to the
    end of its line, the line stripped): a value that cannot survive that is refused, naming only its key."""
    for key, value in pairs:
        if LINE_BREAKS.intersection(value) or value != value.rstrip():
            raise UsageError(f"--env {key}: a value with a line break (\\n, \\r, \\v, \\f, \\x1c-\\x1e, \\x85, "
                             f"U+2028, U+2029) or trailing whitespace cannot be passed to a detached launcher")
    return "".join(f"{key}={value}\n" for key, value in pairs)


def _environ(spec: "JobSpec") -> Tuple[dict, Dict[str, List[str]]]:
    """(the detached launcher's extra environment, its --env-worker/--env-server KEYs as option_args takes
    them: env_worker=[KEY, ...], env_server=[...])."""
    environ: dict = {}
    keys: Dict[str, List[str]] = {"env_worker": [], "env_server": []}
    for name, pairs in (("env_worker", spec.env_worker), ("env_server", spec.env_server)):
        option = "--" + name.replace("_", "-")
        for key, value in pairs:
            if OWN_ENVIRONMENT.fullmatch(key):
                raise UsageError(f"{option} {key}: with --detach it would change the launcher's own environment; "
                                 f"give it with --env (every role)")
            if environ.get(key, value) != value:
                raise UsageError(f"--env-worker and --env-server give {key} different values: with --detach a key "
                                 f"has one value for both (or give it with --env)")
            environ[key] = value
            keys[name].append(key)
    return environ, keys


def passed(request: "TrainRequest") -> dict:
    """The options a detached launcher takes as they were given here."""
    return dict(grace=request.grace, max_restarts=request.max_restarts, restart_delay=request.restart_delay,
                scheduler_port=request.scheduler_port, verbose=request.verbose)


def launcher_options(target: JobTarget, spec: "JobSpec", run_dir: str, key: str, known_hosts: str,
                     request: "TrainRequest") -> List[str]:
    """`launch train` options of the detached launcher of a new job (no value that is a secret: see
    _environ; its --env goes through a pipe, launcher/jobs/detached.py _env_file_text)."""
    _, env_keys = _environ(spec)
    return option_args(hosts=",".join(h.target for h in spec.hosts), num_workers=spec.num_workers,
                       num_servers=spec.num_servers, run_dir=run_dir, python=target.python, ssh_key=key,
                       known_hosts=known_hosts, ssh_user=target.ssh.user, workdir=spec.workdir,
                       timeout=spec.timeout, **tri_state("watch_spot", spec.watch_spot), **env_keys,
                       **passed(request), detached_from=request.cluster)


def resume_options(target: JobTarget, run_dir: str, key: str, known_hosts: str, request: "TrainRequest") -> List[str]:
    """`launch train` options of the detached launcher that resumes RUNS/<run> on the cluster's hosts now."""
    return option_args(resume=run_dir, hosts=",".join(h.target for h in target.hosts), python=target.python,
                       ssh_key=key, known_hosts=known_hosts, ssh_user=target.ssh.user,
                       num_epochs=request.num_epochs, timeout=request.timeout,
                       **tri_state("watch_spot", request.watch_spot), workdir=request.workdir, **passed(request),
                       detached_from=request.cluster)


def known_hosts_text(connections) -> str:
    """known_hosts lines of every instance's private address (as the job's hostfile names it), with the host
    key this machine verified on connecting."""
    lines = []
    for host, conn in connections.items():
        key = conn.transport.get_remote_server_key()
        name = f"[{host.address}]:{host.port}" if host.port not in (None, 22) else host.address
        lines.append(f"{name} {key.get_name()} {key.get_base64()}\n")
    return "".join(lines)


def _put_private(sftp, folder: str, name: str, text: str) -> str:
    """`text` into folder/name, whole or not at all (temporary name, then rename). The SFTP server creates the
    file with its own umask, so it is made 0600 before a byte is written; meanwhile nobody else can open it:
    the folder is 0700 (_private_folder)."""
    path = posixpath.join(folder, name)
    with sftp.open(path + ".tmp", "w") as f:
        f.chmod(0o600)
        f.write(text.encode())
    sftp.posix_rename(path + ".tmp", path)
    return path


def _private_folder(sftp, name: str, run: str) -> str:
    """KEYS/NAME/RUN in the instance's home, each folder made 0700 (and checked: a folder others can enter
    is refused, never written into)."""
    folder = sftp.normalize(".")
    for part in (*KEYS.split("/"), name, run):
        folder = posixpath.join(folder, part)
        try:
            sftp.mkdir(folder, 0o700)
        except IOError:
            pass  # already there
        sftp.chmod(folder, 0o700)
        if not stat.S_ISDIR(sftp.lstat(folder).st_mode) or sftp.lstat(folder).st_mode & 0o077:
            raise CommandError(f"{folder} on instance 0 is not a private folder (0700): not writing a key there")
    return folder


def _remove_private(sftp, folder: str) -> None:
    """A run's key folder removed (the launcher was not started: nobody else removes it)."""
    for name in sftp.listdir(folder):
        sftp.remove(posixpath.join(folder, name))
    sftp.rmdir(folder)


def cluster_key(name: str, target: JobTarget) -> str:
    """The key a detached launcher gets: the cluster's own (in its state), readable without a passphrase."""
    import paramiko  # heavy

    own = local_state.key_path(name)
    if not own.is_file():
        raise UsageError(f"cluster {name} uses a key pair of your own (no key in its state): --detach copies only "
                         f"a cluster's own key to instance 0, never a personal one")
    if target.ssh.key and os.path.realpath(os.path.expanduser(target.ssh.key)) != os.path.realpath(own):
        raise UsageError(f"--ssh-key {target.ssh.key}: --detach copies only cluster {name}'s own key ({own}) to "
                         f"instance 0, never a personal one: leave --ssh-key out")
    try:
        paramiko.PKey.from_path(own)
    except (paramiko.PasswordRequiredException, TypeError) as exc:  # TypeError: a PEM key's, from cryptography
        raise UsageError(f"{own} is passphrase-protected: a detached launcher has nobody to type it") from exc
    except (paramiko.SSHException, OSError, ValueError) as exc:
        raise UsageError(f"{own}: not a private key that can be used ({exc})") from exc
    return str(own)


def start(request: "TrainRequest", target: JobTarget, spec: "JobSpec", run: str) -> DetachedRun:
    """Start the job's launcher on instance 0 of cluster request.cluster (target: its resolved --cluster
    target; spec: the job as `launch train --cluster` resolved it; the other options as the request has them)."""
    env_file = _env_file_text(spec.env)
    environ, _ = _environ(spec)
    run_dir = run_dir_of(run)
    return _start(request.cluster, target, spec.hosts, run, lambda key, known: launcher_options(
        target, spec, run_dir, key, known, request),
        {"env_file": env_file, "environ": environ, "command": list(spec.command), "cwd": spec.workdir})


def resume(request: "TrainRequest", target: JobTarget, run: str) -> DetachedRun:
    """`launch train --cluster NAME --detach --resume RUN`: a launcher on instance 0 resumes RUNS/RUN (a
    detached run: a --hosts job) on the cluster's instances as they are now (target: the cluster resolved now,
    e.g. after `launch cluster repair`), with as many worker slots as the run had (launcher/jobs/where.py).
    The request's --env pairs (a value job.yaml masks must be given again) go through the starter's pipe."""
    run_dir = run_dir_of(run)
    return _start(request.cluster, target, target.hosts, run,
                  lambda key, known: resume_options(target, run_dir, key, known, request),
                  {"env_file": _env_file_text(request.env), "environ": {}, "command": [], "cwd": target.workdir,
                   "resume": True})


def _start(name: str, target: JobTarget, hosts, run: str, options: Callable[[str, str], List[str]],
           config: dict) -> DetachedRun:
    """Key and known_hosts to instance 0 (hosts[0]), then the starter there with `config` and the launcher's
    options(key path, known_hosts path)."""
    from mxlaunch.infra.transport.ssh import connect_all  # heavy

    key_file = cluster_key(name, target)
    config = {**config, "run_dir": run_dir_of(run), "extra": {"cluster": name, "address": hosts[0].address}}
    connections = connect_all(hosts, target.ssh)  # every host key verified here, for instance 0's known_hosts
    try:
        connections.raise_if_failed()
        first = connections[hosts[0]]
        return _start_on(first, target.python, name, run, key_file, known_hosts_text(connections.succeeded),
                         options, config)
    finally:
        connections.close()


def _start_on(first, python: str, name: str, run: str, key_file: str, known_text: str,
              options: Callable[[str, str], List[str]], config: dict) -> DetachedRun:
    """The key folder on instance 0 (`first`), then the starter. Whatever ends this before the starter has
    reported a launcher (an error, a lost connection, Ctrl-C) removes the key folder again: no launcher
    holds that key, and nobody else would remove it."""
    folder = started = None
    try:
        with open(key_file, encoding="utf-8") as f:
            key_text = f.read()
        with first.sftp(SFTP_TIMEOUT) as sftp:
            folder = _private_folder(sftp, name, run)
            key = _put_private(sftp, folder, KEY_NAME, key_text)
            known = _put_private(sftp, folder, "known_hosts", known_text)
        config = {**config, "options": options(key, known), "keys": posixpath.dirname(folder)}
        code, out, err = first.run([python, "-m", STARTER], timeout=START_TIMEOUT, stdin=json.dumps(config).encode())
        started = _started(name, code, out, err)
    except OSError as exc:
        raise CommandError(f"cannot prepare instance 0 of cluster {name}: {exc.strerror or exc}") from exc
    finally:
        if started is None and folder is not None:
            _remove_quietly(first, folder)
    return DetachedRun(cluster=name, run=run, run_dir=config["run_dir"], pid=started[0], console=started[1])


def _started(name: str, code: int, out: str, err: str) -> Tuple[int, str]:
    """(pid, console) from the starter's reply: its last line, {"pid": P, "console": PATH}; CommandError when
    it failed or said something else."""
    if code != 0:
        said = (err.strip().splitlines() or [f"exit status {code}"])[-1]
        hint = (f" (the cluster's mxlaunch is older than this one: `launch cluster up {name} --wait ssh` "
                f"installs it again)" if "No module named" in said else "")
        raise CommandError(f"could not start the launcher on {name}-0: {said}{hint}")
    try:
        reply = json.loads((out.strip().splitlines() or [""])[-1])
        pid, console = reply["pid"], reply["console"]
    except (ValueError, TypeError, KeyError):
        pid = console = None
    if not (isinstance(pid, int) and not isinstance(pid, bool) and pid > 1 and isinstance(console, str)):
        raise CommandError(f"could not start the launcher on {name}-0: its starter's reply was not understood")
    return pid, console


def _remove_quietly(first, folder: str) -> None:
    """The key folder of a start that did not happen, as far as the connection still allows (a folder left
    behind is removed by the next start's sweep on instance 0)."""
    try:
        with first.sftp(SFTP_TIMEOUT) as sftp:
            _remove_private(sftp, folder)
    except Exception:  # the connection is what failed: the sweep removes it later
        pass


def new_run_id() -> str:
    return posixpath.basename(rundir.default_run_dir(rundir.new_job_id()))


def run_of(request: "TrainRequest") -> str:
    """The run id of a detached launcher's request: its run directory's name (RUN where it has none)."""
    return os.path.basename(os.path.normpath(request.resume or request.run_dir or "RUN"))


def key_folder(cluster: str, run: str) -> str:
    """The folder of a detached launcher's key and known_hosts, in the home of instance 0's user."""
    return os.path.join(os.path.expanduser("~"), KEYS, cluster, run)


def remove_own_key(request: "TrainRequest") -> None:
    """A detached launcher's key folder, removed when it ends: only the folder made for its run, never a key
    the launcher was not given by --detach."""
    key = request.ssh_key
    folder = os.path.dirname(os.path.abspath(key)) if key else ""
    if folder == key_folder(request.detached_from, run_of(request)):
        remove_keys(folder)


def started_text(run: DetachedRun) -> str:
    """What `launch train --detach` says on stderr after the run id: where it runs, how to follow, list, stop."""
    return (f"detached: launcher pid {run.pid} on {run.cluster}-0, run directory {run.run_dir} (on EFS)\n"
            f"  follow: launch logs --cluster {run.cluster} {run.run} --follow\n"
            f"  list:   launch runs --cluster {run.cluster}\n"
            f"  stop:   launch stop --cluster {run.cluster} {run.run}\n")
