"""The least-privilege IAM policy of `launch cluster` and `launch train --cluster`, as data (printed by
`launch cluster policy`). tests/test_cluster_policy.py records every API call a full up/grow/status/down run
makes (botocore events) and fails when an action is missing here, or when an action here is neither called
nor implied by a call (IMPLIED, and what botocore's models document for the operations called).

What is narrowed and how:
- Deleting and changing only touches what `up` tagged (`aws:ResourceTag/launch:cluster`): instances, security
  groups, key pairs, placement groups, volumes, EFS file systems and their mount targets.
- Tags only at creation (`ec2:CreateAction`, `elasticfilesystem:CreateAction`): a tag cannot be added to an
  existing resource, so nothing can be made to look like a cluster's and then be deleted. The Deep Learning
  AMI's public SSM parameter only; service-linked roles only for Spot and EFS, only when the account has none yet.
- Reads (Describe*, quotas, caller identity) are account-wide: EC2 Describe* has no resource-level permissions.
- Changes granted beyond what `up` tagged are in UNTAGGED_CHANGES, each with its reason (the README names them).
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


GRANTS = (
    Grant("ReadClusterState", (
        "ec2:DescribeVpcs", "ec2:DescribeSubnets", "ec2:DescribeInstances", "ec2:DescribeSecurityGroups",
        "ec2:DescribeKeyPairs", "ec2:DescribePlacementGroups", "ec2:DescribeImages", "ec2:DescribeInstanceTypes",
        "ec2:DescribeInstanceTypeOfferings",
        "ec2:DescribeVolumes", "ec2:DescribeNetworkInterfaces", "elasticfilesystem:DescribeFileSystems",
        "elasticfilesystem:DescribeMountTargets", "servicequotas:GetServiceQuota", "sts:GetCallerIdentity")),
    Grant("DeepLearningAmiParameter", ("ssm:GetParameter",),
          ("arn:aws:ssm:*::parameter/aws/service/deeplearning/*",)),
    Grant("CreateClusterResources", (
        "ec2:CreateKeyPair", "ec2:CreateSecurityGroup", "ec2:CreatePlacementGroup", "ec2:RunInstances",
        "elasticfilesystem:CreateFileSystem")),
    Grant("TagOnlyAtCreation", ("ec2:CreateTags",), condition={"StringEquals": {"ec2:CreateAction": [
        "CreateKeyPair", "CreatePlacementGroup", "CreateSecurityGroup", "RunInstances"]}}),
    # CreateFileSystem's Tags are authorized as TagResource: unconditioned, it would tag any file system
    Grant("TagFileSystemOnlyAtCreation", ("elasticfilesystem:TagResource",),
          ("arn:aws:elasticfilesystem:*:*:file-system/*",),
          {"StringEquals": {"elasticfilesystem:CreateAction": "CreateFileSystem"}}),
    Grant("ChangeAndRemoveOnlyClusterResources", (
        "ec2:AuthorizeSecurityGroupIngress", "ec2:RevokeSecurityGroupIngress", "ec2:RevokeSecurityGroupEgress",
        "ec2:DeleteSecurityGroup", "ec2:TerminateInstances", "ec2:DeleteKeyPair", "ec2:DeletePlacementGroup",
        "ec2:DeleteVolume"), ("arn:aws:ec2:*:*:security-group/*", "arn:aws:ec2:*:*:instance/*",
                              "arn:aws:ec2:*:*:key-pair/*", "arn:aws:ec2:*:*:placement-group/*",
                              "arn:aws:ec2:*:*:volume/*"), TAGGED),
    # the rules themselves are resources of their own, never tagged by `up`
    Grant("SecurityGroupRules", (
        "ec2:AuthorizeSecurityGroupIngress", "ec2:RevokeSecurityGroupIngress", "ec2:RevokeSecurityGroupEgress"),
          ("arn:aws:ec2:*:*:security-group-rule/*",)),
    Grant("ClusterFileSystem", (
        "elasticfilesystem:CreateMountTarget", "elasticfilesystem:DeleteMountTarget",
        "elasticfilesystem:DeleteFileSystem"), ("arn:aws:elasticfilesystem:*:*:file-system/*",), TAGGED),
    Grant("MountTargetNetworkInterfaces", ("ec2:CreateNetworkInterface", "ec2:DeleteNetworkInterface")),
    Grant("ServiceLinkedRolesOnFirstUse", ("iam:CreateServiceLinkedRole",), condition={"StringEquals": {
        "iam:AWSServiceName": ["elasticfilesystem.amazonaws.com", "spot.amazonaws.com"]}}),
)

# Authorized by AWS though no API call of ours carries their name (the policy test allows these uncalled):
IMPLIED = {
    "ec2:CreateTags": "TagSpecifications on create calls are authorized as CreateTags",
    "iam:CreateServiceLinkedRole": "the first Spot instance / EFS file system of an account creates its role",
    "elasticfilesystem:TagResource": "CreateFileSystem with Tags (botocore's model documents it)",
    "ec2:CreateNetworkInterface": "CreateMountTarget (botocore's model documents it)",
    "ec2:DescribeNetworkInterfaces": "CreateMountTarget (botocore's model documents it)",
    "ec2:DeleteNetworkInterface": "DeleteMountTarget (botocore's model documents it)",
}


# Statements that change or delete what `up` did not tag, and why (the README's "Least privilege" names them):
UNTAGGED_CHANGES = {
    "SecurityGroupRules": "a rule is a resource of its own, never tagged; its group must be the cluster's "
                          "(ChangeAndRemoveOnlyClusterResources)",
    "MountTargetNetworkInterfaces": "EFS makes and removes a mount target's network interface, and requires the "
                                    "caller of CreateMountTarget / DeleteMountTarget to hold these two on it; AWS "
                                    "documents no condition or resource that check can be narrowed by",
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
