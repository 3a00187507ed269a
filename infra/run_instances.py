"""`up`'s instance step: every missing instance in one RunInstances per zone tried (the zone's EFS mount target
first, created and `available` before any GPU bills; a capacity error moves on to the next zone at once), and
the bounded wait until they run. provision.Up decides when this step runs; this module how it launches.

--spot --on-demand-fallback: when spot capacity is gone in every zone tried, the same launch (zone, subnet,
placement group, image, tags, deadline, user data) is sent once more as on-demand, in the last zone tried, whose
mount target is ready. Only capacity errors (aws.CAPACITY_CODES, SpotMaxPriceTooLow among them: with no max
price set, on-demand costs no more than spot then) fall back; a quota (MaxSpotInstanceCountExceeded is one) never
does: more capacity bought at another price is not the answer to a limit the user set or can raise."""
from __future__ import annotations

import datetime as dt
import uuid
from typing import TYPE_CHECKING, Callable, Optional, Sequence

from mxlaunch.errors import CommandError

from mxlaunch.infra import catalog, teardown, wait
from mxlaunch.infra.aws import NOT_YET_CODES, Aws, CapacityUnavailable, QuotaExceeded
from mxlaunch.infra.preflight import Image
from mxlaunch.infra.record import Instance, find_instances, tag_spec
from mxlaunch.infra.spec import DEADLINE_TAG, ClusterSpec, creation_tags, deadline_text
from mxlaunch.infra.userdata import render_user_data

if TYPE_CHECKING:
    from mxlaunch.infra.provision import Ledger

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
    if deadline is not None:
        params["InstanceInitiatedShutdownBehavior"] = "terminate"
    if spec.spot:
        params["InstanceMarketOptions"] = {"MarketType": "spot", "SpotOptions": {
            "SpotInstanceType": "one-time", "InstanceInterruptionBehavior": "terminate"}}
    return params


def launch(aws: Aws, spec: ClusterSpec, ledger: "Ledger", echo: Callable[[str], None], subnets: Sequence[dict],
           params: dict, groups: list, mount: Callable[[str], bool], unmount: Callable[[str], None]) -> tuple:
    """The new instances, from the first of `subnets` with capacity. `ledger` records them, and that a
    RunInstances is under way; `mount(subnet)`: the zone's mount target, True when it was just created;
    `unmount(subnet)` drops it again when no instance came there."""
    count = params["MinCount"]
    tried, code = [], None
    for subnet in subnets or [NO_SUBNET]:
        az, subnet_id = subnet["AvailabilityZone"], subnet["SubnetId"]
        fresh_mount = subnet_id and mount(subnet_id)
        try:
            new = _run(aws, ledger, params, subnet_id, groups, az)
        except CapacityUnavailable as exc:
            tried.append(az)
            code = exc.code
            last = len(tried) == len(subnets)
            echo(f"no capacity for {count} x {spec.instance_type} in {az} ({exc.code})"
                 f"{'' if last else '; trying the next zone'}")
            if fresh_mount and not last:
                unmount(subnet_id)
            continue
        echo(f"launched {len(new)} x {spec.instance_type} in {az}: {' '.join(i.id for i in new)}")
        return new
    if spec.spot and spec.on_demand_fallback and tried:
        return _on_demand(aws, spec, ledger, echo, subnet, params, groups, f"{', '.join(tried)} ({code})")
    raise CapacityUnavailable(
        f"no capacity for {count} x {spec.instance_type}{' (spot)' if spec.spot else ''} in any zone of "
        f"{aws.region} (tried {', '.join(tried)}); try later, another --region, fewer instances"
        f" or another --instance-type", "InsufficientInstanceCapacity")


def _on_demand(aws: Aws, spec: ClusterSpec, ledger: "Ledger", echo: Callable[[str], None], subnet: dict, params: dict,
               groups: list, spot_gone: str) -> tuple:
    """The spot launch that found no capacity (`spot_gone`: where, and AWS's code), sent once as on-demand in
    `subnet` (the last zone tried)."""
    az, count = subnet["AvailabilityZone"], params["MinCount"]
    on_demand = {k: v for k, v in params.items() if k != "InstanceMarketOptions"}
    try:
        new = _run(aws, ledger, on_demand, subnet["SubnetId"], groups, az)
    except CapacityUnavailable as exc:
        raise CapacityUnavailable(
            f"no capacity for {count} x {spec.instance_type}: spot gone in {spot_gone}, on-demand too in {az} "
            f"({exc.code}, --on-demand-fallback); try later, another --region, fewer instances or another "
            f"--instance-type", exc.code) from exc
    except QuotaExceeded as exc:
        raise QuotaExceeded(f"spot capacity gone in {spot_gone}, and the on-demand fallback hit a quota: "
                            f"{exc.format_message()}", exc.code) from exc
    echo(f"spot capacity gone in {spot_gone}; {len(new)} on-demand instance(s) launched instead in {az}: "
         f"{' '.join(i.id for i in new)}; they bill at the on-demand price, "
         f"{catalog.price_text(spec.itype, len(new))}")
    return new


def _run(aws: Aws, ledger: "Ledger", params: dict, subnet_id: Optional[str], groups: list, az: str) -> tuple:
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
