"""A repair's exact AWS sequence with botocore's Stubber (what moto cannot show: an instance that stays
`shutting-down`, a quota that still counts what was just terminated): the instance it replaces is waited for
until AWS no longer lists it among the present states (`terminated`) before anything is launched, and the
quota refusal right after is retried after a pause, said in a line. SSH is faked (testkit.fake_ssh): the
addresses below are never contacted."""
from __future__ import annotations

import datetime as dt

import pytest
from botocore.stub import Stubber

from aws_fixtures import AMI, CIDR, REGION
from mxlaunch.infra.cloud import local_state as state, repair, wait
from mxlaunch.infra.cloud.aws import Aws
from testkit.fake_ssh import FakeNetwork

pytestmark = [pytest.mark.aws, pytest.mark.timeout(60)]
ACCOUNT = "123456789012"
ARN = f"arn:aws:iam::{ACCOUNT}:user/alice"
SUBNETS = [{"SubnetId": "subnet-aaaaaaaa", "AvailabilityZone": "us-east-1a", "VpcId": "vpc-1"}]
DEADLINE = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=3)).strftime("%Y-%m-%dT%H:%M:%SZ")


def instance(iid: str, status: str, n: int) -> dict:
    return {"InstanceId": iid, "State": {"Name": status}, "InstanceType": "g5.12xlarge", "ImageId": AMI,
            "Placement": {"AvailabilityZone": "us-east-1a"}, "SubnetId": "subnet-aaaaaaaa", "AmiLaunchIndex": 0,
            "PrivateIpAddress": f"172.31.0.{n}", "PublicIpAddress": f"198.51.100.{n}",
            "LaunchTime": dt.datetime(2024, 1, 1, n, tzinfo=dt.timezone.utc),
            "Tags": [{"Key": "launch:cluster", "Value": "rs"}, {"Key": "launch:owner", "Value": ARN},
                     {"Key": "launch:deadline", "Value": DEADLINE}]}


def reservations(*instances) -> dict:
    return {"Reservations": [{"Instances": list(instances)}] if instances else []}


GROUP = {"GroupId": "sg-1", "GroupName": "launch-rs", "VpcId": "vpc-1", "Description": "",
         "IpPermissions": [{"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": CIDR}]}],
         "Tags": [{"Key": "launch:cluster", "Value": "rs"}, {"Key": "launch:role", "Value": "cluster"},
                  {"Key": "launch:owner", "Value": ARN}, {"Key": "launch:owner-id", "Value": "x"},
                  {"Key": "launch:deadline", "Value": DEADLINE}]}


def discover(ec2: Stubber, efs: Stubber, *instances) -> None:
    """record.discover: instances, groups, key pairs, placement groups, file system, volumes."""
    ec2.add_response("describe_instances", reservations(*instances))
    ec2.add_response("describe_security_groups", {"SecurityGroups": [GROUP]})
    ec2.add_response("describe_key_pairs", {"KeyPairs": []})
    ec2.add_response("describe_placement_groups", {"PlacementGroups": []})
    efs.add_response("describe_file_systems", {"FileSystems": []})
    ec2.add_response("describe_volumes", {"Volumes": []})


def prelaunch(ec2: Stubber, quotas: Stubber) -> None:
    """provision.Up's reads before a launch: network, image, zones, vCPUs and quota, the user's key pair."""
    ec2.add_response("describe_vpcs", {"Vpcs": [{"VpcId": "vpc-1"}]})
    ec2.add_response("describe_subnets", {"Subnets": SUBNETS})
    ec2.add_response("describe_images", {"Images": [{"ImageId": AMI, "Architecture": "x86_64",
                                                     "RootDeviceName": "/dev/sda1", "BlockDeviceMappings": [
                                                         {"DeviceName": "/dev/sda1", "Ebs": {"VolumeSize": 75}}]}]})
    ec2.add_response("describe_instance_type_offerings", {"InstanceTypeOfferings": [
        {"InstanceType": "g5.12xlarge", "LocationType": "availability-zone", "Location": "us-east-1a"}]})
    ec2.add_response("describe_instance_types", {"InstanceTypes": [
        {"InstanceType": "g5.12xlarge", "VCpuInfo": {"DefaultVCpus": 48}}]})
    quotas.add_response("get_service_quota", {"Quota": {"QuotaCode": "L-DB2E81BA", "Value": 48.0}})
    ec2.add_response("describe_key_pairs", {"KeyPairs": [{"KeyName": "mine"}]}, {"KeyNames": ["mine"]})


def test_repair_waits_for_terminated_then_retries_the_quota_its_terminations_still_hold(aws_env, monkeypatch):
    state.write_meta("rs", region=REGION, account=ACCOUNT, partition="aws", instance_type="g5.12xlarge", count=1,
                     key_name="mine", ami=AMI, spot=False)
    aws = Aws(region=REGION, echo=lambda line: None)
    order, launched = [], []

    def record(event_name, params, **_):
        order.append(event_name.rsplit(".", 1)[1])
        if order[-1] == "RunInstances":
            launched.append(params)

    def stub(service: str) -> Stubber:
        client = aws.client(service)
        client.meta.events.register("provide-client-params", record)
        s = Stubber(client)
        s.activate()
        return s
    sts, ec2, efs, once, quotas = (stub(s) for s in ("sts", "ec2", "efs", "ec2:once", "service-quotas"))
    sts.add_response("get_caller_identity", {"UserId": "AIDALICE", "Account": ACCOUNT, "Arn": ARN})
    old = instance("i-0000000000000000a", "running", 5)
    discover(ec2, efs, old)
    ec2.add_response("terminate_instances", {"TerminatingInstances": []}, {"InstanceIds": [old["InstanceId"]]})
    for _ in range(2):  # shutting down: still present, still holding its vCPUs
        ec2.add_response("describe_instances", reservations(instance(old["InstanceId"], "shutting-down", 5)))
    ec2.add_response("describe_instances", reservations())  # terminated: no longer among the present states
    discover(ec2, efs)
    prelaunch(ec2, quotas)
    once.add_client_error("run_instances", service_error_code="VcpuLimitExceeded", http_status_code=400,
                          service_message="You have requested more vCPU capacity than your current vCPU limit")
    ec2.add_response("describe_instances", reservations())  # did the refused launch start anything? no
    prelaunch(ec2, quotas)
    new = instance("i-0000000000000000b", "pending", 6)
    once.add_response("run_instances", {"Instances": [new]})
    ec2.add_response("describe_instances", reservations(instance(new["InstanceId"], "running", 6)))
    slept, lines = [], []
    monkeypatch.setattr(wait, "SLEEP", slept.append)
    done = repair.make_whole("rs", lines.append, [old["PrivateIpAddress"]], aws=aws, probe=lambda found: [],
                             connect=FakeNetwork().connect)
    for s in (sts, ec2, efs, once, quotas):
        s.assert_no_pending_responses()
    assert done.terminated == (old["InstanceId"],) and done.launched == (new["InstanceId"],)
    terminate = order.index("TerminateInstances")
    assert order[terminate + 1:terminate + 4] == ["DescribeInstances"] * 3  # shutting-down, shutting-down, gone
    assert order.index("RunInstances") > terminate + 3 and order.count("RunInstances") == 2
    tagged = [{t["Key"]: t["Value"] for t in spec["Tags"]} for spec in launched[-1]["TagSpecifications"]
              if spec["ResourceType"] == "instance"]
    assert tagged[0]["launch:deadline"] == DEADLINE  # the cluster's, from its security group
    assert launched[-1]["InstanceInitiatedShutdownBehavior"] == "terminate"
    assert slept == [repair.INTERVAL, repair.INTERVAL, 15.0]  # two looks at shutting-down; the quota's first pause
    assert lines[1:3] == [f"terminating 1 instance(s): {old['InstanceId']}", f"  terminated: {old['InstanceId']}"]
    assert ("VcpuLimitExceeded: AWS may still count the 1 instance(s) this repair terminated toward the quota; "
            "trying again in 15 s (for about 5 minutes in all)") in lines
