"""`up --spot --on-demand-fallback` (infra/cloud/run_instances.py): a spot launch refused for capacity in every zone tried
is sent again as on-demand, everything else the same, zone by zone in the same order unless live instances pin
the zone (then there only); the setting is recorded for `repair` and restarts. The EFS mount target is made once,
in the zone that launched, after the launch.
moto in-process; AWS's refusals are answered by a botocore hook with the real error codes (moto never runs out of
capacity). SSH is faked at the repair's seams: moto's addresses are made up, never contacted."""
from __future__ import annotations

import pytest

from aws_fixtures import launch, nothing_tagged, plain_client, tagged_everything, up_args
from mxlaunch.exits import Exit
from mxlaunch.infra.cloud import install, repair, local_state as state
from testkit.aws import HttpStub
from testkit.fake_ssh import FakeNetwork

pytestmark = [pytest.mark.aws, pytest.mark.timeout(60)]
SPOT_FULL = "InsufficientInstanceCapacity"


class RunInstances:
    """Records every RunInstances' params; refuses those of a market in `refuse` ("spot", "on-demand") with its
    error code, as AWS does (HTTP 400, before moto starts anything); a list of codes refuses that many calls, one
    code each, and lets the next ones through."""

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
        if isinstance(code, list):
            code = code.pop(0) if code else None
        if code is None:
            return None
        self.refused.append(params)
        return HttpStub(400), {"Error": {"Code": code, "Message": f"simulated {code}"},
                               "ResponseMetadata": {"HTTPStatusCode": 400}}

    def markets(self) -> list:
        return ["spot" if "InstanceMarketOptions" in p else "on-demand" for p in self.sent]


class MountTargets:
    """Records the subnet of every CreateMountTarget and DeleteMountTarget's id (moto deletes at once; AWS does it
    asynchronously, so a zone's mount target created again minutes after its delete would meet the one going)."""

    def __init__(self):
        self.created, self.deleted = [], []

    def install(self, client) -> None:
        if client.meta.service_model.service_name == "efs":
            client.meta.events.register("before-parameter-build.efs.CreateMountTarget",
                                        lambda params, **_: self.created.append(params["SubnetId"]))
            client.meta.events.register("before-parameter-build.efs.DeleteMountTarget",
                                        lambda params, **_: self.deleted.append(params["MountTargetId"]))


@pytest.fixture
def mount_targets(hooks) -> MountTargets:
    recorder = MountTargets()
    hooks.append(recorder)
    return recorder


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
    assert same_launch(on_demand) == same_launch(spot[0])  # subnet, group, image, tags, deadline, user data
    held = tagged_everything("fb")
    assert len(held["instances"]) == 2
    assert all("InstanceLifecycle" not in i for i in held["instances"])  # AWS's own word: not spot
    subnet = spot[0]["NetworkInterfaces"][0]["SubnetId"]
    assert {i["SubnetId"] for i in held["instances"]} == {subnet}
    assert [m["SubnetId"] for m in held["mount_targets"]] == [subnet]  # none in the zones given up on
    assert {tags(i)["launch:cluster"] for i in held["instances"]} == {"fb"}
    assert all(tags(i).keys() >= {"launch:role", "launch:owner", "launch:deadline", "Name"}
               for i in held["instances"])
    zone_of = {n["SubnetId"]: n["AvailabilityZone"] for n in plain_client("ec2").describe_subnets()["Subnets"]}
    tried = [zone_of[p["NetworkInterfaces"][0]["SubnetId"]] for p in spot]
    assert len(tried) > 1  # every zone tried as spot first: spot anywhere is cheaper than on-demand
    (line,) = [x for x in r.err.splitlines() if "on-demand instance(s) launched instead" in x]
    ids = " ".join(i["InstanceId"] for i in sorted(held["instances"], key=lambda i: i["AmiLaunchIndex"]))
    assert line.startswith(f"spot capacity gone in {', '.join(tried)} ({SPOT_FULL}); 2 on-demand instance(s) "
                           f"launched instead in {tried[0]}: {ids}; "), line
    assert "they bill at the on-demand price, ~$" in line
    assert state.read_meta("fb").on_demand_fallback is True and state.read_meta("fb").spot is True
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


def subnets_of(sent: list) -> list:
    return [p["NetworkInterfaces"][0]["SubnetId"] for p in sent]


def test_a_new_cluster_whose_first_on_demand_zone_is_full_too_lands_in_the_next_one(moto_aws, aws_says):
    run = aws_says(refuse={"spot": SPOT_FULL, "on-demand": [SPOT_FULL]})  # on-demand: the first zone tried only
    r = launch(*up_args("next", 2, "--spot", "--on-demand-fallback"))
    assert r.code == 0, r.err
    spot = subnets_of(run.sent[:-2])
    assert run.markets() == ["spot"] * len(spot) + ["on-demand"] * 2 and len(spot) > 1
    # on-demand: the zones in the same order
    assert subnets_of(run.sent[-2:]) == spot[:2]
    held = tagged_everything("next")
    assert {i["SubnetId"] for i in held["instances"]} == {spot[1]} and len(held["instances"]) == 2
    assert [m["SubnetId"] for m in held["mount_targets"]] == [spot[1]]  # the one zone that launched
    zone_of = {n["SubnetId"]: n["AvailabilityZone"] for n in plain_client("ec2").describe_subnets()["Subnets"]}
    (line,) = [x for x in r.err.splitlines() if "on-demand instance(s) launched instead" in x]
    assert f"launched instead in {zone_of[spot[1]]}: " in line, line
    assert f"no on-demand capacity for 2 x g5.12xlarge in {zone_of[spot[0]]} ({SPOT_FULL}); trying the next zone" \
        in r.err


@pytest.mark.parametrize("refuse_on_demand", [[], [SPOT_FULL], [SPOT_FULL, SPOT_FULL]])
def test_one_mount_target_is_made_in_the_zone_that_launched_and_none_elsewhere(moto_aws, aws_says, mount_targets,
                                                                             refuse_on_demand):
    """Spot refused everywhere, on-demand refused in 0, 1 or 2 zones: the zones tried cost a RunInstances each and
    nothing else; the mount target is made once, after the launch, where the instances are."""
    run = aws_says(refuse={"spot": SPOT_FULL, "on-demand": list(refuse_on_demand)})
    name = f"once{len(refuse_on_demand)}"
    r = launch(*up_args(name, 2, "--spot", "--on-demand-fallback"))
    assert r.code == 0, r.err
    launched_in = subnets_of(run.sent[-1:])
    assert mount_targets.created == launched_in and mount_targets.deleted == []
    held = tagged_everything(name)
    assert {i["SubnetId"] for i in held["instances"]} == set(launched_in)
    assert [m["SubnetId"] for m in held["mount_targets"]] == launched_in


def test_a_spot_launch_in_a_later_zone_makes_no_mount_target_in_the_full_ones(moto_aws, aws_says, mount_targets):
    aws_says(refuse={"spot": [SPOT_FULL]})  # the first zone only
    r = launch(*up_args("later", 2, "--spot", "--on-demand-fallback"))
    assert r.code == 0, r.err
    held = tagged_everything("later")
    assert [m["SubnetId"] for m in held["mount_targets"]] == mount_targets.created
    assert {i["SubnetId"] for i in held["instances"]} == set(mount_targets.created) and not mount_targets.deleted


def test_on_demand_capacity_gone_too_is_exit_6_naming_both_and_nothing_is_left(moto_aws, aws_says):
    run = aws_says(refuse={"spot": SPOT_FULL, "on-demand": SPOT_FULL})
    r = launch(*up_args("both", 2, "--spot", "--on-demand-fallback"))
    assert r.code == Exit.AWS_CAPACITY, r.err
    spot = [p for p in run.sent if "InstanceMarketOptions" in p]
    on_demand = run.sent[len(spot):]  # every zone as on-demand too, in the same order
    assert run.markets() == ["spot"] * len(spot) + ["on-demand"] * len(spot) and len(spot) > 1
    assert subnets_of(on_demand) == subnets_of(spot)
    zone_of = {n["SubnetId"]: n["AvailabilityZone"] for n in plain_client("ec2").describe_subnets()["Subnets"]}
    last = r.err.strip().splitlines()[-1]
    spot_zones, on_demand_zones = (", ".join(zone_of[s] for s in subnets_of(sent)) for sent in (spot, on_demand))
    assert f"spot capacity gone in {spot_zones} ({SPOT_FULL}), on-demand too in {on_demand_zones} ({SPOT_FULL}) " \
           f"(--on-demand-fallback)" in last, last
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
    assert state.read_meta("keep").on_demand_fallback is True
    rows = {line.split()[1]: line for line in launch("cluster", "status", "keep").out.splitlines()
            if line.split()[:1] and line.split()[0].isdigit()}
    (new,) = set(rows) - {first[1]["InstanceId"]}
    assert rows[first[1]["InstanceId"]].endswith("  spot") and not rows[new].endswith("spot")
    assert launch(*up_args("keep", 2, "--spot", "--no-on-demand-fallback")).code == 0  # whole: nothing launched
    assert state.read_meta("keep").on_demand_fallback is False



class Lifecycles:
    """Answers DescribeInstances with AWS's InstanceLifecycle of `ids` (moto knows only spot and none)."""

    def __init__(self, ids: dict):
        self.ids = ids

    def install(self, client) -> None:
        if client.meta.service_model.service_name == "ec2":
            client.meta.events.register("after-call.ec2.DescribeInstances", self._rewrite)

    def _rewrite(self, parsed, **_):
        for instance in (i for r in parsed.get("Reservations", []) for i in r["Instances"]):
            if instance["InstanceId"] in self.ids:
                instance["InstanceLifecycle"] = self.ids[instance["InstanceId"]]


def test_status_shows_each_instances_market_as_aws_names_it(moto_aws, hooks):
    assert launch(*up_args("mkt", 3)).code == 0
    ids = [i["InstanceId"] for i in sorted(tagged_everything("mkt")["instances"], key=lambda i: i["AmiLaunchIndex"])]
    hooks.append(Lifecycles({ids[0]: "capacity-block", ids[1]: "scheduled"}))
    status = launch("cluster", "status", "mkt")
    assert status.code == 0, status.err
    rows = {line.split()[1]: line.split()[-1] for line in status.out.splitlines()
            if line.split()[:1] and line.split()[0].isdigit()}
    assert rows == {ids[0]: "capacity-block", ids[1]: "scheduled", ids[2]: "on-demand"}  # AWS omits on-demand


def test_status_and_list_never_price_spot_instances_as_if_on_demand_unmarked(moto_aws, hooks):
    """No spot price is read: a spot instance's on-demand rate is its upper bound (`up` sets no max price, so AWS
    caps it there), and both commands say so instead of showing it as the price."""
    assert launch(*up_args("sp", 2)).code == 0 and launch(*up_args("od", 1)).code == 0
    spot = [i["InstanceId"] for i in tagged_everything("sp")["instances"]]
    hooks.append(Lifecycles({i: "spot" for i in spot}))
    status = launch("cluster", "status", "sp")
    (cost,) = [line for line in status.out.splitlines() if line.startswith("cost:")]
    assert cost.startswith("cost: at most $11.34/h now, at most $") and "2 spot instances priced at the on-demand " \
        "rate, the most their spot price can be" in cost, cost
    plain = launch("cluster", "status", "od").out
    assert "cost: ~$5.67/h now" in plain and "spot" not in plain.split("cost:")[1].splitlines()[0]
    listed = launch("cluster", "list").out.splitlines()
    (sp,) = [line for line in listed if line.startswith("sp ")]
    (od,) = [line for line in listed if line.startswith("od ")]
    assert "<=$11.34" in sp and "<=" not in od and "$5.67" in od
    assert listed[-1].endswith("; <=: spot instances priced at the on-demand rate, the most their spot price can be)")
    for name in ("sp", "od"):
        assert launch("cluster", "down", name, "--yes").code == 0

# ------------------------------------------------------------------ repair (and so the restarts of --max-restarts)
@pytest.fixture(autouse=True)
def no_real_ssh(monkeypatch):
    """The repair's instances over the fake transport (every command answers 0): moto's addresses are never
    contacted."""
    monkeypatch.setattr(install, "CONNECT", FakeNetwork().connect)


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
    done = repair.make_whole("rfb", lines.append, probe=lambda instances: [])
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
        repair.make_whole("rnofb", lambda line: None, probe=lambda instances: [])
    assert run.markets() == ["spot"] and caught.value.exit_code == Exit.AWS_CAPACITY
    assert "no capacity for g5.12xlarge (spot) in its zone" in caught.value.format_message()
    assert len(tagged_everything("rnofb")["instances"]) == 2


def test_a_repair_whose_fallback_finds_no_capacity_either_names_both(moto_aws, aws_says):
    before = spot_cluster("rboth", "--on-demand-fallback")
    plain_client("ec2").terminate_instances(InstanceIds=[before[2]["InstanceId"]])
    run = aws_says(refuse={"spot": SPOT_FULL, "on-demand": SPOT_FULL})
    with pytest.raises(repair.CapacityUnavailable) as caught:
        repair.make_whole("rboth", lambda line: None, probe=lambda instances: [])
    assert run.markets() == ["spot", "on-demand"]
    assert "no capacity for g5.12xlarge (neither spot nor on-demand, --on-demand-fallback) in its zone" in \
        caught.value.format_message()
    assert len(tagged_everything("rboth")["instances"]) == 2
