"""A cluster made whole again: what a restart under `launch train --cluster` does first, and
`launch cluster repair NAME` by hand.

    make_whole(name, echo, doomed=(), replace_unreachable=False) -> Repair
    restart_hosts(name, addresses, doomed, echo) -> None (same hosts: no AWS call) | JobTarget (repaired)

1. The cluster as `up` would read it: its tags (record.discover) and what they do not hold from the local
   cluster.json `up` wrote (count, type, spot, user, key, EFS, install extra and wheelhouse). Credentials of
   another account or a --region of another region are refused before anything is read, and a machine that
   holds no local state of the cluster needs --force (infra/cloud/owner.py).
2. An instance AWS reports not running is lost without a probe (it is not counted, so it is replaced).
   Running instances that do not answer SSH (a bounded probe over the SSH transport, with the cluster's ssh
   config, key and known_hosts; its connector injectable: tests never connect to moto's addresses) and the
   `doomed` ones (private addresses with a spot interruption notice: gone within two minutes anyway) are
   terminated — found by the cluster's tag, so only its own — and waited for until AWS says `terminated`
   (bounded): a shutting-down instance still counts toward the quota the replacements need.
   Silence is read with care, since it may be this machine's fault (its address no longer in the SSH rule,
   a VPN): when no running instance answers, nothing is terminated (the repair is refused), and at most half
   of the running instances are terminated for silence in one repair (the rest stay, named); a spot notice is
   no silence. `replace_unreachable` (the CLI's --replace-unreachable) lifts both limits.
3. The missing instances come from the code `up` runs (provision.Up with the recorded spec: the same zone,
   placement group, EFS mount, image as their peers, owner tags, and the cluster's recorded --max-hours
   deadline: one that has passed is refused before anything is terminated). A quota refusal right after this
   repair's own terminations is retried with backoff for about 5 minutes, saying so. They are then waited for as
   `up --wait ssh` does (running, SSH, the user data's ready file). The venv on EFS exists already, so a new
   instance is only verified (imports mxnet and mxlaunch; the GPU check for a gpu install); a cluster without
   EFS installs on the new instances alone, from the wheelhouse `up` recorded (a path on this machine).
4. hostfile, ssh_config and known_hosts are rewritten (the keys of instances gone are dropped; new keys are
   learnt on the first SSH, as `up` learns them).

A cluster that is whole costs reads only: one line, no AWS write. A cluster missing more than instances (its
security group, EFS, key) is refused: that is `launch cluster up`'s work. A failure raises a CommandError; a
failure after the launch keeps what it launched (provision.Up: one line says so); Ctrl-C, SIGTERM or SIGHUP
remove what this repair launched (provision.Up's rollback: its ledger, never the instances it found).
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

from mxlaunch.errors import CommandError
from mxlaunch.exits import Exit
from mxlaunch.infra.transport import timeouts
from mxlaunch.infra.transport.group import Connector, Group
from mxlaunch.infra.transport.hosts import Host
from mxlaunch.infra.transport.ssh_options import SSHOptions

from mxlaunch.infra.cloud import (deadlines, install, local_state, owner, provision, run_instances, signals, teardown,
                                  wait)
from mxlaunch.infra.cloud.aws import Aws, AwsError, CapacityUnavailable, NoCredentials, QuotaExceeded
from mxlaunch.infra.cloud.record import ClusterRecord, Instance, discover, find_instances
from mxlaunch.infra.cloud.spec import DEFAULT_SSH_USER, ClusterSpec, Owner, validate_name
from mxlaunch.infra.cloud.cluster_target import cluster_target, write_local_files
from mxlaunch.infra.cloud.local_state import ClusterMeta
from mxlaunch.infra.transport.target import JobTarget

PROBE_ATTEMPTS = timeouts.PROBE_ATTEMPTS  # an instance is unreachable when `true` fails this many times in a row
INTERVAL = 5.0  # between two looks at instances terminating
TERMINATE_TIMEOUT = 600.0  # until AWS says terminated
NOT_GONE = ("pending", "running", "stopping", "stopped", "shutting-down")
# A launch right after this repair's terminations may meet these while AWS still counts what it terminated.
RELEASED_CODES = {"VcpuLimitExceeded", "InstanceLimitExceeded", "MaxSpotInstanceCountExceeded"}
QUOTA_BACKOFF = (15.0, 30.0, 60.0, 60.0, 60.0, 60.0)  # seconds between tries: 4.75 minutes in all
# a deadline closer than this refuses a repair before it terminates anything: its launch may come that late
LAUNCH_MARGIN = deadlines.MARGIN + dt.timedelta(seconds=TERMINATE_TIMEOUT + sum(QUOTA_BACKOFF))

Echo = Callable[[str], None]
Probe = Callable[[Sequence[Instance]], Sequence[Instance]]  # running instances -> those that do not answer


class Unreachable(CommandError):
    """No running instance answers SSH from here: most likely this machine's reach, not the cluster."""

    exit_code = Exit.SSH


@dataclass(frozen=True)
class Repair:
    """What one repair did: instance ids terminated and launched; `count` the cluster's recorded size;
    `left`: instances that do not answer SSH but were left running (the at-most-half rule)."""

    name: str
    count: int
    terminated: tuple = ()
    launched: tuple = ()
    left: tuple = ()


def cluster_ssh(name: str, meta: Optional[ClusterMeta] = None) -> SSHOptions:
    """The SSH settings of cluster `name` from what `up` recorded (cluster.json: user, key)."""
    meta = local_state.read_meta(name) if meta is None else meta
    return local_state.ssh_options(name, meta.ssh_user or DEFAULT_SSH_USER, Path(meta.key_file) if meta.key_file else None)


def unreachable(name: str, addresses: Sequence[str], connect: Optional[Connector] = None) -> list:
    """Those of `addresses` (the cluster's) where `true` over SSH fails PROBE_ATTEMPTS times in a row (all at
    once, each try on a new connection, bounded). Reads no AWS: the ssh config is the one `up` or a repair
    wrote."""
    ssh, left = cluster_ssh(name), list(addresses)
    for attempt in range(PROBE_ATTEMPTS):
        if not left:
            break
        if attempt:
            wait.SLEEP(timeouts.PROBE_INTERVAL)
        with Group(ssh, connect or install.CONNECT) as group:
            found = group.run([Host(a) for a in left], ["true"], timeouts.PROBE)
        left = [a for a in left if not found[Host(a)].ok]
    return left


def ssh_probe(name: str, connect: Optional[Connector] = None, known: Optional[dict] = None) -> Probe:
    """The unreachable ones of `instances` (see `unreachable`); `known`: address -> answered, of a probe just
    made (a restart's, of the job's hosts): those are not asked again."""
    known = known or {}

    def probe(instances: Sequence[Instance]) -> Sequence[Instance]:
        address = {i.id: i.private_ip or i.public_ip for i in instances}
        silent = set(unreachable(name, [address[i.id] for i in instances if address[i.id] not in known], connect))
        return [i for i in instances if not known.get(address[i.id], address[i.id] not in silent)]
    return probe


def _label(instances: Sequence[Instance]) -> str:
    return ", ".join(f"{i.id} ({i.private_ip or '-'})" for i in instances)


def _spec(name: str, meta: ClusterMeta, record: ClusterRecord, who: Optional[Owner]) -> ClusterSpec:
    """The spec `up` ran with, as far as a repair needs it. The SSH rule and the shared resources are taken as
    they are (`foreign`: never revoke a rule); new instances boot the image their peers run."""
    if not meta.count or not meta.instance_type:
        raise CommandError(f"cluster {name}: no record of its `up` here ({local_state.cluster_dir(name)}/cluster.json): "
                           f"repair it where `launch cluster up {name}` ran")
    missing = [what for what, there in (("its security group", record.security_group),
                                        ("its SSH rule", record.ssh_cidrs),
                                        ("its EFS file system", record.file_system or not meta.efs),
                                        ("its EFS security group", record.efs_security_group or not meta.efs),
                                        ("its key pair", record.key_name or not meta.key_file))
               if not there]
    if missing:
        raise CommandError(f"cluster {name} lacks {', '.join(missing)}: a repair only replaces instances; "
                           f"`launch cluster up {name} ...` completes it")
    images = [i.image_id for i in record.live if i.image_id]
    return ClusterSpec(name=name, instance_type=meta.instance_type, count=meta.count,
                       ssh_cidr=record.ssh_cidrs[0], spot=bool(meta.spot), efs=bool(meta.efs),
                       placement_group=bool(record.placement_group), ami=images[0] if images else meta.ami,
                       key_name=None if meta.key_file else meta.key_name,
                       ssh_user=meta.ssh_user or DEFAULT_SSH_USER, wait="ssh", owner=who, foreign=True,
                       on_demand_fallback=bool(meta.on_demand_fallback))


def make_whole(name: str, echo: Echo, doomed: Sequence[str] = (), *, force: bool = False,
               replace_unreachable: bool = False, aws: Optional[Aws] = None, probe: Optional[Probe] = None,
               connect: Optional[Connector] = None) -> Repair:
    """Cluster `name` back to its recorded count (see the module docstring). `doomed`: private addresses of
    instances that got a spot interruption notice. `force`: the owner check's (someone else's cluster, or no
    local state of it here); `replace_unreachable`: terminate every instance that does not answer SSH, even
    all of them. `probe` and `connect` are the SSH seams (tests fake them; without `connect`, install.CONNECT)."""
    validate_name(name)
    meta = local_state.read_meta(name)
    aws = aws or Aws(region=meta.region)
    owner.bound(aws, name, "repair")  # another account or region: refused before anything is read
    record = discover(aws, name)
    me, _ = owner.check(aws, name, "repair", force, echo, record=record, destructive=True)
    spec = dataclasses.replace(_spec(name, meta, record, record.owner or me), binding=owner.caller(aws)[1])
    key = Path(meta.key_file) if meta.key_file else None
    live = record.live
    running = [i for i in live if i.state == "running"]
    noticed = [i for i in running if i.private_ip in set(doomed)]
    write_local_files(name, live, spec.ssh_user, key)  # the ssh config the probe goes through
    asked = [i for i in running if i not in noticed]
    lost = list((probe or ssh_probe(name, connect))(asked))
    if asked and len(lost) == len(asked) and not replace_unreachable:
        raise Unreachable(
            f"cluster {name}: none of its {len(asked)} running instance(s) answers SSH from this machine "
            f"({_label(lost)}): most likely this machine cannot reach them (its address outside the SSH rule "
            f"{', '.join(record.ssh_cidrs) or '-'} of --ssh-cidr, a VPN or firewall blocking port 22), so nothing "
            f"was terminated; try `launch cluster ssh {name} 0`; if they really are down: "
            f"`launch cluster repair {name} --replace-unreachable`")
    allowed = len(lost) if replace_unreachable else len(running) // 2  # silence may be ours: at most half
    lost, left = lost[:allowed], lost[allowed:]
    going = noticed + lost
    if not going and len(running) >= spec.count:
        echo(f"cluster {name} is whole: {len(running)} of {spec.count} instance(s) running and answering SSH")
        return Repair(name, spec.count)
    # before anything is terminated: replacements inherit the cluster's deadline, and none is given a passed one,
    # including one that passes while this repair waits for its terminations and the quota (LAUNCH_MARGIN)
    deadlines.for_launch(name, None, record, meta, provision.CLOCK(), f"a repair launches nothing past it; "
                         f"`{provision.again(spec)} --max-hours H` gives the cluster a new deadline",
                         margin=LAUNCH_MARGIN)
    echo(f"repairing cluster {name}: {len(running) - len(going) - len(left)} of {spec.count} instance(s) running "
         f"and reachable" + (f"; no SSH answer: {_label(lost)}" if lost else "")
         + (f"; spot interruption notice: {_label(noticed)}" if noticed else ""))
    record, launched = _replace(aws, spec, meta, record, going, key, echo, connect)
    new = f", new: {_label([i for i in record.live if i.id in launched])}" if launched else ""
    if left:
        echo(f"cluster {name}: {len(record.live)} of {spec.count} instance(s){new}; left running though they do "
             f"not answer SSH (at most half are replaced at once: the silence may be this machine's): "
             f"{_label(left)}; `launch cluster repair {name} --replace-unreachable` replaces them too")
    else:
        echo(f"cluster {name} is whole again: {len(record.live)} of {spec.count} instance(s){new}")
    return Repair(name, spec.count, terminated=tuple(i.id for i in going), launched=launched,
                  left=tuple(i.id for i in left))


def _replace(aws: Aws, spec: ClusterSpec, meta: ClusterMeta, record: ClusterRecord, going: Sequence[Instance],
             key: Optional[Path], echo: Echo, connect: Optional[Connector]) -> tuple:
    """(record, ids launched): `going` terminated (waited until `terminated`), then the missing instances
    launched by provision.Up, a quota error right after those terminations retried (_launch)."""
    name = spec.name
    with signals.raised():  # SIGTERM and SIGHUP: what this repair launched is removed, as on Ctrl-C
        if going:
            _terminate(aws, name, going, echo)
            record = discover(aws, name)
        kept = {i.id for i in record.live if i.state == "running"}

        def up() -> provision.Up:
            return provision.Up(aws, spec, echo,
                                finish=lambda rec: _finish(aws, spec, meta, rec, kept, key, echo, connect))
        try:
            record, done = _launch(up, record, len(going), echo)
        except CapacityUnavailable as exc:
            market = (" (neither spot nor on-demand, --on-demand-fallback)" if spec.spot and spec.on_demand_fallback
                      else " (spot)" if spec.spot else "")
            raise CapacityUnavailable(
                f"cannot replace {spec.count - len(record.live)} instance(s) of cluster {name}: no capacity for "
                f"{spec.instance_type}{market} in its zone ({exc.code}); it runs "
                f"{len(record.live)} of {spec.count}: `launch cluster repair {name}` later", exc.code) from exc
    return record, tuple(i.id for i in done.ledger.instances)


def _launch(up: Callable[[], "provision.Up"], record: ClusterRecord, terminated: int, echo: Echo) -> tuple:
    """(record, the Up that launched): `up()` run on `record`. After this repair's own terminations
    (`terminated` > 0) a quota refusal of the launch is retried with backoff (QUOTA_BACKOFF, about 5 minutes,
    said in a line each time): AWS keeps counting terminated instances toward a quota for a while, e.g. spot
    requests until EC2 notices their instances ended
    (https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/using-spot-limits.html)."""
    delays = iter(QUOTA_BACKOFF if terminated else ())
    while True:
        attempt = up()
        try:
            return attempt.run(record), attempt
        except QuotaExceeded as exc:
            delay = next(delays, None) if exc.code in RELEASED_CODES else None
            if delay is None:
                raise
            echo(f"{exc.code}: AWS may still count the {terminated} instance(s) this repair terminated toward the "
                 f"quota; trying again in {delay:.0f} s (for about {sum(QUOTA_BACKOFF) / 60:.0f} minutes in all)")
        wait.SLEEP(delay)


def restart_hosts(name: str, addresses: Sequence[str], doomed: Sequence[str], echo: Echo) -> Optional[JobTarget]:
    """Before a restart of a job on cluster `name` (`addresses`: its hosts; `doomed`: those with a spot notice).
    The hosts are probed first (`unreachable`: no AWS call): every one answers and none is doomed -> None, the
    restart runs on the same hosts, so a role's crash hours into a run never needs AWS (its credentials may have
    expired). Else the cluster is made whole (the probe's answers not asked again) and returned as it is now."""
    silent = unreachable(name, addresses)
    if not silent and not doomed:
        echo(f"all {len(addresses)} host(s) of the job answer SSH: restarting on the same hosts")
        return None
    why = "; ".join(part for part in (silent and f"no SSH answer from {', '.join(silent)}",
                                      doomed and f"spot interruption notice for {', '.join(doomed)}") if part)
    echo(f"{why}: making cluster {name} whole")
    try:
        done = make_whole(name, echo, doomed, probe=ssh_probe(name, None, {a: a not in silent for a in addresses}))
        found = cluster_target(name)
    except AwsError as exc:
        refresh = (": refresh them (`aws sso login`, or the AWS profile's keys)" if isinstance(exc, NoCredentials)
                   else "")
        raise type(exc)(f"{why}, and AWS refused to repair cluster {name}: {exc.format_message()}{refresh}",
                        exc.code) from exc
    if done.left:
        raise Unreachable(f"cluster {name}: {len(done.left)} instance(s) still do not answer SSH "
                          f"({' '.join(done.left)}): `launch cluster repair {name} --replace-unreachable` "
                          f"replaces them")
    return found


def _terminate(aws: Aws, name: str, instances: Sequence[Instance], echo: Echo) -> None:
    """Terminate the cluster's own `instances`; wait (bounded) until AWS has them `terminated`: a shutting-down
    instance still holds its share of the quota the replacements need."""
    ids = [i.id for i in instances]
    echo(f"terminating {len(ids)} instance(s): {' '.join(ids)}")
    teardown.terminate_visible(aws, ids)  # one id AWS no longer shows must not fail the repair
    wait.poll(lambda: [i for i in find_instances(aws, name, states=NOT_GONE) if i.id in ids], lambda left: not left,
              timeout=TERMINATE_TIMEOUT, interval=INTERVAL, what=f"{len(ids)} instance(s) of {name} to terminate")
    echo(f"  terminated: {' '.join(ids)}")


def _finish(aws: Aws, spec: ClusterSpec, meta: ClusterMeta, record: ClusterRecord, kept: set, key: Optional[Path],
            echo: Echo, connect: Optional[Connector]) -> ClusterRecord:
    """The new instances (and any still pending) waited for and checked as `up --wait ssh` does; a failure here
    rolls them back (provision.Up)."""
    fresh = [i.id for i in record.live if i.id not in kept]
    if not fresh:
        return record
    echo(f"waiting for {len(fresh)} new instance(s) to run")
    found = {i.id: i for i in run_instances.wait_running(aws, spec.name, fresh, echo)}
    record = dataclasses.replace(record, instances=tuple(found.get(i.id, i) for i in record.instances))
    live = record.live
    write_local_files(spec.name, live, spec.ssh_user, key)
    # known_hosts: the peers' keys stay; a new instance may have an old one's address (and a new key)
    local_state.keep_host_keys(spec.name, [a for i in live if i.id in kept for a in (i.private_ip, i.public_ip)])
    hosts = [(f"{spec.name}-{n}", i.public_ip) for n, i in enumerate(live) if i.id in fresh]
    checker = install.Remote(local_state.ssh_options(spec.name, spec.ssh_user, key), echo, connect)
    try:
        _check(checker, spec, meta, hosts, echo)
    finally:
        checker.close()
    return record


def _check(checker: "install.Remote", spec: ClusterSpec, meta: ClusterMeta, hosts: list, echo: Echo) -> None:
    """The new instances answer, finished their user data, and can use (or got) the cluster's venv."""
    echo("waiting for SSH")
    checker.wait_for(hosts, ["true"], "SSH answering", timeouts.BOOT)
    checker.wait_user_data(hosts, timeouts.READY)
    extra = meta.extra
    if extra is None:
        echo("  `up` installed nothing (--wait running/none): nothing to check")
        return
    if spec.efs:  # one venv on EFS, already installed: the new instances only prove they can use it
        checker.verify(hosts)
    else:
        options = install.install_options(extra, meta.wheelhouse, spec.itype.gpus)
        with tempfile.TemporaryDirectory(prefix="mxlaunch-wheel-") as tmp:
            checker.install(hosts, install.mxlaunch_wheel(options.wheelhouse, Path(tmp)), False, options)
    if extra == "gpu" and spec.itype.gpus > 0:
        checker.check_gpus(hosts, spec.itype.gpus)
