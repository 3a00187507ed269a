"""The --max-hours deadline is absolute and outlives the instances (moto in-process; --wait running): written at
creation into cluster.json and onto the cluster's security group, inherited by every later launch; once passed,
a launch needs a new --max-hours, which cluster.json records as the cluster's. Every instance terminates on an
OS power-off, with or without --max-hours (a stopped instance bills its volume). Repair's inheritance: tests/test_cluster_repair.py and, in the box,
tests/test_healing_deadline.py."""
from __future__ import annotations

import base64
import datetime as dt
import json

import pytest

from aws_fixtures import launch, plain_client, tagged_everything, up_args
from mxlaunch.exits import Exit
from mxlaunch.infra.cloud import provision

pytestmark = [pytest.mark.aws, pytest.mark.timeout(120)]


def tags(resource: dict) -> dict:
    return {t["Key"]: t["Value"] for t in resource.get("Tags", [])}


def group_deadline(name: str):
    (group,) = [g for g in tagged_everything(name)["security_groups"] if g["GroupName"] == f"launch-{name}"]
    return tags(group).get("launch:deadline")


def live(name: str) -> list:
    return [i for i in tagged_everything(name)["instances"] if i["State"]["Name"] in ("pending", "running")]


def shutdown_behaviour(instance: dict) -> str:
    return plain_client("ec2").describe_instance_attribute(
        InstanceId=instance["InstanceId"], Attribute="instanceInitiatedShutdownBehavior")[
        "InstanceInitiatedShutdownBehavior"]["Value"]


def user_data(instance: dict) -> str:
    value = plain_client("ec2").describe_instance_attribute(InstanceId=instance["InstanceId"],
                                                            Attribute="userData")["UserData"]["Value"]
    return base64.b64decode(value).decode()


def recorded(aws_env, name: str):
    return json.loads((aws_env / "mxlaunch-home" / "clusters" / name / "cluster.json").read_text()).get("deadline")


def terminate_all(name: str) -> None:
    """Every instance gone behind mxlaunch's back (a spot reclaim, the deadline's own timer, the console)."""
    plain_client("ec2").terminate_instances(InstanceIds=[i["InstanceId"] for i in live(name)])
    assert not live(name)


def test_up_completing_a_cluster_whose_instances_all_ended_gives_them_the_original_deadline(moto_aws, aws_env):
    assert launch(*up_args("dl", 2, "--max-hours", "2")).code == 0
    first = group_deadline("dl")
    assert first and recorded(aws_env, "dl") == first
    assert {tags(i)["launch:deadline"] for i in live("dl")} == {first}
    terminate_all("dl")
    r = launch(*up_args("dl", 2))  # no --max-hours: the cluster's own deadline, not none
    assert r.code == 0, r.err
    said = r.out + r.err
    assert f"new instances inherit the cluster's --max-hours deadline {first}" in said and "until" not in said
    new = live("dl")
    assert len(new) == 2 and {tags(i)["launch:deadline"] for i in new} == {first}
    epoch = int(dt.datetime.strptime(first, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc).timestamp())
    assert all(f"{epoch} {first}" in user_data(i) for i in new)  # what the instance's own timer enforces
    assert {shutdown_behaviour(i) for i in new} == {"terminate"}
    assert group_deadline("dl") == first and recorded(aws_env, "dl") == first
    assert launch("cluster", "down", "dl", "--yes").code == 0


def test_a_machine_without_the_local_state_inherits_the_deadline_from_the_security_group(
        moto_aws, aws_env, monkeypatch):
    """A cluster on the user's own key pair, completed from another machine (--force: it holds no state of it)."""
    plain_client("ec2").create_key_pair(KeyName="mine-dg")
    assert launch(*up_args("dg", 1, "--max-hours", "6", "--key-name", "mine-dg")).code == 0
    first = group_deadline("dg")
    terminate_all("dg")
    monkeypatch.setenv("MXLAUNCH_HOME", str(aws_env / "laptop2"))
    r = launch(*up_args("dg", 1, "--key-name", "mine-dg", "--force"))
    assert r.code == 0, r.err
    (new,) = live("dg")
    assert tags(new)["launch:deadline"] == first
    meta = json.loads((aws_env / "laptop2" / "clusters" / "dg" / "cluster.json").read_text())
    assert meta["deadline"] == first  # this machine's state of it now says so too
    assert launch("cluster", "down", "dg", "--yes").code == 0


def test_a_passed_deadline_needs_a_new_max_hours_which_becomes_the_clusters(moto_aws, aws_env, monkeypatch):
    assert launch(*up_args("dp", 1, "--max-hours", "1")).code == 0
    first = dt.datetime.strptime(group_deadline("dp"), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc)
    terminate_all("dp")
    later = first + dt.timedelta(hours=1)
    monkeypatch.setattr(provision, "CLOCK", lambda: later)  # an hour past the deadline
    r = launch(*up_args("dp", 1))
    assert r.code == Exit.USAGE and not live("dp")
    assert r.err.strip().splitlines()[-1] == (f"launch: error: cluster dp's --max-hours deadline "
                                              f"{first:%Y-%m-%dT%H:%M:%SZ} has passed: pass --max-hours H for the "
                                              f"new instances")
    r = launch(*up_args("dp", 1, "--max-hours", "3"))
    assert r.code == 0, r.err
    second = f"{later + dt.timedelta(hours=3):%Y-%m-%dT%H:%M:%SZ}"
    assert recorded(aws_env, "dp") == second  # the cluster's deadline now
    assert group_deadline("dp") == f"{first:%Y-%m-%dT%H:%M:%SZ}"  # its group keeps its creation's (tags: at creation)
    (new,) = live("dp")
    assert tags(new)["launch:deadline"] == second
    terminate_all("dp")
    assert launch(*up_args("dp", 1)).code == 0  # the new deadline is the one inherited now
    assert [tags(i)["launch:deadline"] for i in live("dp")] == [second]
    assert launch("cluster", "down", "dp", "--yes").code == 0


def test_every_instance_terminates_on_shutdown_without_max_hours_too(moto_aws, aws_env):
    assert launch(*up_args("nomax", 2)).code == 0
    held = live("nomax")
    assert {shutdown_behaviour(i) for i in held} == {"terminate"}
    assert not any("launch:deadline" in tags(i) for i in held) and group_deadline("nomax") is None
    assert recorded(aws_env, "nomax") is None
    s = launch("cluster", "status", "nomax")
    assert s.code == 0 and "deadline" not in s.out
    assert launch("cluster", "down", "nomax", "--yes").code == 0


def test_status_names_the_clusters_deadline_when_no_instance_is_left(moto_aws, aws_env):
    assert launch(*up_args("ds", 1, "--max-hours", "5")).code == 0
    deadline = group_deadline("ds")
    terminate_all("ds")
    s = launch("cluster", "status", "ds")
    assert s.code == 0, s.err
    assert f"cluster deadline: {deadline}; every instance launched later (up, repair, restarts) inherits it" in s.out
    assert "no instances: none are running" in s.out
    assert launch("cluster", "down", "ds", "--yes").code == 0
