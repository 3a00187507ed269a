"""What real AWS does and moto does not (issue 10: ordering, failure, cleanup): each test shows one behaviour
with moto in-process plus a botocore event hook that answers with the real error code or response shape.
The server tests (a separate process, signals) are in test_cluster_semantics_server.py."""
from __future__ import annotations

import base64
import datetime as dt
import zlib

import botocore.awsrequest
import pytest

from aws_fixtures import AMI, CIDR, FailCalls, launch, nothing_tagged, plain_client, tagged_everything, up_args
from mxlaunch.exits import Exit
from testkit.aws import HttpStub

pytestmark = [pytest.mark.aws, pytest.mark.timeout(60)]
CREATES = ("CreateKeyPair", "CreateSecurityGroup", "CreatePlacementGroup", "CreateFileSystem", "CreateMountTarget",
           "RunInstances")


def hook_name(client, kind, op):
    return f"{kind}.{client.meta.service_model.service_id.hyphenize()}.{op}"


class Calls:
    """Every API call of every client, in order: (operation, params)."""

    def __init__(self):
        self.seen = []

    def install(self, client):
        client.meta.events.register("before-parameter-build", self._record)

    def _record(self, event_name, params, **_):
        self.seen.append((event_name.split(".", 2)[2], dict(params)))

    def ops(self):
        return [op for op, _ in self.seen]

    def params(self, op):
        return [p for o, p in self.seen if o == op]


class Answer:
    """Answer calls of `op` whose params satisfy `match` with `bodies`, one per call (the last one repeats when
    `forever`), before they reach moto; other calls pass through."""

    def __init__(self, service, op, bodies, match=lambda params: True, forever=False):
        self.service, self.op, self.bodies, self.match, self.forever = service, op, list(bodies), match, forever
        self.answered = 0

    def install(self, client):
        if client.meta.service_model.service_name == self.service:
            client.meta.events.register(hook_name(client, "before-parameter-build", self.op), self._stash)
            client.meta.events.register(hook_name(client, "before-call", self.op), self._call)

    @staticmethod
    def _stash(params, context, **_):
        context["answer_params"] = dict(params)

    def _call(self, context, **_):
        if not self.bodies or not self.match(context["answer_params"]):
            return None
        body = self.bodies[0] if self.forever and len(self.bodies) == 1 else self.bodies.pop(0)
        self.answered += 1
        return HttpStub(200), {**body, "ResponseMetadata": {"HTTPStatusCode": 200}}


class HttpAnswer:
    """An HTTP-level answer (botocore `before-send`: inside botocore's retry loop, unlike before-call), for the
    sends of `op` that satisfy `match`. The request body is swapped for a harmless read first, so that moto,
    which also sees every send, does not perform what AWS refused."""

    def __init__(self, service, op, status, body, content_type="text/xml", match=lambda body: True):
        self.service, self.op, self.status, self.body, self.type, self.match = (service, op, status, body,
                                                                               content_type, match)
        self.sends = []

    def install(self, client):
        if client.meta.service_model.service_name == self.service:
            client.meta.events.register(hook_name(client, "before-send", self.op), self._send)

    def _send(self, request, **_):
        body = request.body.decode() if isinstance(request.body, bytes) else str(request.body or "")
        if not self.match(body):
            return None
        self.sends.append(body)
        if self.service == "ec2":
            request.body = b"Action=DescribeRegions&Version=2016-11-15"
        response = botocore.awsrequest.AWSResponse(request.url, self.status, {"Content-Type": self.type}, None)
        response._content = self.body
        return response


@pytest.fixture
def no_backoff(monkeypatch):
    """botocore's retry backoff sleeps for real: instant here, the attempts still counted."""
    import botocore.endpoint
    monkeypatch.setattr(botocore.endpoint.time, "sleep", lambda seconds: None)


@pytest.fixture
def ticking(monkeypatch):
    """Every read of the waits' clock is 20 s later: a bounded wait ends after a few polls."""
    import mxlaunch.infra.cloud.wait
    ticks = iter(range(0, 10 ** 7, 20))
    monkeypatch.setattr(mxlaunch.infra.cloud.wait, "CLOCK", lambda: next(ticks))


# -- 1. IPv6 --ssh-cidr ---------------------------------------------------------------------------------------
def test_ipv6_ssh_cidr_is_refused_with_one_line_before_any_call(moto_aws, hooks):
    calls = Calls()
    hooks.append(calls)
    a = up_args("six", 1)
    a[a.index(CIDR)] = "2001:db8::/32"
    r = launch(*a)
    assert r.code == Exit.USAGE
    assert r.err.strip().splitlines() == [
        "launch: error: --ssh-cidr 2001:db8::/32 is IPv6, but the cluster's instances have IPv4 addresses only "
        "(default VPC): pass your IPv4 address as A.B.C.D/32 (curl -4 https://checkip.amazonaws.com)"]
    assert not [op for op in calls.ops() if op.startswith(("Create", "Run", "Authorize"))]
    assert nothing_tagged("six")


# -- 2. down waits until the names are free -----------------------------------------------------------------
def deleting_fs(fs_id="fs-0", times=2, forever=False):
    body = {"FileSystems": [{"OwnerId": "123456789012", "CreationToken": "x", "FileSystemId": fs_id,
                             "CreationTime": dt.datetime(2025, 1, 1), "LifeCycleState": "deleting",
                             "NumberOfMountTargets": 0, "SizeInBytes": {"Value": 0},
                             "PerformanceMode": "generalPurpose", "Tags": []}]}
    return Answer("efs", "DescribeFileSystems", [body] * (1 if forever else times),
                  match=lambda p: "FileSystemId" in p, forever=forever)


def deleting_pg(name, times=2):
    body = {"PlacementGroups": [{"GroupName": name, "State": "deleting", "Strategy": "cluster"}]}
    return Answer("ec2", "DescribePlacementGroups", [body] * times, match=lambda p: "GroupNames" in p)


def test_down_waits_until_the_file_system_and_placement_group_are_gone_then_up_again_works(moto_aws, hooks):
    assert launch(*up_args("again", 2)).code == 0
    fs, pg = deleting_fs(), deleting_pg("launch-again")
    hooks[:0] = [fs, pg]  # before moto's placement-group stand-in
    r = launch("cluster", "down", "again", "--yes")
    assert r.code == 0, r.err
    assert fs.answered == 2 and pg.answered == 2  # AWS said `deleting` twice each: down waited it out
    assert "waiting for EFS fs-" in r.err and "to be deleted (deleting)" in r.err
    assert "waiting for placement group launch-again to be deleted (deleting)" in r.err
    assert nothing_tagged("again") and not moto_aws.groups
    assert launch(*up_args("again", 2)).code == 0  # the creation token and the group name are free again
    assert launch("cluster", "down", "again", "--yes").code == 0


def test_down_waiting_for_a_file_system_is_bounded(moto_aws, hooks, ticking):
    assert launch(*up_args("stuck", 1, "--no-placement-group")).code == 0
    hooks.append(deleting_fs(forever=True))
    r = launch("cluster", "down", "stuck", "--yes")
    assert r.code == Exit.WAIT_TIMEOUT
    assert "waiting for EFS fs-" in r.err.strip().splitlines()[-1]


# -- 4. a second Ctrl-C during the rollback -----------------------------------------------------------------
def test_second_ctrl_c_during_rollback_says_what_is_left_and_how_to_remove_it(moto_aws, hooks):
    class Interrupt:
        def __init__(self, op, service):
            self.op, self.service = op, service

        def install(self, client):
            if client.meta.service_model.service_name == self.service:
                client.meta.events.register(hook_name(client, "before-call", self.op), self.boom)

        def boom(self, **_):
            raise KeyboardInterrupt
    hooks.extend([Interrupt("RunInstances", "ec2"), Interrupt("DeleteFileSystem", "efs")])
    r = launch(*up_args("twice", 2))
    assert r.code == Exit.INTERRUPTED
    (line,) = [x for x in r.err.splitlines() if x.startswith("rollback interrupted")]
    assert "left: EFS file system fs-" in line and "placement group launch-twice" in line
    assert "security group sg-" in line and "key pair launch-twice" in line
    assert line.endswith("`launch cluster down twice` removes it")
    hooks.clear()
    hooks.append(moto_aws)
    assert launch("cluster", "down", "twice", "--yes").code == 0
    assert nothing_tagged("twice") and not moto_aws.groups


# -- 5, 8. zones and quotas come before anything is created; the mount target after the launch ---------------
def test_a_type_offered_nowhere_in_the_region_is_refused_before_anything_is_created(moto_aws, hooks):
    calls = Calls()
    hooks.append(calls)
    a = up_args("nowhere", 1, "--region", "eu-west-1")
    a[a.index("g5.12xlarge")] = "g6.xlarge"  # moto: offered in no zone of eu-west-1
    r = launch(*a)
    assert r.code == Exit.USAGE
    assert r.err.strip().splitlines()[-1] == ("launch: error: g6.xlarge is not offered in any zone of eu-west-1: try "
                                              "another --region or --instance-type (`launch cluster types`)")
    assert not set(calls.ops()) & set(CREATES)
    assert not any(tagged_everything("nowhere", region="eu-west-1").values())


@pytest.mark.parametrize("image_name, refused", [
    ("Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 24.04) 20250101", "Ubuntu 24.04, whose python3 is 3.12"),
    ("ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-server-20240423", "Ubuntu 24.04, whose python3 is 3.12"),
    ("ubuntu/images/hvm-ssd/ubuntu-plucky-26.04-amd64-server", "Ubuntu 26.04, whose python3 is 3.12 or later"),
    ("Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 22.04) 20250101", None),
    ("my own image", None),  # names no release: its user data refuses a python3 too new, naming the step
])
def test_an_image_whose_python_cannot_run_the_stack_is_refused_before_anything_is_created(moto_aws, hooks,
                                                                                          image_name, refused):
    calls = Calls()
    hooks.append(calls)
    ami = plain_client("ec2").register_image(Name=image_name, Description="x86_64",
                                             RootDeviceName="/dev/sda1")["ImageId"]
    name = f"py{zlib.crc32(image_name.encode()) % 10 ** 6}"
    args = up_args(name, 1)
    args[args.index(AMI)] = ami
    r = launch(*args)
    if refused is None:
        assert r.code == 0, r.err
        assert launch("cluster", "down", name, "--yes").code == 0
        return
    (line,) = r.err.strip().splitlines()[-1:]
    assert r.code == Exit.USAGE and refused in line, r.err
    assert "numpy 1.23.5" in line and "leave out --ami (the Ubuntu 22.04 Deep Learning AMI" in line
    assert not set(calls.ops()) & set(CREATES) and nothing_tagged(name)


def test_instances_go_only_to_zones_that_offer_the_type(moto_aws, hooks):
    a = up_args("p4", 1, "--region", "eu-west-1")
    a[a.index("g5.12xlarge")] = "p4d.24xlarge"  # moto: offered in eu-west-1c only
    r = launch(*a)
    assert r.code == 0, r.err
    held = tagged_everything("p4", region="eu-west-1")
    assert [i["Placement"]["AvailabilityZone"] for i in held["instances"]] == ["eu-west-1c"]
    assert launch("cluster", "down", "p4", "--yes").code == 0


def quota(code, name, value):
    return {"Quota": {"ServiceCode": "ec2", "ServiceName": "Amazon Elastic Compute Cloud (Amazon EC2)",
                      "QuotaArn": f"arn:aws:servicequotas:us-east-1:123456789012:ec2/{code}", "QuotaCode": code,
                      "QuotaName": name, "Value": value, "Unit": "None", "Adjustable": True, "GlobalQuota": False}}


@pytest.mark.parametrize("spot, code, name", [
    (False, "L-DB2E81BA", "Running On-Demand G and VT instances"),
    (True, "L-3819A6DF", "All G and VT Spot Instance Requests"),
])
def test_a_vcpu_quota_too_small_is_refused_before_anything_is_created(moto_aws, hooks, spot, code, name):
    calls = Calls()
    answer = Answer("service-quotas", "GetServiceQuota", [quota(code, name, 0.0)],
                    match=lambda p: p.get("QuotaCode") == code)
    hooks.extend([calls, answer])
    r = launch(*up_args("q0", 2, *(["--spot"] if spot else [])))
    assert r.code == Exit.AWS_QUOTA and answer.answered == 1
    last = r.err.strip().splitlines()[-1]
    assert f"2 x g5.12xlarge need 96 vCPUs but your quota '{name}' ({code}) in us-east-1 is 0" in last
    assert f"https://us-east-1.console.aws.amazon.com/servicequotas/home/services/ec2/quotas/{code}" in last
    assert not set(calls.ops()) & set(CREATES)
    assert nothing_tagged("q0")


def test_a_quota_that_fits_and_an_unreadable_quota_let_up_go_on(moto_aws, hooks):
    hooks.append(Answer("service-quotas", "GetServiceQuota", [quota("L-DB2E81BA", "x", 96.0)]))
    assert launch(*up_args("q96", 2)).code == 0
    hooks.append(FailCalls("GetServiceQuota", times=1, code="AccessDeniedException", service="service-quotas"))
    r = launch(*up_args("qdenied", 1))
    assert r.code == 0 and "cannot read the quota 'Running On-Demand G and VT instances'" in r.err
    for name in ("q96", "qdenied"):
        assert launch("cluster", "down", name, "--yes").code == 0


def mount_target(state):
    return {"MountTargets": [{"MountTargetId": "fsmt-0", "FileSystemId": "fs-0", "SubnetId": "subnet-0",
                              "LifeCycleState": state, "OwnerId": "123456789012"}]}


class CreatingMountTargets:
    """AWS answers CreateMountTarget with `creating` (moto: `available` at once)."""

    def install(self, client):
        if client.meta.service_model.service_name == "efs":
            client.meta.events.register("after-call.efs.CreateMountTarget",
                                        lambda parsed, **_: parsed.__setitem__("LifeCycleState", "creating"))


def test_the_mount_target_is_made_after_the_launch_and_waited_for_while_the_instances_boot(moto_aws, hooks):
    calls = Calls()
    creating = Answer("efs", "DescribeMountTargets", [mount_target("creating")] * 2,
                      match=lambda p: "MountTargetId" in p)
    hooks.extend([calls, creating, CreatingMountTargets()])
    r = launch(*up_args("mt", 2))
    assert r.code == 0, r.err
    ops = calls.ops()
    run, create = ops.index("RunInstances"), ops.index("CreateMountTarget")
    assert run < create and ops.count("CreateMountTarget") == 1
    polls = [i for i, (op, p) in enumerate(calls.seen) if op == "DescribeMountTargets" and "MountTargetId" in p]
    assert len(polls) == 3 and all(create < i for i in polls)  # creating, creating, available
    # the instances' user data waits for the mount (the mount target is not there when they start)
    (params,) = calls.params("RunInstances")
    user_data = base64.b64decode(params["UserData"]).decode()
    assert "for attempt in $(seq 1 60)" in user_data and "mount -t nfs4" in user_data
    assert launch("cluster", "down", "mt", "--yes").code == 0


def test_a_mount_target_that_fails_after_the_launch_keeps_the_cluster_and_says_how_to_go_on(moto_aws, hooks):
    hooks.extend([CreatingMountTargets(), Answer("efs", "DescribeMountTargets", [mount_target("error")],
                                                 match=lambda p: "MountTargetId" in p)])
    r = launch(*up_args("mterr", 2))
    assert r.code == Exit.FAILED and "EFS mount target" in r.err.strip().splitlines()[-1]
    held = tagged_everything("mterr")
    assert len(held["instances"]) == 2 and len(held["file_systems"]) == 1  # kept: they bill already
    (kept,) = [line for line in r.err.splitlines() if line.startswith("up failed after launching")]
    assert "`launch cluster up mterr --instance-type g5.12xlarge --count 2 --ssh-cidr 203.0.113.7/32` finishes it" \
        in kept and "`launch cluster down mterr` removes it" in kept
    assert "removing what this run created" not in r.err
    from mxlaunch.infra.cloud import local_state as state
    meta = state.read_meta("mterr")  # recorded before the mount target: ssh, repair and `up` again can use it
    assert meta.count == 2 and meta.key_file == str(state.key_path("mterr")) and state.key_path("mterr").exists()
    assert launch("cluster", "down", "mterr", "--yes").code == 0 and nothing_tagged("mterr")


@pytest.mark.parametrize("spot_quota, on_demand_quota, outcome", [
    (0.0, 0.0, "refused"), (0.0, 96.0, "on-demand at once"), (96.0, 0.0, "spot")])
def test_with_the_fallback_both_quotas_are_read_and_only_both_too_small_refuse(moto_aws, hooks, spot_quota,
                                                                            on_demand_quota, outcome):
    calls = Calls()
    values = {"L-3819A6DF": spot_quota, "L-DB2E81BA": on_demand_quota}
    hooks.extend([calls, *(Answer("service-quotas", "GetServiceQuota", [quota(code, code, value)],
                                  match=lambda p, code=code: p.get("QuotaCode") == code)
                           for code, value in values.items())])
    name = f"qb{int(spot_quota)}{int(on_demand_quota)}"
    r = launch(*up_args(name, 2, "--spot", "--on-demand-fallback"))
    assert sorted(p["QuotaCode"] for p in calls.params("GetServiceQuota")) == ["L-3819A6DF", "L-DB2E81BA"]
    runs = calls.params("RunInstances")
    if outcome == "refused":
        last = r.err.strip().splitlines()[-1]
        assert r.code == Exit.AWS_QUOTA and "L-3819A6DF" in last and "L-DB2E81BA" in last, r.err
        assert not set(calls.ops()) & set(CREATES) and nothing_tagged(name)
        return
    assert r.code == 0, r.err
    (warning,) = [line for line in r.err.splitlines() if line.startswith("warning: your quota")]
    if outcome == "on-demand at once":  # spot would be refused for the quota: no spot RunInstances at all
        assert "(L-3819A6DF) is 0 vCPUs, 96 needed: launching on-demand instead" in warning
        assert len(runs) == 1 and "InstanceMarketOptions" not in runs[0]
        assert "the spot quota cannot hold them; 2 on-demand instance(s) launched instead" in r.err
    else:
        assert "(L-DB2E81BA) is 0 vCPUs, 96 needed: if spot capacity is gone, the on-demand fallback" in warning
        assert len(runs) == 1 and runs[0]["InstanceMarketOptions"]["MarketType"] == "spot"
    assert launch("cluster", "down", name, "--yes").code == 0


# -- 6. capacity errors: no retries, the next zone at once -----------------------------------------------
CAPACITY_XML = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error><Code>InsufficientInstanceCapacity'
                b'</Code><Message>We currently do not have sufficient g5.12xlarge capacity in the Availability Zone you '
                b'requested (us-east-1a). Our system will be working on provisioning additional capacity.</Message>'
                b'</Error></Errors><RequestID>5f3b0b8e-0000-4000-8000-000000000000</RequestID></Response>')


def test_a_capacity_error_http_500_is_sent_once_then_the_next_zone(moto_aws, hooks, no_backoff):
    zone_a = sorted(plain_client("ec2").describe_subnets(Filters=[{"Name": "default-for-az", "Values": ["true"]}])[
        "Subnets"], key=lambda s: s["AvailabilityZone"])[0]["SubnetId"]
    refuse = HttpAnswer("ec2", "RunInstances", 500, CAPACITY_XML, match=lambda body: zone_a in body)
    hooks.append(refuse)
    r = launch(*up_args("cap500", 2))
    assert r.code == 0, r.err
    assert len(refuse.sends) == 1  # botocore's standard mode would have sent it 6 times
    assert "no capacity for 2 x g5.12xlarge in us-east-1a (InsufficientInstanceCapacity); trying the next zone" in r.err
    held = tagged_everything("cap500")
    assert {i["Placement"]["AvailabilityZone"] for i in held["instances"]} == {"us-east-1b"}
    assert [m["SubnetId"] for m in held["mount_targets"]] == [held["instances"][0]["SubnetId"]]
    assert launch("cluster", "down", "cap500", "--yes").code == 0


# -- 7. eventual consistency, both directions ---------------------------------------------------------------
@pytest.mark.parametrize("op, code, service", [
    ("AuthorizeSecurityGroupIngress", "InvalidGroup.NotFound", "ec2"),
    ("RunInstances", "InvalidPlacementGroup.Unknown", "ec2"),
    ("RunInstances", "InvalidKeyPair.NotFound", "ec2"),
    ("CreateMountTarget", "FileSystemNotFound", "efs"),
])
def test_not_yet_visible_after_a_create_is_retried(moto_aws, hooks, op, code, service):
    fail = FailCalls(op, times=2, code=code, service=service)
    hooks.append(fail)
    name = f"ec{len(op) % 7}{len(code) % 9}"
    r = launch(*up_args(name, 2))
    assert r.code == 0, r.err
    assert len(fail.refused) == 2
    assert launch("cluster", "down", name, "--yes").code == 0


@pytest.mark.parametrize("op, code, service", [
    ("DeleteSecurityGroup", "InvalidGroup.NotFound", "ec2"),
    ("DeleteFileSystem", "FileSystemNotFound", "efs"),
    ("DeleteKeyPair", "InvalidKeyPair.NotFound", "ec2"),
])
def test_rollback_retries_not_yet_visible_instead_of_leaving_it_behind(moto_aws, hooks, op, code, service):
    hooks.extend([FailCalls("RunInstances", times=99), FailCalls(op, times=2, code=code, service=service)])
    r = launch(*up_args("rbnf", 2))
    assert r.code == Exit.AWS_CAPACITY
    assert nothing_tagged("rbnf") and not moto_aws.groups


def test_not_yet_visible_is_retried_only_so_long(moto_aws, hooks, monkeypatch):
    import mxlaunch.infra.cloud.wait
    waits = []
    monkeypatch.setattr(mxlaunch.infra.cloud.wait, "SLEEP", waits.append)
    fail = FailCalls("AuthorizeSecurityGroupIngress", times=10 ** 6, code="InvalidGroup.NotFound")
    hooks.append(fail)
    r = launch(*up_args("never", 1))
    assert r.code == Exit.AWS_ERROR and "InvalidGroup.NotFound" in r.err.strip().splitlines()[-1]
    # 2 s doubling to 30 s, about 5 minutes in all (AWS's advice), then the error
    assert len(fail.refused) == 14 and waits[:14 - 1] == [2, 4, 8, 16] + [30] * 9
    hooks.remove(fail)
    assert nothing_tagged("never")


# -- 11, 12. public address and root volume, asked for explicitly --------------------------------------
def test_public_address_and_root_volume_deletion_are_asked_for_explicitly(moto_aws, hooks):
    calls = Calls()
    hooks.append(calls)
    assert launch(*up_args("nic", 2)).code == 0
    (run,) = calls.params("RunInstances")
    (nic,) = run["NetworkInterfaces"]
    assert nic["AssociatePublicIpAddress"] is True and nic["DeviceIndex"] == 0 and len(nic["Groups"]) == 1
    assert "SubnetId" not in run and "SecurityGroupIds" not in run
    image = plain_client("ec2").describe_images(ImageIds=[AMI])["Images"][0]
    (root,) = run["BlockDeviceMappings"]
    assert root["DeviceName"] == image["RootDeviceName"] and root["Ebs"]["DeleteOnTermination"] is True
    assert all(i.get("PublicIpAddress") for i in tagged_everything("nic")["instances"])
    assert launch("cluster", "down", "nic", "--yes").code == 0


def test_an_image_that_does_not_exist_is_refused_before_anything_is_created(moto_aws):
    r = launch(*[a if a != AMI else "ami-12345678" for a in up_args("noimg", 1)])  # moto has no such image
    assert r.code == Exit.USAGE
    assert r.err.strip().splitlines()[-1] == ("launch: error: image ami-12345678 does not exist in us-east-1 (or is "
                                              "not shared with this account)")
    assert nothing_tagged("noimg")


def test_down_removes_volumes_tagged_for_the_cluster(moto_aws):
    assert launch(*up_args("vol", 1)).code == 0
    ec2 = plain_client("ec2")
    left = ec2.create_volume(AvailabilityZone="us-east-1a", Size=8, TagSpecifications=[
        {"ResourceType": "volume", "Tags": [{"Key": "launch:cluster", "Value": "vol"}]}])["VolumeId"]
    other = ec2.create_volume(AvailabilityZone="us-east-1a", Size=8)["VolumeId"]
    r = launch("cluster", "down", "vol", "--yes")
    assert r.code == 0, r.err
    assert f"removed volume(s): {left}" in r.out
    ids = {v["VolumeId"] for v in ec2.describe_volumes()["Volumes"]}
    assert left not in ids and other in ids
    only = ec2.create_volume(AvailabilityZone="us-east-1a", Size=8, TagSpecifications=[
        {"ResourceType": "volume", "Tags": [{"Key": "launch:cluster", "Value": "vol"}]}])["VolumeId"]
    r = launch("cluster", "down", "vol", "--yes")  # a volume alone is still something of the cluster
    assert r.code == 0 and f"removed volume(s): {only}" in r.out


# -- 13. a cluster that grows keeps its deadline --------------------------------------------------------------
def deadlines(name):
    return sorted({dict((t["Key"], t["Value"]) for t in i.get("Tags", [])).get("launch:deadline")
                   for i in tagged_everything(name)["instances"]}, key=str)


def test_growing_without_max_hours_keeps_the_clusters_deadline(moto_aws):
    assert launch(*up_args("grow", 1, "--max-hours", "2")).code == 0
    (first,) = deadlines("grow")
    assert first
    r = launch(*up_args("grow", 2))
    assert r.code == 0, r.err
    assert deadlines("grow") == [first]  # the new instance carries the same deadline
    ec2 = plain_client("ec2")
    for i in tagged_everything("grow")["instances"]:
        assert ec2.describe_instance_attribute(InstanceId=i["InstanceId"], Attribute="instanceInitiatedShutdownBehavior")[
            "InstanceInitiatedShutdownBehavior"]["Value"] == "terminate"
    from mxlaunch.infra.cloud import local_state as state
    assert state.read_meta("grow").max_hours == 2  # the saved setting is not overwritten
    assert launch("cluster", "down", "grow", "--yes").code == 0


def test_growing_a_cluster_whose_deadline_passed_asks_for_max_hours(moto_aws):
    assert launch(*up_args("late", 1, "--max-hours", "1")).code == 0
    ec2 = plain_client("ec2")
    (i,) = tagged_everything("late")["instances"]
    ec2.create_tags(Resources=[i["InstanceId"]], Tags=[{"Key": "launch:deadline", "Value": "2020-01-01T00:00:00Z"}])
    r = launch(*up_args("late", 2))
    assert r.code == Exit.USAGE
    assert r.err.strip().splitlines()[-1] == ("launch: error: cluster late's --max-hours deadline 2020-01-01T00:00:00Z "
                                              "has passed: pass --max-hours H for the new instances")
    assert len(tagged_everything("late")["instances"]) == 1
    assert launch("cluster", "down", "late", "--yes").code == 0


# -- 16. an HTML page instead of an AWS answer --------------------------------------------------------------
# What a load balancer or proxy sends: HTML, which is no XML (an unclosed <meta>, a <br>).
HTML = (b'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>503 Service Unavailable</title></head>'
        b'<body>Service Unavailable<br></body></html>')


@pytest.mark.parametrize("status", [503, 200])
def test_an_html_page_from_the_endpoint_is_an_aws_error_line(moto_aws, hooks, no_backoff, status):
    hooks.append(HttpAnswer("ec2", "DescribeVpcs", status, HTML, content_type="text/html"))
    r = launch(*up_args("html", 1))
    assert r.code == Exit.AWS_ERROR, r.err
    last = r.err.strip().splitlines()[-1]
    assert last.startswith("launch: error: ec2.DescribeVpcs: ") and "from the AWS endpoint" in last, last
    assert "internal error" not in r.err and "Unknown" not in last
    assert nothing_tagged("html")


def test_a_signal_between_a_create_and_its_record_still_rolls_it_back(moto_aws, hooks):
    """The EFS security group exists (its create call returned, tags and all) but the interrupt lands before
    `up` recorded it: the rollback of a new cluster goes by the tags, so nothing is left."""
    class InterruptAfterCreate:
        def install(self, client):
            if client.meta.service_model.service_name == "ec2":
                client.meta.events.register("after-call.ec2.CreateSecurityGroup", self.boom)

        @staticmethod
        def boom(parsed, **_):
            raise KeyboardInterrupt  # after AWS created it, before the caller saw the answer

    hooks.append(InterruptAfterCreate())
    r = launch(*up_args("mid", 1))
    assert r.code == Exit.INTERRUPTED and "removing what this run created" in r.err
    assert nothing_tagged("mid")
