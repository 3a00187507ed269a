"""The least-privilege IAM policy of `launch cluster` and `launch train --cluster`, as data (printed by
`launch cluster policy`). tests/test_cluster_policy.py records every API call a full up/grow/status/down run
makes (botocore events) and fails when an action is missing here, or when an action here is neither called
nor implied by a call (IMPLIED, and what botocore's models document for the operations called); it also runs
parliament (the IAM policy linter) over it: no finding but those in FINDINGS, each with its reason.

What is narrowed and how:
- Deleting and changing only touches what `up` tagged (`aws:ResourceTag/launch:cluster`): instances, security
  groups, key pairs, placement groups, volumes, EFS file systems and their mount targets.
- Tags only at creation (`ec2:CreateAction`, `elasticfilesystem:CreateAction`): a tag cannot be added to an
  existing resource, so nothing can be made to look like a cluster's and then be deleted.
- Key pairs and placement groups are created only under the cluster names `up` gives them (launch-*); the Deep
  Learning AMI's public SSM parameters only; service-linked roles only Spot's and EFS's.
- No network interface permission: EFS makes and removes a mount target's network interface with its own
  service-linked role (SERVICE_LINKED), which the first file system of an account creates.
- Reads (Describe*, quotas, caller identity) are account-wide: EC2 Describe* has no resource-level permissions.
- Changes granted beyond what `up` tagged are in UNTAGGED_CHANGES, each with its reason (docs/cluster.md).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Optional

from mxlaunch.infra.cloud.spec import TAG

VERSION = "2012-10-17"
TAGGED = {"StringLike": {f"aws:ResourceTag/{TAG}": "*"}}
# botocore service name -> IAM action prefix
PREFIX = {"ec2": "ec2", "efs": "elasticfilesystem", "ssm": "ssm", "sts": "sts", "service-quotas": "servicequotas",
          "iam": "iam"}


@dataclass(frozen=True)
class Grant:
    sid: str
    actions: tuple
    resources: tuple = ("*",)
    condition: Optional[dict] = None

    def statement(self) -> dict:
        body = {"Sid": self.sid, "Effect": "Allow", "Action": sorted(self.actions),
                "Resource": self.resources[0] if len(self.resources) == 1 else list(self.resources)}
        if self.condition:
            body["Condition"] = self.condition
        return body


ROLE = "arn:aws:iam::*:role/aws-service-role"
GRANTS = (
    Grant("ReadClusterState", (
        "ec2:DescribeVpcs", "ec2:DescribeSubnets", "ec2:DescribeInstances", "ec2:DescribeSecurityGroups",
        "ec2:DescribeKeyPairs", "ec2:DescribePlacementGroups", "ec2:DescribeImages", "ec2:DescribeInstanceTypes",
        "ec2:DescribeInstanceTypeOfferings", "ec2:DescribeVolumes", "elasticfilesystem:DescribeFileSystems",
        "servicequotas:GetServiceQuota", "sts:GetCallerIdentity")),
    Grant("ReadMountTargets", ("elasticfilesystem:DescribeMountTargets",),
          ("arn:aws:elasticfilesystem:*:*:file-system/*",)),
    # a public parameter's ARN has no account (arn:aws:ssm:REGION::parameter/...): `*` matches the empty field
    Grant("DeepLearningAmiParameter", ("ssm:GetParameter",),
          ("arn:aws:ssm:*:*:parameter/aws/service/deeplearning/*",)),
    # RunInstances names an image, a subnet, groups, volumes and interfaces whose ids are not known beforehand;
    # CreateSecurityGroup a group id, and CreateFileSystem has no resource type at all
    Grant("CreateClusterResources", ("ec2:CreateSecurityGroup", "ec2:RunInstances",
                                     "elasticfilesystem:CreateFileSystem")),
    Grant("CreateClusterNamedResources", ("ec2:CreateKeyPair", "ec2:CreatePlacementGroup"),
          ("arn:aws:ec2:*:*:key-pair/launch-*", "arn:aws:ec2:*:*:placement-group/launch-*")),
    Grant("TagOnlyAtCreation", ("ec2:CreateTags",), condition={"StringEquals": {"ec2:CreateAction": [
        "CreateKeyPair", "CreatePlacementGroup", "CreateSecurityGroup", "RunInstances"]}}),
    # CreateFileSystem's Tags are authorized as TagResource: unconditioned, it would tag any file system
    Grant("TagFileSystemOnlyAtCreation", ("elasticfilesystem:TagResource",),
          ("arn:aws:elasticfilesystem:*:*:file-system/*",),
          {"StringEquals": {"elasticfilesystem:CreateAction": "CreateFileSystem"}}),
    # A rule is no resource of its own here: Authorize/Revoke are authorized on the group (a security-group-rule
    # resource only enters AuthorizeSecurityGroupIngress when the new rule is tagged, which `up` never does).
    Grant("ChangeAndRemoveOnlyClusterResources", (
        "ec2:AuthorizeSecurityGroupIngress", "ec2:RevokeSecurityGroupIngress", "ec2:RevokeSecurityGroupEgress",
        "ec2:DeleteSecurityGroup", "ec2:TerminateInstances", "ec2:DeleteKeyPair", "ec2:DeletePlacementGroup",
        "ec2:DeleteVolume"), ("arn:aws:ec2:*:*:security-group/*", "arn:aws:ec2:*:*:instance/*",
                              "arn:aws:ec2:*:*:key-pair/*", "arn:aws:ec2:*:*:placement-group/*",
                              "arn:aws:ec2:*:*:volume/*"), TAGGED),
    Grant("ClusterFileSystem", (
        "elasticfilesystem:CreateMountTarget", "elasticfilesystem:DeleteMountTarget",
        "elasticfilesystem:DeleteFileSystem"), ("arn:aws:elasticfilesystem:*:*:file-system/*",), TAGGED),
    # https://docs.aws.amazon.com/IAM/latest/UserGuide/using-service-linked-roles.html (the role's path and name)
    Grant("ServiceLinkedRolesOnFirstUse", ("iam:CreateServiceLinkedRole",), (
        f"{ROLE}/elasticfilesystem.amazonaws.com/AWSServiceRoleForAmazonElasticFileSystem",
        f"{ROLE}/spot.amazonaws.com/AWSServiceRoleForEC2Spot"), {"StringEquals": {
            "iam:AWSServiceName": ["elasticfilesystem.amazonaws.com", "spot.amazonaws.com"]}}),
)

# Authorized by AWS though no API call of ours carries their name (the policy test allows these uncalled):
IMPLIED = {
    "ec2:CreateTags": "TagSpecifications on create calls are authorized as CreateTags",
    "iam:CreateServiceLinkedRole": "the first Spot instance / EFS file system of an account creates its role",
    "elasticfilesystem:TagResource": "CreateFileSystem with Tags (botocore's model documents it)",
}

# What AWS's API reference asks of the caller "unless you use the Amazon EFS service-linked role, which performs
# these actions on your behalf by default": EFS always has that role once the account has a file system
# (https://docs.aws.amazon.com/efs/latest/ug/API_CreateMountTarget.html, API_DeleteMountTarget.html,
# https://docs.aws.amazon.com/efs/latest/ug/using-service-linked-roles.html): not granted.
SERVICE_LINKED = {
    "ec2:CreateNetworkInterface": "CreateMountTarget",
    "ec2:DescribeNetworkInterfaces": "CreateMountTarget",
    "ec2:DeleteNetworkInterface": "DeleteMountTarget",
}

# Statements that change or delete what `up` did not tag, and why (docs/cluster.md names them): none.
UNTAGGED_CHANGES: dict = {}

# parliament's findings on this policy that stay, and why (tests/test_cluster_policy.py fails on any other).
FINDINGS = {
    ("RESOURCE_STAR", ("ec2:CreateSecurityGroup", "ec2:RunInstances")):
        "RunInstances and CreateSecurityGroup act on resources whose ids exist only after the call (and an image, "
        "a subnet the default VPC chooses); CreateFileSystem has no resource type",
}


def actions() -> set:
    return {a for g in GRANTS for a in g.actions}


def action_of(service: str, operation: str) -> str:
    """The IAM action of one API call: ('efs', 'CreateFileSystem') -> 'elasticfilesystem:CreateFileSystem'."""
    return f"{PREFIX.get(service, service)}:{operation}"


def document() -> dict:
    return {"Version": VERSION, "Statement": [g.statement() for g in GRANTS]}


def document_json() -> str:
    return json.dumps(document(), indent=2)
