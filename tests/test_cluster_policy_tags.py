"""Tags at creation, against the calls really made: a full `launch cluster up` (EFS, placement group, key pair)
and a spot `up` against moto record every call with its parameters; every create call that carries tags
(EC2's TagSpecifications, EFS's Tags) is authorized by AWS as a second action (ec2:CreateTags /
elasticfilesystem:TagResource) that the policy must grant on the condition that it comes with that very
operation ({prefix}:CreateAction naming it), and every action AWS authorizes implicitly (policy.IMPLIED; the
service-linked roles a spot launch and a first file system create) must be granted for exactly what needs it.
Without this, dropping RunInstances from the CreateAction list, or the whole tag-on-create statement, left every
other test green while every real `up` and repair would have been refused."""
from __future__ import annotations

import pytest

from aws_fixtures import AMI, launch, up_args
from mxlaunch.infra.cloud import policy
from testkit.aws import HttpStub

pytestmark = [pytest.mark.aws, pytest.mark.timeout(180)]
KNOWN_AMI = "ami-12c6146b"  # an image moto's DescribeImages knows (`up` checks the image exists)
TAGS = {"ec2": "TagSpecifications", "efs": "Tags"}  # where a create call carries its tags
TAG_ACTION = {"ec2": "ec2:CreateTags", "efs": "elasticfilesystem:TagResource"}  # how AWS authorizes them
# the service-linked role a call makes AWS create on an account's first use (policy.IMPLIED names both)
ROLE_OF = {("ec2", "RunInstances", "spot"): "spot.amazonaws.com",
           ("efs", "CreateFileSystem", None): "elasticfilesystem.amazonaws.com"}


class RecordCalls:
    """Every call each client of the AWS boundary makes: (service, operation, its parameters)."""

    def __init__(self):
        self.calls = []

    def install(self, client) -> None:
        service = client.meta.service_model.service_name

        def record(event_name, params, **_):
            self.calls.append((service, event_name.split(".")[2], dict(params)))
        client.meta.events.register("before-parameter-build", record)


class DeepLearningAmi:
    """moto has no public SSM parameters: answer the DLAMI's with an image moto knows."""

    def install(self, client) -> None:
        if client.meta.service_model.service_name == "ssm":
            client.meta.events.register("before-call.ssm.GetParameter", lambda **_: (HttpStub(200), {
                "Parameter": {"Name": "dlami", "Type": "String", "Value": KNOWN_AMI},
                "ResponseMetadata": {"HTTPStatusCode": 200}}))


def up(name, count, *extra):
    args = up_args(name, count, *extra)
    at = args.index(AMI)
    args[at] = KNOWN_AMI
    return launch(*args)


def statements_granting(action: str) -> list:
    return [s for s in policy.document()["Statement"] if action in s["Action"]]


def create_actions(statement: dict, prefix: str) -> set:
    names = statement.get("Condition", {}).get("StringEquals", {}).get(f"{prefix}:CreateAction", [])
    return {names} if isinstance(names, str) else set(names)


def test_every_create_call_that_tags_is_granted_its_tags_at_creation(moto_aws, hooks):
    recorder = RecordCalls()
    hooks.extend([recorder, DeepLearningAmi()])
    for args in (("tags", 2, "--max-hours", "1"), ("tags-spot", 1, "--spot", "--no-efs")):
        r = up(*args)
        assert r.code == 0, r.err
    tagged = {(service, op) for service, op, params in recorder.calls if params.get(TAGS.get(service, ""))}
    # what `up` tags when it creates it: instances, both groups, the key pair, the placement group, the file system
    assert {("ec2", "RunInstances"), ("ec2", "CreateSecurityGroup"), ("ec2", "CreateKeyPair"),
            ("ec2", "CreatePlacementGroup"), ("efs", "CreateFileSystem")} <= tagged, tagged
    for service, op in sorted(tagged):
        prefix = policy.PREFIX[service]
        assert policy.action_of(service, op) in policy.actions(), f"{op} itself is not granted"
        grants = statements_granting(TAG_ACTION[service])
        assert grants, f"{TAG_ACTION[service]} is granted by no statement: every tagged {op} would be refused"
        assert any(op in create_actions(s, prefix) for s in grants), (
            f"{op} carries tags, and no statement grants {TAG_ACTION[service]} with {prefix}:CreateAction {op}: "
            f"AWS would refuse every {op} of `up` and repair")


def test_every_action_aws_authorizes_implicitly_is_granted_for_what_needs_it(moto_aws, hooks):
    recorder = RecordCalls()
    hooks.extend([recorder, DeepLearningAmi()])
    for args in (("implied", 1, "--max-hours", "1"), ("implied-spot", 1, "--spot", "--no-efs")):
        r = up(*args)
        assert r.code == 0, r.err
    for action, why in policy.IMPLIED.items():
        assert statements_granting(action), f"{action} ({why}) is granted by no statement"
    (roles,) = statements_granting("iam:CreateServiceLinkedRole")
    allowed = set(roles["Condition"]["StringEquals"]["iam:AWSServiceName"])
    for service, op, params in recorder.calls:
        market = (params.get("InstanceMarketOptions") or {}).get("MarketType")
        role = ROLE_OF.get((service, op, market))
        if role:
            assert role in allowed, f"{op} ({market or 'on-demand'}) needs {role}'s service-linked role on first use"
            assert any(role in resource for resource in roles["Resource"]), roles
