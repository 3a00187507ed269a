"""`launch cluster policy` is valid JSON and covers every AWS action the CLI calls: a full up / grow / status
/ list / hostfile / ssh / train --cluster / repair / down run (moto, --wait running) records each call's IAM
action (botocore `before-parameter-build` on every client the AWS boundary creates), adds the permissions
botocore's own models document for those operations (but what EFS's service-linked role does for the caller),
and checks both directions: none missing, none unexplained. The policy's shape is checked too: tags only at
creation, changes only to tagged resources but for the exceptions it names; and parliament, the IAM policy
linter, finds nothing but what policy.FINDINGS explains."""
from __future__ import annotations

import functools
import importlib.resources
import json
import re
import sys
import types

import botocore.session
import pytest

from aws_fixtures import AMI, launch, plain_client, tagged_everything, up_args
from mxlaunch.infra.cloud import install, policy, repair
from mxlaunch.infra.cloud.spec import TAG
from testkit.aws import HttpStub
from testkit.fake_ssh import FakeNetwork

pytestmark = [pytest.mark.aws, pytest.mark.timeout(180)]
KNOWN_AMI = "ami-12c6146b"  # an image moto's DescribeImages knows (`up` checks the image exists)


class RecordActions:
    def __init__(self):
        self.calls = set()  # (botocore service name, operation)

    def install(self, client) -> None:
        service = client.meta.service_model.service_name
        client.meta.events.register("before-parameter-build",
                                    lambda event_name, **_: self.calls.add((service, event_name.split(".")[2])))


@functools.lru_cache(maxsize=None)
def model(service: str):
    return botocore.session.get_session().get_service_model(service)  # EC2's takes a second to load


def documented(service: str, operation: str) -> set:
    """The IAM actions botocore's model documents for one operation (e.g. EFS CreateMountTarget also needs
    ec2:CreateNetworkInterface)."""
    doc = model(service).operation_model(operation).documentation
    return set(re.findall(r"<code>([a-z0-9-]+:[A-Za-z0-9]+)</code>", doc or ""))


class DeepLearningAmi:
    """moto has no public SSM parameters: answer the DLAMI's with an image moto knows."""

    def install(self, client) -> None:
        if client.meta.service_model.service_name == "ssm":
            client.meta.events.register("before-call.ssm.GetParameter", lambda **_: (HttpStub(200), {
                "Parameter": {"Name": "dlami", "Type": "String", "Value": KNOWN_AMI},
                "ResponseMetadata": {"HTTPStatusCode": 200}}))


def running(name: str) -> list:
    return sorted((i for i in tagged_everything(name)["instances"] if i["State"]["Name"] == "running"),
                  key=lambda i: i["InstanceId"])


def lose_one_silence_one(monkeypatch, name: str):
    """A repair with work of both kinds: one instance terminated behind its back (AWS reports it gone), one
    running that does not answer SSH (the repair terminates it): `launch cluster repair` launches two."""
    gone, silent, _ = running(name)
    plain_client("ec2").terminate_instances(InstanceIds=[gone["InstanceId"]])
    monkeypatch.setattr(install, "CONNECT", FakeNetwork().connect)  # moto's addresses are never contacted
    monkeypatch.setattr(repair, "ssh_probe", lambda name, connect: lambda instances: [
        i for i in instances if i.id == silent["InstanceId"]])
    return launch("cluster", "repair", name)


def down_with_a_volume_left(name: str):
    """`down` of a cluster that left a volume behind (an image that keeps its root volume): it is deleted too."""
    zone = running(name)[0]["Placement"]["AvailabilityZone"]
    plain_client("ec2").create_volume(AvailabilityZone=zone, Size=1, TagSpecifications=[
        {"ResourceType": "volume", "Tags": [{"Key": TAG, "Value": name}]}])
    return launch("cluster", "down", name, "--yes")


def up(name, count, *extra, ami=KNOWN_AMI):
    args = up_args(name, count, *extra)
    at = args.index(AMI)
    args[at - 1:at + 1] = ["--ami", ami] if ami else []
    return launch(*args)


def test_policy_is_valid_json_with_no_wildcard_actions():
    r = launch("cluster", "policy")
    assert r.code == 0, r.err
    doc = json.loads(r.out)
    assert doc["Version"] == "2012-10-17" and doc == policy.document()
    for statement in doc["Statement"]:
        assert statement["Effect"] == "Allow" and statement["Action"]
        assert all("*" not in a for a in statement["Action"])
    assert len({s["Sid"] for s in doc["Statement"]}) == len(doc["Statement"])


def test_every_action_a_full_run_makes_is_in_the_policy_and_nothing_more(moto_aws, hooks, monkeypatch):
    recorder = RecordActions()
    hooks.extend([recorder, DeepLearningAmi()])
    steps = (("up", lambda: up("pol", 2, "--max-hours", "1")),
             ("grow", lambda: up("pol", 3, "--ssh-cidr", "198.51.100.9/32", ami=None)),  # new address, the DLAMI
             ("up --spot", lambda: up("pol-spot", 1, "--spot", "--no-efs")),
             ("status", lambda: launch("cluster", "status", "pol")),
             ("list", lambda: launch("cluster", "list")),
             ("hostfile", lambda: launch("cluster", "hostfile", "pol")),
             ("ssh", lambda: launch("cluster", "ssh", "pol", "0", "--print")),
             ("train --dry-run", lambda: launch("train", "--cluster", "pol", "-n", 2, "--dry-run", "--", "trainer",
                                                "fit", "--data-train", "t.rec")),
             ("repair", lambda: lose_one_silence_one(monkeypatch, "pol")),
             ("down", lambda: down_with_a_volume_left("pol")),
             ("down --spot", lambda: launch("cluster", "down", "pol-spot", "--yes")))
    needed = {}  # IAM action -> the steps that called it or an operation that implies it
    for label, step in steps:
        recorder.calls.clear()
        r = step()
        assert r.code == 0, f"{label}: {r.err}"
        for service, op in recorder.calls:
            for action in {policy.action_of(service, op)} | documented(service, op) - set(policy.SERVICE_LINKED):
                needed.setdefault(action, set()).add(label)
        if label == "repair":  # it did both: terminated the silent one, replaced it and the lost one
            assert "cluster pol: 1 instance(s) terminated, 2 launched" in r.out and len(running("pol")) == 3, r.err
    granted = policy.actions()
    assert {"ec2:RunInstances", "ec2:TerminateInstances", "sts:GetCallerIdentity"} <= set(needed)  # it did record
    assert {"ec2:TerminateInstances", "ec2:RunInstances"} <= {a for a, by in needed.items() if "repair" in by}
    missing = {a: sorted(needed[a]) for a in sorted(set(needed) - granted)}
    assert not missing, f"missing from infra/cloud/policy.py (action: steps that need it): {missing}"
    unexplained = granted - set(needed) - set(policy.IMPLIED)
    assert not unexplained, f"granted but never called: {sorted(unexplained)}"


def test_what_efs_service_linked_role_does_is_what_the_model_says_it_does_unasked():
    """The network-interface actions left out are exactly those CreateMountTarget/DeleteMountTarget document
    as needed 'unless you use the Amazon EFS service-linked role', which the policy lets EFS create."""
    for action, operation in policy.SERVICE_LINKED.items():
        doc = " ".join(re.sub("<[^>]+>", " ", model("efs").operation_model(operation).documentation).split())
        assert action in documented("efs", operation) and "Unless you use the Amazon EFS service-linked role" in doc
        assert action not in policy.actions()
    (grant,) = [g for g in policy.GRANTS if "iam:CreateServiceLinkedRole" in g.actions]
    assert "elasticfilesystem.amazonaws.com" in grant.condition["StringEquals"]["iam:AWSServiceName"]
    assert any(r.endswith("/elasticfilesystem.amazonaws.com/AWSServiceRoleForAmazonElasticFileSystem")
               for r in grant.resources)


def parliament():
    """The parliament package. It still loads its data with pkg_resources, which setuptools 81 dropped: a
    stand-in with the one function it calls, where pkg_resources is gone."""
    try:
        import pkg_resources  # noqa: F401
    except ImportError:
        sys.modules["pkg_resources"] = types.SimpleNamespace(
            resource_filename=lambda package, name: str(importlib.resources.files(package) / name))
    import parliament as linter
    return linter


def test_parliament_finds_nothing_but_what_the_policy_explains():
    found = parliament().analyze_policy_string(policy.document_json()).findings
    # a finding's detail: the actions it is about (RESOURCE_STAR), or dicts of action and format (others)
    seen = {(f.issue, tuple(sorted(map(str, f.detail))) if isinstance(f.detail, list) else str(f.detail))
            for f in found}
    assert not seen - set(policy.FINDINGS), f"parliament findings not explained in policy.FINDINGS: " \
                                            f"{sorted(seen - set(policy.FINDINGS))}"
    assert seen == set(policy.FINDINGS), "an explained finding is gone: drop it from policy.FINDINGS"
    assert all(reason for reason in policy.FINDINGS.values())


def test_parliament_does_find_what_the_old_policy_got_wrong():
    """The check can fail: a rule statement on security-group-rule ARNs (no effect on Revoke*) and network
    interfaces on every resource, as granted before, are findings."""
    linter = parliament()
    old = {"Version": policy.VERSION, "Statement": [
        {"Sid": "SecurityGroupRules", "Effect": "Allow", "Action": ["ec2:RevokeSecurityGroupEgress"],
         "Resource": "arn:aws:ec2:*:*:security-group-rule/*"},
        {"Sid": "MountTargetNetworkInterfaces", "Effect": "Allow",
         "Action": ["ec2:CreateNetworkInterface", "ec2:DeleteNetworkInterface"], "Resource": "*"}]}
    issues = {f.issue for f in linter.analyze_policy_string(json.dumps(old)).findings}
    assert {"RESOURCE_MISMATCH", "RESOURCE_STAR"} <= issues


TAGGING = re.compile(r":(CreateTags|TagResource)$")


def test_tags_are_granted_only_when_creating():
    """A tag added to an existing resource would let a holder make anything look like a cluster's (then delete
    it): every tagging action is conditioned on the create call it comes with, one this policy grants."""
    granted = policy.actions()
    for statement in policy.document()["Statement"]:
        for action in filter(TAGGING.search, statement["Action"]):
            prefix = action.split(":")[0]
            creates = statement.get("Condition", {}).get("StringEquals", {}).get(f"{prefix}:CreateAction")
            assert creates, f"{statement['Sid']}: {action} without a {prefix}:CreateAction condition"
            creates = [creates] if isinstance(creates, str) else creates
            assert {f"{prefix}:{c}" for c in creates} <= granted, statement
            assert set(statement["Action"]) == {action}, statement  # the condition binds nothing else


def test_changes_are_granted_on_tagged_resources_but_for_the_named_exceptions():
    """Whatever changes or deletes is conditioned on the cluster tag, or its statement is in UNTAGGED_CHANGES
    (with the reason docs/cluster.md gives)."""
    sids = {s["Sid"] for s in policy.document()["Statement"]}
    assert set(policy.UNTAGGED_CHANGES) <= sids
    for statement in policy.document()["Statement"]:
        changes = [a for a in statement["Action"]
                   if re.search(r":(Delete|Terminate|Revoke|Authorize|Modify|Put|Update|Attach|Detach)", a)]
        if changes and statement["Sid"] not in policy.UNTAGGED_CHANGES:
            assert statement.get("Condition") == policy.TAGGED, f"{statement['Sid']}: {changes} on untagged resources"
