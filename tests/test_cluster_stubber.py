"""Paths moto lacks: capacity errors and zone failover, full rollback, placement groups, the DLAMI SSM
parameter, quota/permission errors, DependencyViolation while instances terminate. Exact call sequences with
botocore's Stubber; whole-CLI behaviour with moto plus a failing-call hook."""
from __future__ import annotations

import datetime as dt

import pytest
from botocore.stub import ANY, Stubber

from aws_fixtures import AMI, CIDR, REGION, FailCalls, launch, nothing_tagged, tagged_everything, up_args
from mxlaunch.exits import Exit
from mxlaunch.infra.cloud import spec as specs
from mxlaunch.infra.cloud import local_state as state
from mxlaunch.infra.cloud.aws import Aws, CapacityUnavailable
from mxlaunch.infra.cloud.provision import Up
from mxlaunch.infra.cloud.record import ClusterRecord

pytestmark = [pytest.mark.aws, pytest.mark.timeout(60)]

SUBNETS = [{"SubnetId": "subnet-aaaaaaaa", "AvailabilityZone": "us-east-1a", "VpcId": "vpc-1"},
           {"SubnetId": "subnet-bbbbbbbb", "AvailabilityZone": "us-east-1b", "VpcId": "vpc-1"}]


def capacity_error(stub):
    stub.add_client_error("run_instances", service_error_code="InsufficientInstanceCapacity",
                          service_message="We currently do not have sufficient g5.12xlarge capacity",
                          http_status_code=400)


def network(stub):
    stub.add_response("describe_vpcs", {"Vpcs": [{"VpcId": "vpc-1"}]})
    stub.add_response("describe_subnets", {"Subnets": SUBNETS})


def preflight(ec2, quotas):
    """The reads before anything is created: the image, the zones that offer the type, its vCPUs and the quota."""
    ec2.add_response("describe_images", {"Images": [{"ImageId": AMI, "Architecture": "x86_64",
                                                     "RootDeviceName": "/dev/sda1", "BlockDeviceMappings": [
                                                         {"DeviceName": "/dev/sda1", "Ebs": {"VolumeSize": 75}}]}]},
                     {"ImageIds": [AMI]})
    ec2.add_response("describe_instance_type_offerings", {"InstanceTypeOfferings": [
        {"InstanceType": "g5.12xlarge", "LocationType": "availability-zone", "Location": s["AvailabilityZone"]}
        for s in SUBNETS]}, {"LocationType": "availability-zone", "Filters": ANY})
    ec2.add_response("describe_instance_types", {"InstanceTypes": [
        {"InstanceType": "g5.12xlarge", "VCpuInfo": {"DefaultVCpus": 48}}]}, {"InstanceTypes": ["g5.12xlarge"]})
    quotas.add_response("get_service_quota", {"Quota": {"QuotaCode": "L-DB2E81BA", "Value": 1536.0}},
                        {"ServiceCode": "ec2", "QuotaCode": "L-DB2E81BA"})


def stubbed(aws: Aws, service: str) -> Stubber:
    stub = Stubber(aws.client(service))
    stub.activate()
    return stub


def test_capacity_in_one_zone_moves_to_the_next(aws_env):
    aws = Aws(region=REGION, echo=lambda line: None)
    ec2, launches = stubbed(aws, "ec2"), stubbed(aws, "ec2:once")  # RunInstances: the client without retries
    spec = specs.build("cap", "g5.12xlarge", 2, CIDR, ami=AMI, key_name="mine", efs=False, wait="none")
    network(ec2)
    preflight(ec2, stubbed(aws, "service-quotas"))
    ec2.add_response("describe_key_pairs", {"KeyPairs": [{"KeyName": "mine"}]}, {"KeyNames": ["mine"]})
    ec2.add_response("create_security_group", {"GroupId": "sg-1"}, {
        "GroupName": "launch-cap", "VpcId": "vpc-1", "Description": ANY, "TagSpecifications": ANY})
    ec2.add_response("authorize_security_group_ingress", {}, {"GroupId": "sg-1", "IpPermissions": ANY})
    ec2.add_response("create_placement_group", {"PlacementGroup": {"GroupName": "launch-cap"}}, {
        "GroupName": "launch-cap", "Strategy": "cluster", "TagSpecifications": ANY})
    common = {"ImageId": AMI, "InstanceType": "g5.12xlarge", "MinCount": 2, "MaxCount": 2, "KeyName": "mine",
              "UserData": ANY, "MetadataOptions": ANY, "TagSpecifications": ANY,
              "BlockDeviceMappings": [{"DeviceName": "/dev/sda1", "Ebs": {"DeleteOnTermination": True,
                                                                          "VolumeSize": 75}}],
              "Placement": {"GroupName": "launch-cap"}, "ClientToken": ANY}

    def nic(subnet):
        return [{"DeviceIndex": 0, "SubnetId": subnet, "Groups": ["sg-1"], "AssociatePublicIpAddress": True,
                 "DeleteOnTermination": True}]
    capacity_error(launches)
    launches.add_response("run_instances", {"Instances": [
        {"InstanceId": f"i-{n}", "InstanceType": "g5.12xlarge", "State": {"Name": "pending"}, "AmiLaunchIndex": n,
         "SubnetId": "subnet-bbbbbbbb", "Placement": {"AvailabilityZone": "us-east-1b"},
         "PrivateIpAddress": f"172.31.16.{n + 5}", "LaunchTime": dt.datetime.now(dt.timezone.utc)}
        for n in range(2)]}, {**common, "NetworkInterfaces": nic("subnet-bbbbbbbb")})
    lines = []
    up = Up(aws, spec, lines.append)
    record = up.run(ClusterRecord(name="cap", region=REGION))
    ec2.assert_no_pending_responses()
    launches.assert_no_pending_responses()
    assert [i.az for i in record.instances] == ["us-east-1b", "us-east-1b"]
    assert any("no capacity" in line and "us-east-1a" in line and "next zone" in line for line in lines)


def test_capacity_everywhere_rolls_back_everything_this_up_created(aws_env):
    aws = Aws(region=REGION, echo=lambda line: None)
    ec2, efs, launches = stubbed(aws, "ec2"), stubbed(aws, "efs"), stubbed(aws, "ec2:once")
    spec = specs.build("full", "g5.12xlarge", 2, CIDR, ami=AMI, wait="none")
    network(ec2)
    preflight(ec2, stubbed(aws, "service-quotas"))
    ec2.add_response("create_key_pair", {"KeyName": "launch-full", "KeyMaterial": "-----BEGIN OPENSSH PRIVATE KEY-----"
                                                                                  "\nabc\n-----END OPENSSH PRIVATE KEY-----"},
                     {"KeyName": "launch-full", "KeyType": "ed25519", "TagSpecifications": ANY})
    ec2.add_response("create_security_group", {"GroupId": "sg-0000000c"}, {
        "GroupName": "launch-full", "VpcId": "vpc-1", "Description": ANY, "TagSpecifications": ANY})
    ec2.add_response("authorize_security_group_ingress", {}, {"GroupId": "sg-0000000c", "IpPermissions": ANY})
    ec2.add_response("create_security_group", {"GroupId": "sg-0000000e"}, {
        "GroupName": "launch-full-efs", "VpcId": "vpc-1", "Description": ANY, "TagSpecifications": ANY})
    ec2.add_response("authorize_security_group_ingress", {}, {"GroupId": "sg-0000000e", "IpPermissions": [
        {"IpProtocol": "tcp", "FromPort": 2049, "ToPort": 2049,
         "UserIdGroupPairs": [{"GroupId": "sg-0000000c", "Description": ANY}]}]})
    ec2.add_response("revoke_security_group_egress", {}, {"GroupId": "sg-0000000e", "IpPermissions": ANY})
    ec2.add_response("create_placement_group", {}, {"GroupName": "launch-full", "Strategy": "cluster",
                                                    "TagSpecifications": ANY})
    efs.add_response("create_file_system", {
        "OwnerId": "1", "CreationToken": "launch-cluster-full", "FileSystemId": "fs-1", "CreationTime": dt.datetime.now(),
        "LifeCycleState": "available", "NumberOfMountTargets": 0, "SizeInBytes": {"Value": 0},
        "PerformanceMode": "generalPurpose", "Tags": []},
        {"CreationToken": "launch-cluster-full", "Encrypted": True, "PerformanceMode": "generalPurpose",
         "ThroughputMode": "elastic", "Tags": ANY})
    # each zone: RunInstances alone (no mount target is made before a launch succeeded), at once to the next
    capacity_error(launches)
    capacity_error(launches)
    # rollback, in dependency order: file system, placement group, EFS group, cluster group, key pair; `down`
    # and the rollback wait until the file system and the placement group are gone
    efs.add_response("delete_file_system", {}, {"FileSystemId": "fs-1"})
    efs.add_client_error("describe_file_systems", service_error_code="FileSystemNotFound", http_status_code=404,
                         expected_params={"FileSystemId": "fs-1"})
    ec2.add_response("delete_placement_group", {}, {"GroupName": "launch-full"})
    ec2.add_client_error("describe_placement_groups", service_error_code="InvalidPlacementGroup.Unknown",
                         expected_params={"GroupNames": ["launch-full"]})
    ec2.add_response("delete_security_group", {}, {"GroupId": "sg-0000000e"})
    ec2.add_response("delete_security_group", {}, {"GroupId": "sg-0000000c"})
    ec2.add_response("delete_key_pair", {}, {"KeyName": "launch-full"})
    lines = []
    with pytest.raises(CapacityUnavailable) as err:
        Up(aws, spec, lines.append).run(ClusterRecord(name="full", region=REGION))
    ec2.assert_no_pending_responses()
    efs.assert_no_pending_responses()
    launches.assert_no_pending_responses()
    assert err.value.exit_code == Exit.AWS_CAPACITY
    assert "us-east-1a, us-east-1b (InsufficientInstanceCapacity)" in err.value.format_message()
    assert not state.key_path("full").exists()
    assert any("removing what this run created" in line for line in lines)


def test_cli_capacity_failover_on_moto(moto_aws, aws_env, hooks):
    fail = FailCalls("RunInstances", times=1)
    hooks.append(fail)
    r = launch(*up_args("fo", 2))
    assert r.code == 0, r.err
    held = tagged_everything("fo")
    assert {i["Placement"]["AvailabilityZone"] for i in held["instances"]} == {"us-east-1b"}
    assert [m["SubnetId"] for m in held["mount_targets"]] == [held["instances"][0]["SubnetId"]]
    assert fail.refused[0]["NetworkInterfaces"][0]["SubnetId"] != held["instances"][0]["SubnetId"]
    assert "trying the next zone" in r.err


@pytest.mark.parametrize("code, exit_code, words", [
    ("InsufficientInstanceCapacity", 6, ["no capacity", "in any zone"]),
    ("VcpuLimitExceeded", 5, ["quota", "Service Quotas"]),
    ("UnauthorizedOperation", 4, ["not permitted"]),
])
def test_cli_failure_rolls_back_to_nothing_with_one_line(moto_aws, aws_env, hooks, code, exit_code, words):
    hooks.append(FailCalls("RunInstances", times=99, code=code))
    r = launch(*up_args("rb", 3))
    assert r.code == exit_code, r.err
    last = r.err.strip().splitlines()[-1]
    assert last.startswith("launch: error:") and all(w in last for w in words), last
    assert "Traceback" not in r.err
    assert nothing_tagged("rb") and not moto_aws.groups
    assert not state.key_path("rb").exists()


def test_keep_on_failure_keeps_and_down_cleans(moto_aws, aws_env, hooks):
    hooks.append(FailCalls("RunInstances", times=99))
    r = launch(*up_args("keep", 2, "--keep-on-failure"))
    assert r.code == Exit.AWS_CAPACITY and "--keep-on-failure" in r.err
    held = tagged_everything("keep")
    assert len(held["security_groups"]) == 2 and len(held["file_systems"]) == 1
    assert launch("cluster", "down", "keep", "--yes").code == 0
    assert nothing_tagged("keep") and not moto_aws.groups


def test_ami_comes_from_the_dlami_ssm_parameter(moto_aws, aws_env, hooks):
    class SsmStub:
        def install(self, client):
            if client.meta.service_model.service_name == "ssm":
                self.stub = Stubber(client)
                self.stub.add_response("get_parameter", {"Parameter": {"Name": specs.DLAMI_PARAMETER,
                                                                       "Value": "ami-9b32e8e2"}},
                                       {"Name": specs.DLAMI_PARAMETER})
                self.stub.activate()
    ssm = SsmStub()
    hooks.append(ssm)
    args = [a for a in up_args("dl", 1) if a not in ("--ami", AMI)]
    r = launch(*args)
    assert r.code == 0, r.err
    ssm.stub.assert_no_pending_responses()
    assert {i["ImageId"] for i in tagged_everything("dl")["instances"]} == {"ami-9b32e8e2"}


def test_missing_dlami_parameter_is_one_line_nothing_created(moto_aws, aws_env):
    args = [a for a in up_args("nodl", 1) if a not in ("--ami", AMI)]
    r = launch(*args)  # moto has no such public parameter
    assert r.code == Exit.AWS_ERROR and "pass --ami" in r.err.strip().splitlines()[-1]
    assert nothing_tagged("nodl")


def test_down_retries_dependency_violation_then_succeeds(moto_aws, aws_env, hooks):
    assert launch(*up_args("dv", 1)).code == 0
    hooks.append(FailCalls("DeleteSecurityGroup", times=2, code="DependencyViolation"))
    r = launch("cluster", "down", "dv", "--yes")
    assert r.code == 0, r.err
    assert nothing_tagged("dv")


def test_down_dependency_violation_retry_is_bounded(moto_aws, aws_env, hooks, monkeypatch):
    assert launch(*up_args("dvb", 1)).code == 0
    import mxlaunch.infra.cloud.wait
    ticks = iter(range(0, 10 ** 6, 60))
    monkeypatch.setattr(mxlaunch.infra.cloud.wait, "CLOCK", lambda: next(ticks))  # each poll: a minute passes
    failing = FailCalls("DeleteSecurityGroup", times=10 ** 6, code="DependencyViolation")
    hooks.append(failing)
    r = launch("cluster", "down", "dvb", "--yes")
    assert r.code == Exit.AWS_ERROR and "DependencyViolation" in r.err.strip().splitlines()[-1]
    assert 2 <= len(failing.refused) <= 10
    assert launch("cluster", "down", "dvb", "--yes").code == Exit.AWS_ERROR  # still failing: no hang, same clear line
    hooks.remove(failing)
    assert launch("cluster", "down", "dvb", "--yes").code == 0 and nothing_tagged("dvb")


def test_ctrl_c_during_up_rolls_back(moto_aws, aws_env, hooks):
    class Interrupt:
        def install(self, client):
            if client.meta.service_model.service_name == "ec2":
                client.meta.events.register("before-call.ec2.RunInstances", self.boom)

        @staticmethod
        def boom(**_):
            raise KeyboardInterrupt
    hooks.append(Interrupt())
    r = launch(*up_args("intr", 2))
    assert r.code == 130 and r.err.strip().splitlines()[-1] == "launch: interrupted"
    assert "removing what this run created" in r.err
    assert nothing_tagged("intr") and not moto_aws.groups
