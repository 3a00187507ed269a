"""`launch cluster ...`: EC2 GPU clusters with a shared EFS file system (docs/cluster.md)."""
from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path
from typing import Optional

import click

from mxlaunch import cuda
from mxlaunch.errors import CommandError, UsageError
from mxlaunch.exits import Exit

from mxlaunch.infra.cloud import (catalog, deadlines, local_state, owner, prelaunch, provision, run_instances, signals,
                                  teardown)
from mxlaunch.infra.cloud import policy as policies, spec as specs
from mxlaunch.infra.cloud.aws import Aws
from mxlaunch.infra.cloud.record import discover, find_instances, list_clusters
from mxlaunch.infra.cloud.cluster_target import cost, describe, write_local_files


def info(message: str) -> None:
    click.echo(message, err=True)


def _money(value) -> str:
    return "n/a" if value is None else f"${value:,.2f}"


# `up` sets no spot max price, whose default is the on-demand price: that rate is a spot instance's upper bound
# (https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_SpotMarketOptions.html, MaxPrice).
SPOT_NOTE = "spot instances priced at the on-demand rate, the most their spot price can be"


def _spot(instances) -> int:
    """How many of `instances` are spot instances (AWS's InstanceLifecycle)."""
    return sum(1 for i in instances if i.lifecycle == "spot")


def _confirm(question: str, yes: bool) -> None:
    if yes:
        return
    if not sys.stdin or not sys.stdin.isatty():
        raise UsageError(f"{question} needs a confirmation and there is no terminal to ask on: pass --yes")
    if not click.confirm(question, default=False, err=True):
        raise CommandError("cancelled: nothing was changed")


def _aws(region: Optional[str], profile: Optional[str], name: Optional[str] = None, dry_run: bool = False) -> Aws:
    if not region and name:
        region = local_state.read_meta(name).region
    return Aws(region=region, profile=profile, dry_run=dry_run, echo=click.echo)


region_option = click.option("--region", help="AWS region (default: the cluster's, else boto3's configuration).")
profile_option = click.option("--profile", help="AWS profile (default: AWS_PROFILE / boto3's configuration).")
force_option = click.option("--force", is_flag=True,
                            help="Act on the cluster even if another user (AWS identity and mxlaunch id) owns it, "
                                 "or this machine holds no local state of it (never in another account or region).")


@click.group()
def cluster() -> None:
    """EC2 GPU clusters with shared EFS: up, down, repair, status, list, hostfile, ssh, put, exec, types, policy."""


@cluster.command()
@click.argument("name")
@click.option("--instance-type", "instance_type", required=True, help="EC2 GPU type, e.g. g5.12xlarge.")
@click.option("--count", type=int, required=True, help="Number of instances (>= 1).")
@region_option
@profile_option
@click.option("--spot", is_flag=True, help="Spot instances (one-time; terminated on interruption).")
@click.option("--on-demand-fallback/--no-on-demand-fallback", default=None,
              help="With --spot: when spot capacity is gone in every zone, launch on-demand instead, zone by zone "
                   "(a cluster's live instances keep it in their zone); they bill at the on-demand price. Recorded: "
                   "repair and restarts use it. Default: the cluster's setting, else off.")
@click.option("--efs/--no-efs", default=True, show_default=True, help="Encrypted EFS shared at /efs.")
@click.option("--placement-group/--no-placement-group", default=True, show_default=True,
              help="Cluster placement group where the type supports it.")
@click.option("--ami", help="AMI id (default: the AWS Deep Learning AMI from its public SSM parameter).")
@click.option("--ssh-cidr", help="Required: the address range allowed to SSH in, e.g. 203.0.113.7/32 (yours).")
@click.option("--key-name", help="An existing EC2 key pair to use instead of creating launch-NAME.")
@click.option("--ssh-user", default=specs.DEFAULT_SSH_USER, show_default=True, help="Login user of the AMI.")
@click.option("--max-hours", type=float, help="Instances shut themselves down (terminate) after H hours.")
@click.option("--wait", "wait_mode", type=click.Choice(specs.WAIT_MODES), default="ssh", show_default=True,
              help="ssh: wait for SSH, install and check the venv on EFS; running: until the instances run; "
                   "none: return once launched.")
@click.option("--dry-run", is_flag=True, help="Print every AWS call it would make; create nothing.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option("--keep-on-failure", is_flag=True, help="On failure keep what was created (for debugging).")
@click.option("--extra", type=click.Choice(("cpu", "gpu")), help="--wait ssh installs mxlaunch[EXTRA] "
              "(default: gpu on GPU types).")
@click.option("--wheelhouse", type=click.Path(file_okay=False), metavar="DIR",
              help="--wait ssh installs from these wheels only (uploaded to EFS), not from PyPI.")
@force_option
def up(name, instance_type, count, region, profile, spot, efs, placement_group, ami, ssh_cidr, key_name, ssh_user,
       max_hours, wait_mode, dry_run, yes, keep_on_failure, force, extra=None, wheelhouse=None,
       on_demand_fallback=None) -> None:
    """Create (or complete) cluster NAME: COUNT instances of TYPE, tagged launch:cluster=NAME."""
    spec = specs.build(name, instance_type, count, ssh_cidr, spot=spot, efs=efs, placement_group=placement_group,
                       ami=ami, key_name=key_name, max_hours=max_hours, ssh_user=ssh_user, wait=wait_mode,
                       keep_on_failure=keep_on_failure, on_demand_fallback=on_demand_fallback)
    prelaunch.require_ipv4(spec)
    aws = _aws(region, profile, name, dry_run=dry_run)
    owner.bound(aws, name, "create or change")  # another account or region: refused before anything is read
    if specs.cidr_warning(spec.ssh_cidr):
        info(specs.cidr_warning(spec.ssh_cidr))
    record = discover(aws, name)
    spec = _owned(aws, spec, record, force)
    if on_demand_fallback is None:  # not said: an existing cluster keeps its setting (as --max-hours does)
        recorded = not record.empty and local_state.read_meta(name).on_demand_fallback
        spec = dataclasses.replace(spec, on_demand_fallback=bool(recorded))
    todo = provision.plan(spec, record)
    itype = spec.itype
    info(f"cluster {name} in {aws.region}: {spec.count} x {spec.instance_type} ({itype.gpus} x {itype.gpu_model} "
         f"each), {catalog.price_text(itype, spec.count)}{'; spot is usually cheaper' if spot else ''}")
    kept = (deadlines.inherited(record, local_state.read_meta(name))
            if spec.max_hours is None and not record.empty else None)
    if kept is not None:
        info(f"new instances inherit the cluster's --max-hours deadline {specs.deadline_text(kept)}")
    elif spec.max_hours is None:
        info("no --max-hours: the instances run (and cost) until `launch cluster down "
             f"{name}`")
    else:
        info(f"--max-hours {spec.max_hours:g}: new instances terminate themselves {spec.max_hours:g} h from now, "
             f"even after a reboot (`launch cluster status {name}` shows the deadline)")
    if todo:
        info("will create: " + "; ".join(todo))
        if not dry_run:
            _confirm(f"create these AWS resources for cluster {name}?", yes)
    else:
        info(f"cluster {name} is complete: nothing to create")

    options = None
    if wait_mode == "ssh":  # checked before anything is created
        from mxlaunch.infra.cloud.install import install_options  # heavy
        options = install_options(extra, wheelhouse, spec.itype.gpus)

    def finish(rec):
        return _finish(aws, spec, rec, options)
    with signals.raised():  # SIGTERM and SIGHUP roll back like Ctrl-C (exit 143, 129)
        record = provision.Up(aws, spec, info, finish=finish).run(record)
    if dry_run:
        info("dry run: nothing was created")
        return
    _summary(aws, spec, record)


def _owned(aws: Aws, spec, record, force: bool):
    """`spec` with who creates or changes the cluster and where, once owner.check allows it: `up` on a cluster
    that exists counts as destructive (it may add instances or move its SSH rule, and it would make this
    machine's local state of it, after which `down` asks nothing more)."""
    me, foreign = owner.check(aws, spec.name, "change", force, info, record=record, destructive=not record.empty)
    if record.empty:
        me = owner.creator(me, specs.deadline_text(provision.CLOCK()))
    elif record.owner and record.owner.same(me):
        me = record.owner  # its instances keep naming who created the cluster
    return dataclasses.replace(spec, owner=me, foreign=foreign, binding=owner.caller(aws)[1])


def _finish(aws: Aws, spec, record, options=None):
    if aws.dry_run:
        return record
    live = [i for i in record.instances if i.live]
    if spec.wait in ("running", "ssh") and live:
        info(f"waiting for {len(live)} instance(s) to run")
        found = {i.id: i for i in run_instances.wait_running(aws, spec.name, [i.id for i in live], info)}
        record = dataclasses.replace(record, instances=tuple(found.get(i.id, i) for i in record.instances))
        live = [i for i in record.instances if i.live]
    key = local_state.key_path(spec.name) if not spec.key_name else None
    local_state.write_meta(spec.name, ami=spec.ami)  # --ami: what a repair boots when no instance is left to copy
    write_local_files(spec.name, live, spec.ssh_user, key)
    if spec.wait == "ssh" and live:
        from mxlaunch.infra.cloud import install  # heavy
        hosts = [(f"{spec.name}-{n}", i.public_ip) for n, i in enumerate(live)]
        install.wait_ssh_and_install(hosts, local_state.ssh_options(spec.name, spec.ssh_user, key), spec.efs, info,
                                     gpus_per_host=spec.itype.gpus, options=options)  # ends checking every instance
        if options is not None:
            # a cpu install: `train --cluster` adds no --gpus; the wheelhouse (a path here): a repair of a
            # cluster without EFS installs its new instances from it
            local_state.write_meta(spec.name, extra=options.extra,
                                   wheelhouse=str(options.wheelhouse) if options.wheelhouse else None)
    return record


def _summary(aws: Aws, spec, record) -> None:
    live = record.live
    per_hour, _ = cost(live)
    click.echo(f"cluster {spec.name}: {len(live)} x {spec.instance_type} in {aws.region}, "
               f"{spec.itype.gpus} GPU(s) each, ~{_money(per_hour)}/h ({catalog.ESTIMATE})")
    click.echo(f"hostfile:   {local_state.hostfile_path(spec.name)}")
    click.echo(f"ssh config: {local_state.ssh_config_path(spec.name)}   (launch cluster ssh {spec.name} 0)")
    if spec.wait == "ssh":
        gpus = ",".join(str(g) for g in range(spec.itype.gpus))
        click.echo(f"next: launch train --cluster {spec.name} -n {len(live)} -- python -m mxlaunch.trainer fit "
                   f"--gpus {gpus} --data-train /efs/data/train.rec --data-val /efs/data/val.rec")
    else:
        click.echo(f"next: launch cluster status {spec.name}   (instances still boot; the EFS venv is "
                   f"installed by `up --wait ssh`)")


@cluster.command()
@click.argument("name")
@region_option
@profile_option
@click.option("--dry-run", is_flag=True, help="Print every AWS call it would make; delete nothing.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@force_option
def down(name, region, profile, dry_run, yes, force) -> None:
    """Remove everything tagged launch:cluster=NAME (instances, EFS, groups, key pair)."""
    specs.validate_name(name)
    aws = _aws(region, profile, name, dry_run=dry_run)
    owner.bound(aws, name, "remove")  # another account or region: refused before anything is read
    record = discover(aws, name)
    owner.check(aws, name, "remove", force, info, record=record, destructive=True)
    if not record.empty and not dry_run:
        _confirm(f"remove cluster {name} ({len(record.instances)} instance(s), its EFS and everything tagged) "
                 f"in {aws.region}?", yes)
    removed = teardown.down(aws, record, info)
    if record.empty:
        click.echo(f"cluster {name}: nothing tagged launch:cluster={name} in {aws.region}; nothing to remove")
        return
    if dry_run:
        info("dry run: nothing was removed")
        return
    for line in removed:
        click.echo(f"removed {line}")
    click.echo(f"cluster {name}: down")


@cluster.command()
@click.argument("name")
@region_option
@profile_option
@force_option
@click.option("--replace-unreachable", is_flag=True,
              help="Replace silent instances even when none answers SSH or more than half are silent (refused "
                   "by default: the silence may be this machine's network).")
def repair(name, region, profile, force, replace_unreachable) -> None:
    """Make NAME whole: replace the instances AWS reports gone and those that do not answer SSH (terminated
    first), up to the count `up` recorded (same zone, image, tags; on-demand when spot capacity is gone and the
    cluster has --on-demand-fallback); wait for them and check them as `up --wait ssh` does.

    `launch train --cluster NAME --max-restarts N` does this before each restart (and also replaces an instance
    that had a spot interruption notice). Nothing to do: no AWS change."""
    specs.validate_name(name)
    from mxlaunch.infra.cloud.repair import make_whole  # heavy
    done = make_whole(name, info, force=force, replace_unreachable=replace_unreachable,
                      aws=_aws(region, profile, name))  # also rewrites the files below
    click.echo(f"cluster {name}: {len(done.terminated)} instance(s) terminated, {len(done.launched)} launched")
    click.echo(f"hostfile:   {local_state.hostfile_path(name)}")
    if done.left:  # not whole: say so in the status too
        silent = CommandError(f"cluster {name}: {len(done.left)} instance(s) still do not answer SSH: "
                              f"`launch cluster repair {name} --replace-unreachable` replaces them")
        silent.exit_code = Exit.SSH
        raise silent


@cluster.command()
@click.argument("name", required=False)
@region_option
@profile_option
def status(name, region, profile) -> None:
    """Instances, states, GPUs and estimated cost of cluster NAME (all clusters without NAME)."""
    if not name:
        return _list(region, profile)
    specs.validate_name(name)
    aws = _aws(region, profile, name)
    record = discover(aws, name)
    if record.empty:
        raise CommandError(f"no cluster {name} in {aws.region}")
    click.echo(f"cluster {name} ({aws.region})")
    click.echo(f"{'#':>3}  {'INSTANCE':<20} {'STATE':<14} {'TYPE':<14} {'GPUS':<22} {'ZONE':<12} "
               f"{'PRIVATE':<15} {'PUBLIC':<15}  MARKET")
    for n, i in enumerate(record.instances):  # MARKET: AWS's own InstanceLifecycle (an on-demand fallback shows)
        click.echo(f"{n:>3}  {i.id:<20} {i.state:<14} {i.instance_type:<14} {describe(i):<22} {i.az:<12} "
                   f"{i.private_ip or '-':<15} {i.public_ip or '-':<15}  {i.lifecycle}")
    per_hour, so_far = cost(record.instances)
    spot = _spot(record.instances)
    bound = "at most " if spot else "~"
    click.echo(f"cost: {bound}{_money(per_hour)}/h now, {bound}{_money(so_far)} so far ({catalog.ESTIMATE}"
               + (f"; {spot} {SPOT_NOTE})" if spot else ")"))
    click.echo(f"security groups: {record.security_group or '-'} (cluster), {record.efs_security_group or '-'} (EFS); "
               f"EFS: {record.file_system or '-'} ({len(record.mount_targets)} mount target(s)); "
               f"placement group: {record.placement_group or '-'}; key pair: {record.key_name or '(yours)'}")
    live = len(record.live)
    meta = local_state.read_meta(name)
    wanted = meta.count
    recorded = record.owner or owner.recorded(aws, name)
    if recorded:
        click.echo(f"owner: {recorded.describe()}")
    for line in deadlines.status_lines(aws, record, meta):
        click.echo(line)
    if wanted and live > wanted:
        click.echo(f"warning: {live} live instances, {wanted} asked: likely a leak")


@cluster.command(name="list")
@region_option
@profile_option
def list_(region, profile) -> None:
    """Every cluster (tagged launch:cluster) in the region."""
    _list(region, profile)


def _list(region, profile) -> None:
    aws = _aws(region, profile)
    clusters = list_clusters(aws)
    elsewhere = [(n, local_state.read_meta(n).region) for n in local_state.local_clusters()]
    elsewhere = [(n, r) for n, r in elsewhere if r and r != aws.region]
    for n, r in elsewhere:
        info(f"(cluster {n} is in {r}: `launch cluster status {n}`)")
    if not clusters:
        click.echo(f"no clusters in {aws.region}")
        return
    click.echo(f"{'NAME':<20} {'INSTANCES':<10} {'TYPE':<14} {'GPUS':<6} {'$/H':>11} {'SO FAR':>11}  STATES")
    marked = False
    for name, instances in clusters.items():
        per_hour, so_far = cost(instances)
        bound = "<=" if _spot(instances) else ""
        marked = marked or bool(bound)
        types = ",".join(sorted({i.instance_type for i in instances})) or "-"
        gpus = sum(catalog.CATALOG[i.instance_type].gpus for i in instances if i.instance_type in catalog.CATALOG
                   and i.live)
        states = ",".join(f"{s}:{sum(1 for i in instances if i.state == s)}"
                          for s in sorted({i.state for i in instances})) or "(no instances: leftovers)"
        click.echo(f"{name:<20} {len(instances):<10} {types:<14} {gpus:<6} {bound + _money(per_hour):>11} "
                   f"{bound + _money(so_far):>11}  {states}")
    click.echo(f"(costs: {catalog.ESTIMATE}" + (f"; <=: {SPOT_NOTE})" if marked else ")"))


def _refresh(name, region, profile, action="write the hostfile of"):
    specs.validate_name(name)
    aws = _aws(region, profile, name)
    owner.bound(aws, name, action)  # its local files are rewritten from what is found: never another cluster's
    running = find_instances(aws, name, states=("running",))
    if not running:
        raise CommandError(f"cluster {name} has no running instances in {aws.region}")
    meta = local_state.read_meta(name)
    user = meta.ssh_user or specs.DEFAULT_SSH_USER
    key = meta.key_file
    hostfile, ssh_config = write_local_files(name, running, user, Path(key) if key else None)
    return running, hostfile, ssh_config


@cluster.command()
@click.argument("name")
@region_option
@profile_option
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Also write the hostfile here.")
def hostfile(name, region, profile, output) -> None:
    """Print (and save in the cluster's state directory) the hostfile of NAME's running instances."""
    _, path, _ = _refresh(name, region, profile)
    text = path.read_text()
    if output:
        with open(output, "w") as f:
            f.write(text)
    click.echo(text, nl=False)


@cluster.command()
@click.argument("name")
@click.argument("index", type=int, default=0, required=False)
@region_option
@profile_option
@click.option("--print", "print_only", is_flag=True, help="Print the ssh command instead of running it.")
@force_option
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def ssh(name, index, region, profile, print_only, force, command) -> None:
    """SSH to instance INDEX (default 0) of cluster NAME, through the cluster's ssh config."""
    specs.validate_name(name)
    owner.check(_aws(region, profile, name), name, "ssh to", force, info)
    running, _, ssh_config = _refresh(name, region, profile, "ssh to")
    if not 0 <= index < len(running):
        raise UsageError(f"cluster {name} has {len(running)} running instance(s): INDEX must be 0..{len(running) - 1}")
    argv = ["ssh", "-F", str(ssh_config), f"{name}-{index}", *command]
    if print_only:
        click.echo(" ".join(argv))
        return
    os.execvp("ssh", argv)


@cluster.command(name="types")
def types_() -> None:
    """Every instance type `up` knows: GPUs, compute capability, whether the MXNet wheel runs them, price.

    Reads the catalog only: no AWS call, no credentials."""
    click.echo(f"{'TYPE':<15} {'GPUS':>4}  {'GPU':<17} {'MEMORY':>6}  {'CC':<4} {'RUNS':<12} {'$/H':>7}  NEEDS")
    for t in catalog.CATALOG.values():
        verdict = t.verdict
        runs = f"yes ({verdict.kernel})" if verdict.runs else f"no ({cuda.arch(t.gpu.capability)})"
        needs = " ".join(f"{k}={v}" for k, v in t.env.items()) if verdict.runs and t.env else "-"
        price = "n/a" if t.price_per_hour is None else f"{t.price_per_hour:.3f}"
        click.echo(f"{t.name:<15} {t.gpus:>4}  {t.gpu.model:<17} {t.gpu.memory_gb:>3} GB  "
                   f"{cuda.dotted(t.gpu.capability):<4} {runs:<12} {price:>7}  {needs}")
    click.echo(f"RUNS: {catalog.WHEEL.label}, which `up` installs, has kernels for {catalog.WHEEL.kernels}; "
               f"`up` refuses the types marked no.")
    click.echo("NEEDS: environment `launch train --cluster` gives every role on that type.")
    click.echo(f"$/H: USD per instance-hour, {catalog.ESTIMATE}; other regions, later price changes and spot "
               f"differ.")
    click.echo("refused by `up`, with what to use instead:")
    for r in catalog.RETIRED.values():
        instead = f"{r.count} x {r.instead}" if r.count > 1 else r.instead
        click.echo(f"  {r.name:<15} {r.gpus:>2} x {r.gpu_model:<22} cc {cuda.dotted(r.gpu.capability)}  "
                   f"-> {instead:<16} ({r.why})")


@cluster.command()
def policy() -> None:
    """Print the least-privilege IAM policy (JSON) for `launch cluster` and `launch train --cluster`.

    Attach it to the user or role that runs them (README, "IAM policy"). Reads no AWS: no credentials."""
    click.echo(policies.document_json())


from mxlaunch.launcher.cli.cluster_files import exec_, put  # noqa: E402  (put and exec live in their own module)
cluster.add_command(put)
cluster.add_command(exec_)
