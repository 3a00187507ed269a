"""`up --spot --on-demand-fallback` (infra/run_instances.py): a spot launch refused for capacity in every zone tried
is sent once more as on-demand, same zone and everything else; the setting is recorded for `repair` and restarts.
moto in-process; AWS's refusals are answered by a botocore hook with the real error codes (moto never runs out of
capacity). SSH is faked at the repair's seams: moto's addresses are made up, never contacted."""
from __future__ import annotations

import subprocess

import pytest

from aws_fixtures import launch, nothing_tagged, plain_client, tagged_everything, up_args
from mxlaunch.exits import Exit
from mxlaunch.infra import repair, state
from mxlaunch.testing.aws import HttpStub

pytestmark = [pytest.mark.aws, pytest.mark.timeout(60)]
SPOT_FULL = "InsufficientInstanceCapacity"


class RunInstances:
    """Records every RunInstances' params; refuses those of a market in `refuse` ("spot", "on-demand") with its
    error code, as AWS does (HTTP 400, before moto starts anything)."""

    def __init__(self, refuse=None):
        self.refuse = {"spot": SPOT_FULL} if refuse is None else refuse
        self.sent, self.refused = [], []

    def install(self, client) -> None:
        if client.meta.service_model.service_name == "ec2":
            client.meta.events.register("before-parameter-build.ec2.RunInstances", self._stash)
            client.meta.events.register("before-call.ec2.RunInstances", self._call)

    @staticmethod
    def _stash(params, context, **_):
        context["run_params"] = dict(params)

    def _call(self, context, **_):
        params = context["run_params"]
        self.sent.append(params)
        code = self.refuse.get("spot" if "InstanceMarketOptions" in params else "on-demand")
        if code is None:
            return None
        self.refused.append(params)
        return HttpStub(400), {"Error": {"Code": code, "Message": f"simulated {code}"},
                               "ResponseMetadata": {"HTTPStatusCode": 400}}

    def markets(self) -> list:
        return ["spot" if "InstanceMarketOptions" in p else "on-demand" for p in self.sent]


@pytest.fixture
def aws_says(hooks):
    def install(**kwargs) -> RunInstances:
        hook = RunInstances(**kwargs)
        hooks.append(hook)
        return hook
    return install


def tags(instance: dict) -> dict:
    return {t["Key"]: t["Value"] for t in instance["Tags"]}


def same_launch(params: dict) -> dict:
    """A RunInstances' params but its market and its idempotency token."""
    return {k: v for k, v in params.items() if k not in ("InstanceMarketOptions", "ClientToken")}


def test_spot_capacity_gone_launches_on_demand_with_the_clusters_tags_in_the_same_subnet(moto_aws, aws_says):
    run = aws_says()
    r = launch(*up_args("fb", 2, "--spot", "--on-demand-fallback", "--max-hours", "12"))
    assert r.code == 0, r.err
    *spot, on_demand = run.sent
    assert run.markets() == ["spot"] * len(spot) + ["on-demand"] and run.refused == spot
    assert same_launch(on_demand) == same_launch(spot[-1])  # subnet, group, image, tags, deadline, user data
    held = tagged_everything("fb")
    assert len(held["instances"]) == 2
    assert all("InstanceLifecycle" not in i for i in held["instances"])  # AWS's own word: not spot
    subnet = spot[-1]["NetworkInterfaces"][0]["SubnetId"]
    assert {i["SubnetId"] for i in held["instances"]} == {subnet}
    assert [m["SubnetId"] for m in held["mount_targets"]] == [subnet]  # the zones given up on lost theirs
    assert {tags(i)["launch:cluster"] for i in held["instances"]} == {"fb"}
    assert all(tags(i).keys() >= {"launch:role", "launch:owner", "launch:deadline", "Name"}
               for i in held["instances"])
    zone_of = {n["SubnetId"]: n["AvailabilityZone"] for n in plain_client("ec2").describe_subnets()["Subnets"]}
    tried = [zone_of[p["NetworkInterfaces"][0]["SubnetId"]] for p in spot]
    assert len(tried) > 1  # every zone tried as spot first: spot anywhere is cheaper than on-demand
    (line,) = [x for x in r.err.splitlines() if "on-demand instance(s) launched instead" in x]
    ids = " ".join(i["InstanceId"] for i in sorted(held["instances"], key=lambda i: i["AmiLaunchIndex"]))
    assert line.startswith(f"spot capacity gone in {', '.join(tried)} ({SPOT_FULL}); 2 on-demand instance(s) "
                           f"launched instead in {tried[-1]}: {ids}; "), line
    assert "they bill at the on-demand price, ~$" in line
    assert state.read_meta("fb")["on_demand_fallback"] is True and state.read_meta("fb")["spot"] is True
    status = launch("cluster", "status", "fb")
    assert status.code == 0 and not [x for x in status.out.splitlines() if x.endswith("  spot")], status.out


def test_without_the_flag_spot_capacity_gone_is_exit_6_as_before_and_nothing_is_left(moto_aws, aws_says):
    run = aws_says()
    r = launch(*up_args("nofb", 2, "--spot"))
    assert r.code == Exit.AWS_CAPACITY, r.err
    assert set(run.markets()) == {"spot"}  # never an on-demand launch unasked
    assert "in any zone" in r.err.strip().splitlines()[-1]
    assert nothing_tagged("nofb") and not moto_aws.groups and not state.key_path("nofb").exists()


def test_the_flag_without_spot_is_refused_before_any_aws_call(moto_aws, aws_says):
    run = aws_says()
    r = launch(*up_args("nospot", 2, "--on-demand-fallback"))
    assert r.code == Exit.USAGE
    (line,) = r.err.strip().splitlines()
    assert "--on-demand-fallback needs --spot" in line
    assert run.sent == [] and nothing_tagged("nospot")


def test_on_demand_capacity_gone_too_is_exit_6_naming_both_and_nothing_is_left(moto_aws, aws_says):
    run = aws_says(refuse={"spot": SPOT_FULL, "on-demand": SPOT_FULL})
    r = launch(*up_args("both", 2, "--spot", "--on-demand-fallback"))
    assert r.code == Exit.AWS_CAPACITY, r.err
    assert run.markets()[-1] == "on-demand" and run.markets().count("on-demand") == 1  # once, not per zone
    last = r.err.strip().splitlines()[-1]
    assert "spot gone in us-east-1a, " in last and f"({SPOT_FULL}), on-demand too in " in last, last
    assert f"({SPOT_FULL}, --on-demand-fallback)" in last, last
    assert nothing_tagged("both") and not moto_aws.groups


def test_a_spot_quota_is_no_capacity_and_never_falls_back(moto_aws, aws_says):
    run = aws_says(refuse={"spot": "MaxSpotInstanceCountExceeded"})
    r = launch(*up_args("quota", 2, "--spot", "--on-demand-fallback"))
    assert r.code == Exit.AWS_QUOTA, r.err
    assert run.markets() == ["spot"]
    assert nothing_tagged("quota")


def test_an_on_demand_quota_after_the_fallback_is_exit_5_saying_spot_was_gone(moto_aws, aws_says):
    run = aws_says(refuse={"spot": "SpotMaxPriceTooLow", "on-demand": "VcpuLimitExceeded"})
    r = launch(*up_args("odq", 2, "--spot", "--on-demand-fallback"))
    assert r.code == Exit.AWS_QUOTA, r.err
    assert run.markets()[-1] == "on-demand"  # SpotMaxPriceTooLow: no spot at its price, on-demand was tried
    last = r.err.strip().splitlines()[-1]
    assert "(SpotMaxPriceTooLow), and the on-demand fallback hit a quota" in last and "VcpuLimitExceeded" in last
    assert nothing_tagged("odq")


def test_dry_run_says_the_fallback(moto_aws, aws_says):
    r = launch(*up_args("dryfb", 2, "--spot", "--on-demand-fallback", "--dry-run"))
    assert r.code == 0, r.err
    (plan,) = [x for x in r.err.splitlines() if x.startswith("will create:")]
    assert "2 x g5.12xlarge spot instance(s)" in plan
    assert "on-demand instead if spot capacity is gone (--on-demand-fallback)" in plan
    assert nothing_tagged("dryfb")


def test_up_without_the_flag_keeps_the_recorded_setting_and_status_tells_spot_from_on_demand(moto_aws, aws_says):
    assert launch(*up_args("keep", 2, "--spot", "--on-demand-fallback")).code == 0  # spot capacity there
    first = tagged_everything("keep")["instances"]
    assert {i.get("InstanceLifecycle") for i in first} == {"spot"}
    plain_client("ec2").terminate_instances(InstanceIds=[first[0]["InstanceId"]])
    run = aws_says()
    r = launch(*up_args("keep", 2, "--spot"))  # the flag not said again
    assert r.code == 0, r.err
    assert run.markets() == ["spot", "on-demand"]  # the zone is pinned: one spot try, then on-demand there
    assert run.sent[1]["NetworkInterfaces"][0]["SubnetId"] == first[1]["SubnetId"]
    assert state.read_meta("keep")["on_demand_fallback"] is True
    rows = {line.split()[1]: line for line in launch("cluster", "status", "keep").out.splitlines()
            if line.split()[:1] and line.split()[0].isdigit()}
    (new,) = set(rows) - {first[1]["InstanceId"]}
    assert rows[first[1]["InstanceId"]].endswith("  spot") and not rows[new].endswith("spot")
    assert launch(*up_args("keep", 2, "--spot", "--no-on-demand-fallback")).code == 0  # whole: nothing launched
    assert state.read_meta("keep")["on_demand_fallback"] is False


# ------------------------------------------------------------------ repair (and so the restarts of --max-restarts)
class FakeSsh:
    """The runner of `ssh -F <cluster ssh_config> ALIAS CMD`: every command answers 0."""

    def __call__(self, argv, **_):
        assert argv[:2] == ["ssh", "-F"], argv
        return subprocess.CompletedProcess(argv, 0, "", "")


@pytest.fixture(autouse=True)
def no_real_ssh(monkeypatch):
    monkeypatch.setattr(repair, "SSH_RUN", FakeSsh())


def spot_cluster(name: str, *flags) -> list:
    """A 3-instance spot cluster as `up --wait ssh --extra cpu` leaves it, its instances by launch index."""
    result = launch(*up_args(name, 3, "--spot", *flags))
    assert result.code == 0, result.err
    state.write_meta(name, extra="cpu")
    return sorted(tagged_everything(name)["instances"], key=lambda i: i["AmiLaunchIndex"])


def test_a_repair_of_a_cluster_recorded_with_the_fallback_falls_back(moto_aws, aws_says):
    before = spot_cluster("rfb", "--on-demand-fallback")
    plain_client("ec2").terminate_instances(InstanceIds=[before[1]["InstanceId"]])
    run = aws_says()
    lines = []
    done = repair.make_whole("rfb", lines.append, probe=lambda instances: [], run=FakeSsh())
    assert run.markets() == ["spot", "on-demand"]
    (new,) = [i for i in tagged_everything("rfb")["instances"] if i["InstanceId"] in done.launched]
    assert "InstanceLifecycle" not in new and new["SubnetId"] == before[0]["SubnetId"]
    assert run.sent[1]["Placement"] == {"GroupName": "launch-rfb"} and tags(new) == tags(before[0])
    assert any(line.startswith("spot capacity gone in ") and new["InstanceId"] in line for line in lines)
    assert lines[-1].startswith("cluster rfb is whole again: 3 of 3")


def test_a_repair_without_the_fallback_stays_spot_and_says_why_it_failed(moto_aws, aws_says):
    before = spot_cluster("rnofb")
    plain_client("ec2").terminate_instances(InstanceIds=[before[1]["InstanceId"]])
    run = aws_says()
    with pytest.raises(repair.CapacityUnavailable) as caught:
        repair.make_whole("rnofb", lambda line: None, probe=lambda instances: [], run=FakeSsh())
    assert run.markets() == ["spot"] and caught.value.exit_code == Exit.AWS_CAPACITY
    assert "no capacity for g5.12xlarge (spot) in its zone" in caught.value.format_message()
    assert len(tagged_everything("rnofb")["instances"]) == 2


def test_a_repair_whose_fallback_finds_no_capacity_either_names_both(moto_aws, aws_says):
    before = spot_cluster("rboth", "--on-demand-fallback")
    plain_client("ec2").terminate_instances(InstanceIds=[before[2]["InstanceId"]])
    run = aws_says(refuse={"spot": SPOT_FULL, "on-demand": SPOT_FULL})
    with pytest.raises(repair.CapacityUnavailable) as caught:
        repair.make_whole("rboth", lambda line: None, probe=lambda instances: [], run=FakeSsh())
    assert run.markets() == ["spot", "on-demand"]
    assert "no capacity for g5.12xlarge (neither spot nor on-demand, --on-demand-fallback) in its zone" in \
        caught.value.format_message()
    assert len(tagged_everything("rboth")["instances"]) == 2
