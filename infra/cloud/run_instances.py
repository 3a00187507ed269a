"""`up`'s instance step: every missing instance in one RunInstances per zone tried (no capacity, or no free
address in the zone's subnet, moves on to the next zone at once; nothing else is made per zone, so a region out
of capacity costs seconds), and the bounded wait until they run. provision.Up decides when this step runs, which
zones it may use (one, when live instances pin it: repair and growth), and makes the zone's EFS mount target
once the instances launched there; this module how it launches.

Each RunInstances carries a ClientToken, and its transient failures are sent again with the same token, so
that AWS starts the instances once. An answer that never came (a dropped connection, Ctrl-C, a signal) is looked
for by that token (DescribeInstances filter `client-token`) before anything is concluded: by this step when the
call failed, and by provision's rollback (the ledger keeps the token until the instances are recorded).

--spot --on-demand-fallback: when spot capacity is gone in every zone tried, the same launch (subnet, placement
group, image, tags, deadline, user data) is sent as on-demand, zone by zone in the same order. Only capacity
errors (aws.CAPACITY_CODES, SpotMaxPriceTooLow among them: with no max price set, on-demand costs no more than
spot then) fall back; a quota (MaxSpotInstanceCountExceeded is one) never does: more capacity bought at another
price is not the answer to a limit the user set or can raise."""
from __future__ import annotations

import datetime as dt
import uuid
from typing import Callable, List, Optional, Sequence

from mxlaunch.errors import CommandError

from mxlaunch.infra.cloud import catalog, wait
from mxlaunch.infra.cloud.aws import (CONSISTENCY, JUST_CREATED_DENIED, NOT_YET_CODES, SUBNET_FULL, Aws, AwsError,
                                      CapacityUnavailable, QuotaExceeded)
from mxlaunch.infra.cloud.prelaunch import Image
from mxlaunch.infra.cloud.record import Instance, Ledger, find_instances, tag_spec
from mxlaunch.infra.cloud.spec import DEADLINE_TAG, ClusterSpec, creation_tags, deadline_text
from mxlaunch.infra.cloud.userdata import render_user_data

RUNNING_TIMEOUT = 900.0
INTERVAL = 5.0
# RunInstances makes one attempt (aws.ONCE_CONFIG): what is transient is sent again with the same ClientToken,
# with the consistency backoff (a key pair, group or placement group created seconds ago may not be visible yet).
LAUNCH_RETRY = wait.Backoff(frozenset(NOT_YET_CODES | {None, "RequestLimitExceeded", "InternalError", "Unavailable",
                                                      "ServiceUnavailable", "HTTP500", "HTTP502", "HTTP503",
                                                      "HTTP504"}), total=CONSISTENCY.total)
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


def launch(aws: Aws, spec: ClusterSpec, ledger: Ledger, echo: Callable[[str], None], subnets: Sequence[dict],
           params: dict, groups: list, spot_fits: bool = True) -> tuple:
    """The new instances, from the first of `subnets` with capacity. `ledger` records them, and the ClientToken
    of a RunInstances under way. `spot_fits` False: the spot quota cannot hold them (prelaunch.check_quota), so
    with --on-demand-fallback the launch is on-demand at once."""
    count = params["MinCount"]
    zones = _Zones(aws, ledger, echo, list(subnets) or [NO_SUBNET], groups, f"{count} x {spec.instance_type}")
    fallback = spec.spot and spec.on_demand_fallback
    if fallback and not spot_fits:
        return _on_demand(spec, echo, zones, params, "the spot quota cannot hold them")
    try:
        new, az = zones.first(params, "")
    except _Gone as gone:
        if not fallback:
            raise CapacityUnavailable(
                f"no capacity for {count} x {spec.instance_type}{' (spot)' if spec.spot else ''} in any zone of "
                f"{aws.region} (tried {gone.tried}); try later, another --region, fewer instances or another "
                f"--instance-type", gone.code) from gone
        return _on_demand(spec, echo, zones, params, f"spot capacity gone in {gone.tried}")
    echo(f"launched {len(new)} x {spec.instance_type} in {az}: {' '.join(i.id for i in new)}")
    return new


def _on_demand(spec: ClusterSpec, echo: Callable[[str], None], zones: "_Zones", params: dict, spot_why: str) -> tuple:
    """The spot launch sent as on-demand zone by zone; `spot_why`: why spot is given up (where, AWS's codes)."""
    on_demand = {k: v for k, v in params.items() if k != "InstanceMarketOptions"}
    try:
        new, az = zones.first(on_demand, "on-demand ")
    except _Gone as gone:
        raise CapacityUnavailable(
            f"no capacity for {zones.what}: {spot_why}, on-demand too in {gone.tried} (--on-demand-fallback); "
            f"try later, another --region, fewer instances or another --instance-type", gone.code) from gone
    except QuotaExceeded as exc:
        raise QuotaExceeded(f"{spot_why}, and the on-demand fallback hit a quota: {exc.format_message()}",
                            exc.code) from exc
    echo(f"{spot_why}; {len(new)} on-demand instance(s) launched instead in {az}: "
         f"{' '.join(i.id for i in new)}; they bill at the on-demand price, "
         f"{catalog.price_text(spec.itype, len(new))}")
    return new


class _Gone(Exception):
    """No zone tried could start the instances: `zones` [(zone, AWS's code)] in order."""

    def __init__(self, zones: List[tuple]):
        super().__init__(zones[-1][1] if zones else None)
        self.zones = zones
        self.code = zones[-1][1] if zones else None

    @property
    def tried(self) -> str:
        """`a, b (Code)` when every zone said the same, else `a (Code1), b (Code2)`."""
        codes = {code for _, code in self.zones}
        if len(codes) == 1:
            return f"{', '.join(az for az, _ in self.zones)} ({self.code})"
        return ", ".join(f"{az} ({code})" for az, code in self.zones)


class _Zones:
    """The zones one launch may use, in order."""

    def __init__(self, aws: Aws, ledger: Ledger, echo: Callable[[str], None], subnets: list, groups: list, what: str):
        self.aws, self.ledger, self.echo = aws, ledger, echo
        self.subnets, self.groups, self.what = subnets, groups, what

    def first(self, params: dict, market: str) -> tuple:
        """(instances, zone) from the first subnet with capacity, else _Gone."""
        tried = []
        for n, subnet in enumerate(self.subnets):
            az, subnet_id = subnet["AvailabilityZone"], subnet["SubnetId"]
            try:
                return _run(self.aws, self.ledger, self.echo, params, subnet_id, self.groups), az
            except CapacityUnavailable as exc:
                tried.append((az, exc.code))
            code = tried[-1][1]
            why = (f"no free address for {self.what} in {az}'s subnet" if code == SUBNET_FULL
                   else f"no {market}capacity for {self.what} in {az}")
            self.echo(f"{why} ({code}){'' if n == len(self.subnets) - 1 else '; trying the next zone'}")
        raise _Gone(tried)


def _run(aws: Aws, ledger: Ledger, echo: Callable[[str], None], params: dict, subnet_id: Optional[str],
         groups: list) -> tuple:
    """One RunInstances in `subnet_id` (transient errors sent again with the same ClientToken, so that AWS starts
    the instances once); the instances it started, written to the ledger. A failure other than a refusal of
    capacity is not believed before the token was looked for: the call may have started them all the same."""
    # A public address whatever the subnet's MapPublicIpOnLaunch says (some organisations turn it off).
    nic = {"DeviceIndex": 0, "SubnetId": subnet_id, "Groups": groups, "AssociatePublicIpAddress": True,
           "DeleteOnTermination": True}
    token = uuid.uuid4().hex
    rules = [LAUNCH_RETRY] + ([JUST_CREATED_DENIED] if ledger.security_group or ledger.key_name or
                              ledger.placement_group else [])
    ledger.launching.append(token)
    try:
        resp = wait.retry(lambda: aws.call("ec2", "run_instances", once=True, ClientToken=token,
                                           NetworkInterfaces=[nic], **params), *rules)
        new = tuple(Instance.from_api(d) for d in resp["Instances"])
    except CapacityUnavailable:
        ledger.launching.remove(token)  # refused: nothing started
        raise
    except AwsError as exc:
        new = lookup(aws, token)
        if not new:
            ledger.launching.remove(token)
            raise
        echo(f"RunInstances failed ({exc.code}) but started {len(new)} instance(s): found by its ClientToken")
    ledger.instances.extend(new)
    ledger.launching.remove(token)
    return new


def by_token(aws: Aws, token: str) -> tuple:
    """The instances one RunInstances started, found by its ClientToken
    (https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_DescribeInstances.html, filter `client-token`)."""
    found = []
    for reservation in aws.paginate("ec2", "describe_instances", "Reservations",
                                    Filters=[{"Name": "client-token", "Values": [token]}]):
        found.extend(Instance.from_api(d) for d in reservation.get("Instances", []))
    return tuple(found)


def lookup(aws: Aws, token: str) -> tuple:
    """by_token, or nothing when the lookup itself fails (the call's own error is the one to report)."""
    if aws.dry_run:
        return ()
    try:
        return by_token(aws, token)
    except CommandError:
        return ()


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
