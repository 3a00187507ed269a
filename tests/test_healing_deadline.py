"""In the box (the session's: tests/fixtures_box.py `healing_cluster`, two of its spare hosts): a cluster whose every
instance ended behind mxlaunch's back (a spot reclaim, the console) is made whole by `launch cluster repair` with
an instance that carries the cluster's original --max-hours deadline, from the cluster's record since no instance
is left to copy it from, and that terminates on shutdown. Its own one-instance cluster, removed at the
end; the session's cluster is left as it was."""
import pytest

from fixtures_box import box_up_args

pytestmark = [pytest.mark.bed, pytest.mark.aws, pytest.mark.timeout(600)]
NAME = "dlbox"


def live(box) -> list:
    found = box.client("ec2").describe_instances(Filters=[{"Name": "tag:launch:cluster", "Values": [NAME]},
                                                          {"Name": "instance-state-name",
                                                           "Values": ["pending", "running"]}])
    return [i for r in found["Reservations"] for i in r["Instances"]]


def deadline(instance: dict):
    return {t["Key"]: t["Value"] for t in instance.get("Tags", [])}.get("launch:deadline")


def test_repair_of_a_cluster_whose_instances_all_ended_keeps_its_deadline(healing_cluster):
    box = healing_cluster.box
    code, _, err = box.launch("cluster", "up", NAME, *box_up_args(box, 1, "g5.12xlarge", "--no-efs",
                                                                   "--max-hours", "12"), timeout=180)
    assert code == 0, err[-3000:]
    try:
        (first,) = live(box)
        original = deadline(first)
        assert original
        ec2 = box.client("ec2")
        ec2.terminate_instances(InstanceIds=[first["InstanceId"]])
        assert not live(box)
        code, out, err = box.launch("cluster", "repair", NAME, timeout=300)
        assert code == 0, err[-3000:]
        assert f"cluster {NAME}: 0 instance(s) terminated, 1 launched" in out
        (new,) = live(box)
        assert new["InstanceId"] != first["InstanceId"] and deadline(new) == original
        assert ec2.describe_instance_attribute(InstanceId=new["InstanceId"],
                                               Attribute="instanceInitiatedShutdownBehavior")[
            "InstanceInitiatedShutdownBehavior"]["Value"] == "terminate"
        assert new["PrivateIpAddress"] in {e["address"] for e in box.booted() if e["booted"]}  # a box host, reached
    finally:
        code, _, err = box.launch("cluster", "down", NAME, "--yes", timeout=180)
        assert code == 0, err[-3000:]
