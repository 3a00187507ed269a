"""`up`'s instance step: every missing instance in one RunInstances per zone tried (the zone's EFS mount target
first, created and `available` before any GPU bills, and dropped again when no instance came there; a capacity
error moves on to the next zone at once), and the bounded wait until they run. provision.Up decides when this step
runs, and which zones it may use (one, when live instances pin it: repair and growth); this module how it launches.

--spot --on-demand-fallback: when spot capacity is gone in every zone tried, the same launch (subnet, placement
group, image, tags, deadline, user data) is sent as on-demand zone by zone, the last zone tried first (its mount
target is ready), then the others in their order. With the fallback on, the spot pass keeps the mount targets it
made until the end (AWS deletes one asynchronously: the same zone's created again minutes later would meet the
one being deleted); only the zone that launched keeps one. Only capacity errors (aws.CAPACITY_CODES, SpotMaxPriceTooLow
among them: with no max price set, on-demand costs no more than spot then) fall back; a quota
(MaxSpotInstanceCountExceeded is one) never does: more capacity bought at another price is not the answer to a
limit the user set or can raise."""
from __future__ import annotations

import datetime as dt
import uuid
from typing import Callable, Optional, Sequence

from mxlaunch.errors import CommandError

from mxlaunch.infra.cloud import catalog, teardown, wait
from mxlaunch.infra.cloud.aws import NOT_YET_CODES, Aws, CapacityUnavailable, QuotaExceeded
from mxlaunch.infra.cloud.prelaunch import Image
from mxlaunch.infra.cloud.record import Instance, Ledger, find_instances, tag_spec
from mxlaunch.infra.cloud.spec import DEADLINE_TAG, ClusterSpec, creation_tags, deadline_text
from mxlaunch.infra.cloud.userdata import render_user_data

RUNNING_TIMEOUT = 900.0
INTERVAL = 5.0
# RunInstances makes one attempt (aws.ONCE_CONFIG); these are retried with the same ClientToken, bounded.
LAUNCH_RETRY_CODES = NOT_YET_CODES | {None, "RequestLimitExceeded", "InternalError", "Unavailable",
                                      "ServiceUnavailable", "HTTP500", "HTTP502", "HTTP503", "HTTP504"}
NO_SUBNET = {"SubnetId": None, "AvailabilityZone": "?"}  # --dry-run without a default VPC


def parameters(spec: ClusterSpec, image: Image, key_name: str, placement_group: Optional[str],
               efs_dns: Optional[str], deadline: Optional[dt.datetime], count: int) -> dict:
    """RunInstances' parameters for `count` instances, all but the zone's (ClientToken, NetworkInterfaces)."""
    params = dict(ImageId=image.id, InstanceType=spec.instance_type, MinCount=count, MaxCount=count,
                  KeyName=key_name, UserData=render_user_data(spec, efs_dns, deadline),
                  BlockDeviceMappings=image.block_devices(),
                  MetadataOptions={"HttpTokens": "required", "HttpEndpoint": "enabled", "HttpPutResponseHopLimit": 2},
                  TagSpecifications=tag_spec("instance", spec.name, "node", {
                      **creation_tags(spec, "instance"), **({DEADLINE_TAG: deadline_text(deadline)}
                                                            if deadline else {})}) +
                  tag_spec("volume", spec.name, "node"))
    if placement_group:
        params["Placement"] = {"GroupName": placement_group}
    # An OS power-off (the deadline's timer, or anyone's `poweroff`) terminates: a stopped instance bills its volume.
    params["InstanceInitiatedShutdownBehavior"] = "terminate"
    if spec.spot:
        params["InstanceMarketOptions"] = {"MarketType": "spot", "SpotOptions": {
            "SpotInstanceType": "one-time", "InstanceInterruptionBehavior": "terminate"}}
    return params


def launch(aws: Aws, spec: ClusterSpec, ledger: Ledger, echo: Callable[[str], None], subnets: Sequence[dict],
           params: dict, groups: list, mount: Callable[[str], bool], unmount: Callable[[str], None]) -> tuple:
    """The new instances, from the first of `subnets` with capacity. `ledger` records them, and that a
    RunInstances is under way; `mount(subnet)`: the zone's mount target, True when it was just created;
    `unmount(subnet)` drops it again when no instance came there."""
    count = params["MinCount"]
    zones = _Zones(aws, ledger, echo, list(subnets) or [NO_SUBNET], groups, mount, unmount,
                   f"{count} x {spec.instance_type}")
    fallback = spec.spot and spec.on_demand_fallback
    try:
        # with a fallback to come, a zone given up on keeps its mount target for now: AWS deletes one
        # asynchronously, and creating it again minutes later in the same zone would meet the one being deleted
        new, az = zones.first(params, zones.subnets, "", keep_mounts=fallback)
    except _Gone as gone:
        if not fallback:
            raise CapacityUnavailable(
                f"no capacity for {count} x {spec.instance_type}{' (spot)' if spec.spot else ''} in any zone of "
                f"{aws.region} (tried {', '.join(gone.tried)}); try later, another --region, fewer instances"
                f" or another --instance-type", "InsufficientInstanceCapacity") from gone
        return _on_demand(spec, echo, zones, params, f"{', '.join(gone.tried)} ({gone.code})")
    zones.drop_unused()  # (kept for a fallback that was not needed)
    echo(f"launched {len(new)} x {spec.instance_type} in {az}: {' '.join(i.id for i in new)}")
    return new


def _on_demand(spec: ClusterSpec, echo: Callable[[str], None], zones: "_Zones", params: dict, spot_gone: str) -> tuple:
    """The spot launch that found no capacity (`spot_gone`: where, and AWS's code), sent as on-demand zone by
    zone: the last zone tried first (its mount target is ready), then the others in their order."""
    *others, last = zones.subnets
    on_demand = {k: v for k, v in params.items() if k != "InstanceMarketOptions"}
    try:
        new, az = zones.first(on_demand, [last, *others], "on-demand ")
        zones.drop_unused()
    except _Gone as gone:
        raise CapacityUnavailable(
            f"no capacity for {zones.what}: spot gone in {spot_gone}, on-demand too in {', '.join(gone.tried)} "
            f"({gone.code}, --on-demand-fallback); try later, another --region, fewer instances or another "
            f"--instance-type", gone.code) from gone
    except QuotaExceeded as exc:
        raise QuotaExceeded(f"spot capacity gone in {spot_gone}, and the on-demand fallback hit a quota: "
                            f"{exc.format_message()}", exc.code) from exc
    echo(f"spot capacity gone in {spot_gone}; {len(new)} on-demand instance(s) launched instead in {az}: "
         f"{' '.join(i.id for i in new)}; they bill at the on-demand price, "
         f"{catalog.price_text(spec.itype, len(new))}")
    return new


class _Gone(Exception):
    """No capacity in any zone tried: `tried` (zones, in order) and the last capacity code."""

    def __init__(self, tried: list, code: Optional[str]):
        super().__init__(code)
        self.tried, self.code = tried, code


class _Zones:
    """The zones one launch may use, and the mount targets it created there (so that a zone given up on loses the
    one it got, whichever market's try created it)."""

    def __init__(self, aws: Aws, ledger: Ledger, echo: Callable[[str], None], subnets: list, groups: list,
                 mount: Callable[[str], bool], unmount: Callable[[str], None], what: str):
        self.aws, self.ledger, self.echo, self.subnets, self.groups = aws, ledger, echo, subnets, groups
        self.mount, self.unmount, self.what = mount, unmount, what
        self.created: set = set()  # subnets whose mount target this launch created
        self.launched_in: Optional[str] = None  # the subnet whose RunInstances succeeded

    def first(self, params: dict, subnets: list, market: str, keep_mounts: bool = False) -> tuple:
        """(instances, zone) from the first of `subnets` with capacity, else _Gone. A zone without loses the mount
        target this launch made there (unless `keep_mounts`: another pass follows), but the last one tried: the
        on-demand fallback starts there, and when nothing follows, the caller's rollback removes it with the
        file system."""
        tried, code = [], None
        for n, subnet in enumerate(subnets):
            az, subnet_id = subnet["AvailabilityZone"], subnet["SubnetId"]
            if subnet_id and self.mount(subnet_id):
                self.created.add(subnet_id)
            try:
                new = _run(self.aws, self.ledger, params, subnet_id, self.groups, az)
                self.launched_in = subnet_id
                return new, az
            except CapacityUnavailable as exc:
                tried.append(az)
                code = exc.code
            last = n == len(subnets) - 1
            self.echo(f"no {market}capacity for {self.what} in {az} ({code})"
                      f"{'' if last else '; trying the next zone'}")
            if subnet_id in self.created and not last and not keep_mounts:
                self.unmount(subnet_id)
                self.created.discard(subnet_id)
        raise _Gone(tried, code)

    def drop_unused(self) -> None:
        """After the fallback launched: the mount targets this launch made in the zones it did not use go."""
        for subnet_id in sorted(self.created - {self.launched_in}):
            self.unmount(subnet_id)
            self.created.discard(subnet_id)


def _run(aws: Aws, ledger: Ledger, params: dict, subnet_id: Optional[str], groups: list, az: str) -> tuple:
    """One RunInstances in `subnet_id` (transient errors retried with the same ClientToken, so that AWS starts
    the instances once); the instances it started, written to the ledger."""
    # A public address whatever the subnet's MapPublicIpOnLaunch says (some organisations turn it off).
    nic = {"DeviceIndex": 0, "SubnetId": subnet_id, "Groups": groups, "AssociatePublicIpAddress": True,
           "DeleteOnTermination": True}
    token = uuid.uuid4().hex
    ledger.launching = True
    try:
        resp = wait.retry_codes(
            lambda: aws.call("ec2", "run_instances", once=True, ClientToken=token, NetworkInterfaces=[nic], **params),
            LAUNCH_RETRY_CODES, timeout=teardown.SETTLE_TIMEOUT, interval=teardown.SETTLE_INTERVAL,
            what=f"RunInstances in {az}")
    except CapacityUnavailable:
        ledger.launching = False  # refused: nothing started
        raise
    new = tuple(Instance.from_api(d) for d in resp["Instances"])
    ledger.instances.extend(new)
    ledger.launching = False
    return new


def wait_running(aws: Aws, name: str, ids, echo, timeout: float = RUNNING_TIMEOUT) -> tuple:
    """Poll until every instance in `ids` runs (bounded); a progress line whenever the count changes."""
    ids = set(ids)
    seen = [None]

    def fetch():
        return [i for i in find_instances(aws, name, states=("pending", "running", "stopping", "stopped",
                                                               "shutting-down", "terminated")) if i.id in ids]

    def show(found):
        running = sum(1 for i in found if i.state == "running")
        if running != seen[0]:
            echo(f"  running: {running}/{len(ids)}")
            seen[0] = running
        dead = [i for i in found if i.state in ("shutting-down", "terminated", "stopped", "stopping")]
        if dead:
            raise CommandError(f"instance(s) stopped while starting: "
                               f"{', '.join(f'{i.id} ({i.state})' for i in dead)} (spot reclaimed or boot failure)")
    found = wait.poll(fetch, lambda f: len(f) == len(ids) and all(i.state == "running" for i in f),
                      timeout=timeout, interval=INTERVAL, what=f"{len(ids)} instance(s) of {name} to run",
                      progress=show)
    return tuple(found)
