"""How `up` and `down` behave when AWS answers as it does and moto does not, as exact call sequences with
botocore's Stubber: zone fail-over makes no mount target before a launch succeeded; AWS's eventual-consistency
codes are retried on an exponential schedule (2 s growing to 30 s, about 5 minutes), a denial right after a
create for about 30 s, a missing credential never; a RunInstances whose answer was lost is found by its
ClientToken; TerminateInstances answered InvalidInstanceID.NotFound is sent again for the ids AWS shows and
confirmed with DescribeInstances. The retry clock is `wait.SLEEP`: recorded here, never slept."""
from __future__ import annotations

import datetime as dt

import botocore.exceptions as bce
import pytest
from botocore.stub import ANY, Stubber

from aws_fixtures import AMI, CIDR, REGION
from mxlaunch.exits import Exit
from mxlaunch.infra.cloud import run_instances, spec as specs, teardown, wait
from mxlaunch.infra.cloud.aws import Aws, AwsError, NoCredentials, PermissionDenied
from mxlaunch.infra.cloud.provision import Up
from mxlaunch.infra.cloud.record import ClusterRecord, Instance, Ledger

pytestmark = [pytest.mark.aws, pytest.mark.timeout(60)]

SUBNETS = [{"SubnetId": "subnet-aaaaaaaa", "AvailabilityZone": "us-east-1a", "VpcId": "vpc-1"},
           {"SubnetId": "subnet-bbbbbbbb", "AvailabilityZone": "us-east-1b", "VpcId": "vpc-1"}]
CONSISTENCY = [2, 4, 8, 16] + [30] * 9  # 300 s in all
LAUNCH = {"ImageId": AMI, "InstanceType": "g5.12xlarge"}  # RunInstances' params but the counts and the zone's
DENIED = [2, 4, 8, 8, 8]  # 30 s


@pytest.fixture
def sleeps(aws_env, monkeypatch):
    """Every wait of the retries and polls, in order (none is slept)."""
    seen = []
    monkeypatch.setattr(wait, "SLEEP", seen.append)
    return seen


class Order:
    """The order of the calls of every client it is installed on (botocore `before-parameter-build`)."""

    def __init__(self):
        self.ops = []

    def install(self, client):
        client.meta.events.register("before-parameter-build", lambda event_name, **_: self.ops.append(
            event_name.split(".")[2]))


def stubbed(aws: Aws, service: str, order: Order = None) -> Stubber:
    client = aws.client(service)
    if order:
        order.install(client)
    stub = Stubber(client)
    stub.activate()
    return stub


def instance(n: int, state: str = "pending", subnet: str = "subnet-bbbbbbbb", zone: str = "us-east-1b") -> dict:
    return {"InstanceId": f"i-{n:08x}", "InstanceType": "g5.12xlarge", "State": {"Name": state},
            "AmiLaunchIndex": n, "SubnetId": subnet, "Placement": {"AvailabilityZone": zone},
            "PrivateIpAddress": f"172.31.16.{n + 5}", "LaunchTime": dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc)}


def reservations(*instances: dict) -> dict:
    return {"Reservations": [{"Instances": list(instances)}] if instances else []}


def capacity_error(stub: Stubber, code: str = "InsufficientInstanceCapacity") -> None:
    stub.add_client_error("run_instances", service_error_code=code, service_message="no capacity",
                          http_status_code=400)


def preflight(ec2: Stubber, quotas: Stubber) -> None:
    ec2.add_response("describe_vpcs", {"Vpcs": [{"VpcId": "vpc-1"}]})
    ec2.add_response("describe_subnets", {"Subnets": SUBNETS})
    ec2.add_response("describe_images", {"Images": [{"ImageId": AMI, "Architecture": "x86_64",
                                                     "Name": "Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu "
                                                             "22.04) 20250101", "RootDeviceName": "/dev/sda1"}]})
    ec2.add_response("describe_instance_type_offerings", {"InstanceTypeOfferings": [
        {"InstanceType": "g5.12xlarge", "LocationType": "availability-zone", "Location": s["AvailabilityZone"]}
        for s in SUBNETS]}, {"LocationType": "availability-zone", "Filters": ANY})
    ec2.add_response("describe_instance_types", {"InstanceTypes": [
        {"InstanceType": "g5.12xlarge", "VCpuInfo": {"DefaultVCpus": 48}}]}, {"InstanceTypes": ["g5.12xlarge"]})
    quotas.add_response("get_service_quota", {"Quota": {"QuotaCode": "L-DB2E81BA", "Value": 1536.0}},
                        {"ServiceCode": "ec2", "QuotaCode": "L-DB2E81BA"})


# -- zone fail-over: RunInstances first, the mount target after the launch --------------------------------------
def test_fail_over_launches_first_and_makes_the_mount_target_only_where_the_instances_landed(sleeps):
    """No capacity in the first zone costs one RunInstances and nothing else; the zone that launched gets its
    mount target right after, while the instances boot. (Before: a mount target created and waited `available`
    in every zone tried, minutes each.)"""
    aws, order = Aws(region=REGION, echo=lambda line: None), Order()
    ec2, efs, launches = stubbed(aws, "ec2", order), stubbed(aws, "efs", order), stubbed(aws, "ec2:once", order)
    spec = specs.build("fo", "g5.12xlarge", 2, CIDR, ami=AMI, key_name="mine", wait="none")
    preflight(ec2, stubbed(aws, "service-quotas"))
    ec2.add_response("describe_key_pairs", {"KeyPairs": [{"KeyName": "mine"}]}, {"KeyNames": ["mine"]})
    ec2.add_response("create_security_group", {"GroupId": "sg-1"}, {
        "GroupName": "launch-fo", "VpcId": "vpc-1", "Description": ANY, "TagSpecifications": ANY})
    ec2.add_response("authorize_security_group_ingress", {}, {"GroupId": "sg-1", "IpPermissions": ANY})
    ec2.add_response("create_security_group", {"GroupId": "sg-0000000e"}, {
        "GroupName": "launch-fo-efs", "VpcId": "vpc-1", "Description": ANY, "TagSpecifications": ANY})
    ec2.add_response("authorize_security_group_ingress", {}, {"GroupId": "sg-0000000e", "IpPermissions": ANY})
    ec2.add_response("revoke_security_group_egress", {}, {"GroupId": "sg-0000000e", "IpPermissions": ANY})
    ec2.add_response("create_placement_group", {}, {"GroupName": "launch-fo", "Strategy": "cluster",
                                                    "TagSpecifications": ANY})
    efs.add_response("create_file_system", {
        "OwnerId": "1", "CreationToken": "launch-cluster-fo", "FileSystemId": "fs-1", "CreationTime": dt.datetime.now(),
        "LifeCycleState": "available", "NumberOfMountTargets": 0, "SizeInBytes": {"Value": 0},
        "PerformanceMode": "generalPurpose", "Tags": []}, {"CreationToken": "launch-cluster-fo", "Encrypted": True,
                                                           "PerformanceMode": "generalPurpose",
                                                           "ThroughputMode": "elastic", "Tags": ANY})
    capacity_error(launches)  # us-east-1a
    launches.add_response("run_instances", {"Instances": [instance(0), instance(1)]},
                          {"ImageId": AMI, "InstanceType": "g5.12xlarge", "MinCount": 2, "MaxCount": 2,
                           "KeyName": "mine", "UserData": ANY, "MetadataOptions": ANY, "TagSpecifications": ANY,
                           "BlockDeviceMappings": ANY, "Placement": {"GroupName": "launch-fo"}, "ClientToken": ANY,
                           "NetworkInterfaces": [{"DeviceIndex": 0, "SubnetId": "subnet-bbbbbbbb", "Groups": ["sg-1"],
                                                  "AssociatePublicIpAddress": True, "DeleteOnTermination": True}]})
    efs.add_response("create_mount_target", {"MountTargetId": "fsmt-0000000b", "FileSystemId": "fs-1",
                                             "SubnetId": "subnet-bbbbbbbb", "LifeCycleState": "creating"},
                     {"FileSystemId": "fs-1", "SubnetId": "subnet-bbbbbbbb", "SecurityGroups": ["sg-0000000e"]})
    efs.add_response("describe_mount_targets", {"MountTargets": [
        {"MountTargetId": "fsmt-0000000b", "FileSystemId": "fs-1", "SubnetId": "subnet-bbbbbbbb",
         "LifeCycleState": "available"}]}, {"MountTargetId": "fsmt-0000000b"})
    lines = []
    record = Up(aws, spec, lines.append).run(ClusterRecord(name="fo", region=REGION))
    for stub in (ec2, efs, launches):
        stub.assert_no_pending_responses()
    launched = order.ops.index("RunInstances", order.ops.index("RunInstances") + 1)  # the second: us-east-1b
    assert order.ops.count("CreateMountTarget") == 1 and order.ops.index("CreateMountTarget") > launched
    assert "DeleteMountTarget" not in order.ops  # nothing was made in the full zone, so nothing to undo there
    assert record.mount_targets == (("fsmt-0000000b", "subnet-bbbbbbbb"),)
    assert [i.az for i in record.instances] == ["us-east-1b"] * 2
    assert "no capacity for 2 x g5.12xlarge in us-east-1a (InsufficientInstanceCapacity); trying the next zone" in lines


def test_a_subnet_without_free_addresses_moves_to_the_next_zone_like_capacity(sleeps):
    aws = Aws(region=REGION, echo=lambda line: None)
    launches = stubbed(aws, "ec2:once")
    capacity_error(launches, "InsufficientFreeAddressesInSubnet")
    launches.add_response("run_instances", {"Instances": [instance(0)]})
    lines = []
    spec = specs.build("sf", "g5.12xlarge", 1, CIDR, ami=AMI, wait="none")
    new = run_instances.launch(aws, spec, Ledger(), lines.append, SUBNETS, {**LAUNCH, "MinCount": 1,
                                                                                     "MaxCount": 1}, ["sg-1"])
    launches.assert_no_pending_responses()
    assert [i.id for i in new] == ["i-00000000"]
    assert lines[0] == ("no free address for 1 x g5.12xlarge in us-east-1a's subnet "
                        "(InsufficientFreeAddressesInSubnet); trying the next zone")


# -- retries: the schedule ----------------------------------------------------------------------------------------
def test_the_consistency_backoff_doubles_from_2_s_to_30_s_for_about_5_minutes_then_gives_up(sleeps):
    """AWS asks for exponential backoff up to about five minutes while a new resource is not visible yet."""
    aws = Aws(region=REGION, echo=lambda line: None)
    ec2 = stubbed(aws, "ec2")
    for _ in range(len(CONSISTENCY) + 1):
        ec2.add_client_error("authorize_security_group_ingress", service_error_code="InvalidGroup.NotFound")
    with pytest.raises(AwsError) as err:
        teardown.settle(lambda: aws.call("ec2", "authorize_security_group_ingress", GroupId="sg-1",
                                         IpPermissions=[]))
    ec2.assert_no_pending_responses()  # every try made: one more than the waits between them
    assert sleeps == CONSISTENCY and sum(sleeps) == 300
    assert err.value.code == "InvalidGroup.NotFound"


def test_a_resource_that_shows_up_ends_the_backoff_there(sleeps):
    aws = Aws(region=REGION, echo=lambda line: None)
    ec2 = stubbed(aws, "ec2")
    for _ in range(3):
        ec2.add_client_error("authorize_security_group_ingress", service_error_code="InvalidGroup.NotFound")
    ec2.add_response("authorize_security_group_ingress", {})
    teardown.settle(lambda: aws.call("ec2", "authorize_security_group_ingress", GroupId="sg-1", IpPermissions=[]))
    ec2.assert_no_pending_responses()
    assert sleeps == [2, 4, 8]


def test_a_denial_right_after_a_create_is_retried_for_about_30_s(sleeps):
    """A policy conditioned on tags may deny a resource created seconds ago: its tags are not visible yet."""
    aws = Aws(region=REGION, echo=lambda line: None)
    ec2 = stubbed(aws, "ec2")
    for _ in range(len(DENIED) + 1):
        ec2.add_client_error("authorize_security_group_ingress", service_error_code="UnauthorizedOperation")
    with pytest.raises(PermissionDenied) as err:
        teardown.settle(lambda: aws.call("ec2", "authorize_security_group_ingress", GroupId="sg-1",
                                         IpPermissions=[]))
    ec2.assert_no_pending_responses()
    assert sleeps == DENIED and sum(sleeps) == 30 and err.value.exit_code == Exit.AWS_DENIED


def test_a_missing_credential_is_never_retried(sleeps):
    aws = Aws(region=REGION, echo=lambda line: None)
    tries = []

    def no_credentials(**_):
        tries.append(1)
        raise bce.NoCredentialsError()
    aws.client("ec2:once").meta.events.register("before-call.ec2.RunInstances", no_credentials)
    spec = specs.build("nc", "g5.12xlarge", 1, CIDR, ami=AMI, wait="none")
    with pytest.raises(NoCredentials) as err:
        run_instances.launch(aws, spec, Ledger(), lambda line: None, SUBNETS[:1],
                             {**LAUNCH, "MinCount": 1, "MaxCount": 1}, ["sg-1"])
    assert len(tries) == 1 and sleeps == []  # one line at once, not a minute of retries
    assert err.value.exit_code == Exit.AWS_CREDENTIALS and "no AWS credentials found" in err.value.format_message()


# -- a lost RunInstances answer ----------------------------------------------------------------------------------
def test_a_launch_whose_answers_never_came_is_found_by_its_client_token(sleeps):
    """Every try of one RunInstances failed as a lost answer does (HTTP 500), the last one after AWS started the
    instances: before concluding anything, DescribeInstances by its ClientToken finds them, and they count."""
    aws = Aws(region=REGION, echo=lambda line: None)
    launches, ec2 = stubbed(aws, "ec2:once"), stubbed(aws, "ec2")
    tokens = []
    aws.client("ec2:once").meta.events.register("before-parameter-build.ec2.RunInstances",
                                                lambda params, **_: tokens.append(params["ClientToken"]))
    for _ in range(len(CONSISTENCY) + 1):
        launches.add_client_error("run_instances", service_error_code="InternalError", http_status_code=500)
    ec2.add_response("describe_instances", reservations(instance(0), instance(1)),
                     {"Filters": [{"Name": "client-token", "Values": ANY}]})
    ledger, lines = Ledger(), []
    spec = specs.build("lost", "g5.12xlarge", 2, CIDR, ami=AMI, wait="none")
    new = run_instances.launch(aws, spec, ledger, lines.append, SUBNETS[:1], {**LAUNCH, "MinCount": 2, "MaxCount": 2},
                               ["sg-1"])
    launches.assert_no_pending_responses()
    ec2.assert_no_pending_responses()
    assert len(set(tokens)) == 1 and len(tokens) == len(CONSISTENCY) + 1  # one token: AWS starts them once
    assert [i.id for i in new] == ["i-00000000", "i-00000001"] and list(ledger.instances) == list(new)
    assert ledger.launching == []
    assert any("found by its ClientToken" in line for line in lines)


def test_ctrl_c_before_the_answer_of_a_growth_terminates_what_the_client_token_finds(sleeps):
    """A cluster grows by one; Ctrl-C lands after AWS started the instance, before `up` saw the answer, and the
    tag lookup does not list it yet: the rollback finds it by its ClientToken and terminates it (and only it)."""
    aws = Aws(region=REGION, echo=lambda line: None)
    ec2, launches = stubbed(aws, "ec2"), stubbed(aws, "ec2:once")
    tokens = []
    once = aws.client("ec2:once").meta.events
    once.register("before-parameter-build.ec2.RunInstances", lambda params, **_: tokens.append(params["ClientToken"]))

    def interrupt(**_):
        raise KeyboardInterrupt  # the answer is lost: AWS did start the instance
    once.register("after-call.ec2.RunInstances", interrupt)
    peer = Instance.from_api(instance(0, "running"))
    record = ClusterRecord(name="grow", region=REGION, instances=(peer,), security_group="sg-1",
                           placement_group="launch-grow", vpc_id="vpc-1", ssh_cidrs=(CIDR,))
    spec = specs.build("grow", "g5.12xlarge", 2, CIDR, ami=AMI, efs=False, key_name="mine", wait="none")
    preflight(ec2, stubbed(aws, "service-quotas"))
    ec2.add_response("describe_key_pairs", {"KeyPairs": [{"KeyName": "mine"}]}, {"KeyNames": ["mine"]})
    launches.add_response("run_instances", {"Instances": [instance(7)]})
    ec2.add_response("describe_instances", reservations(instance(7, "running")),
                     {"Filters": [{"Name": "client-token", "Values": ANY}]})
    ec2.add_response("describe_instances", reservations(instance(0, "running")),  # by the tag: not listed yet
                     {"Filters": ANY})
    ec2.add_response("terminate_instances", {}, {"InstanceIds": ["i-00000007"]})
    ec2.add_response("describe_instances", reservations(instance(7, "shutting-down")),
                     {"Filters": [{"Name": "instance-id", "Values": ["i-00000007"]}]})
    ec2.add_response("describe_volumes", {"Volumes": []}, {"Filters": ANY})
    with pytest.raises(KeyboardInterrupt):
        Up(aws, spec, lambda line: None).run(record)
    ec2.assert_no_pending_responses()  # terminated: the new one alone, never its peer
    assert tokens and len(set(tokens)) == 1


# -- TerminateInstances: NotFound is no proof ---------------------------------------------------------------------
def test_terminate_not_found_is_sent_again_for_the_visible_ids_and_confirmed(sleeps):
    """One id AWS does not show yet fails the whole call (InvalidInstanceID.NotFound) and terminates nothing: the
    visible one is terminated alone, and DescribeInstances confirms; the other, once it shows up still running,
    is terminated too. Only then does it count as done."""
    aws = Aws(region=REGION, echo=lambda line: None)
    ec2 = stubbed(aws, "ec2")
    a, b = "i-0000000a", "i-0000000b"
    by_id = {"Filters": [{"Name": "instance-id", "Values": [a, b]}]}
    ec2.add_client_error("terminate_instances", service_error_code="InvalidInstanceID.NotFound",
                         expected_params={"InstanceIds": [a, b]})
    ec2.add_response("describe_instances", reservations({**instance(10, "running"), "InstanceId": a}), by_id)
    ec2.add_response("terminate_instances", {}, {"InstanceIds": [a]})
    # confirming: b shows up, running (AWS's NotFound meant "not visible yet")
    ec2.add_response("describe_instances", reservations({**instance(10, "shutting-down"), "InstanceId": a},
                                                        {**instance(11, "running"), "InstanceId": b}), by_id)
    ec2.add_response("terminate_instances", {}, {"InstanceIds": [b]})
    ec2.add_response("describe_instances", reservations({**instance(10, "terminated"), "InstanceId": a},
                                                        {**instance(11, "shutting-down"), "InstanceId": b}), by_id)
    lines = []
    teardown.terminate_instances(aws, "nf", [a, b], lines.append, fresh=True)
    ec2.assert_no_pending_responses()
    assert lines[-1] == "  terminating: 2/2 terminated"


def test_an_instance_that_never_shows_up_is_not_taken_as_terminated(sleeps, monkeypatch):
    """Launched seconds ago (fresh) and never visible: the wait ends in a timeout naming it, not in 'gone'."""
    ticks = iter(range(0, 10 ** 6, 100))
    monkeypatch.setattr(wait, "CLOCK", lambda: next(ticks))
    aws = Aws(region=REGION, echo=lambda line: None)
    ec2 = stubbed(aws, "ec2")
    ec2.add_client_error("terminate_instances", service_error_code="InvalidInstanceID.NotFound")
    for _ in range(20):
        ec2.add_response("describe_instances", reservations())
    with pytest.raises(wait.WaitTimeout, match="1 instance\\(s\\) of cluster nf2 to terminate"):
        teardown.terminate_instances(aws, "nf2", ["i-0000000c"], lambda line: None, fresh=True)
