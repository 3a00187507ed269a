"""A cluster made whole (infra/cloud/repair.py, `launch cluster repair`) against moto in-process. SSH is faked at its
two seams (the reachability probe, and the connector of the SSH transport: testkit.fake_ssh's Connection): moto's
addresses are made up, never contacted."""
from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import shlex
import socket

import pytest

from mxlaunch.exits import Exit
from mxlaunch.infra.cloud import install, repair, local_state as state
from aws_fixtures import FailCalls, launch, plain_client, tagged_everything, up_args
from testkit.fake_ssh import FakeNetwork

pytestmark = [pytest.mark.aws, pytest.mark.timeout(60)]
VERIFY = "import mxnet, mxlaunch.launcher, mxlaunch.trainer"
WRITES = ("Create", "Delete", "Run", "Terminate", "Authorize", "Revoke", "Put", "Modify")


def fake_ssh(interrupt: bool = False, silent=()) -> FakeNetwork:
    """Instances over the fake transport: every command answers 0 and is recorded; `silent` addresses never
    answer (connecting times out); `interrupt`: a KeyboardInterrupt (a Ctrl-C) on the verify command."""
    def answer(call):
        if interrupt and VERIFY in call.command:
            raise KeyboardInterrupt
    net = FakeNetwork(answer=answer)
    for address in silent:
        net.fail(address, socket.timeout("timed out"))
    return net


@pytest.fixture(autouse=True)
def no_real_ssh(monkeypatch):
    """Whatever a test overrides, no path of the repair can connect to moto's made-up addresses."""
    monkeypatch.setattr(install, "CONNECT", fake_ssh().connect)


class Calls:
    """Every AWS call the boundary's clients make: (operation, params)."""

    def __init__(self):
        self.calls = []

    def install(self, client) -> None:
        client.meta.events.register("provide-client-params", self._record)

    def _record(self, event_name, params, **_):
        self.calls.append((event_name.rsplit(".", 1)[1], dict(params)))

    def writes(self) -> list:
        return [op for op, _ in self.calls if op.startswith(WRITES)]

    def params(self, op: str) -> list:
        return [p for o, p in self.calls if o == op]


@pytest.fixture
def calls(hooks):
    found = Calls()
    hooks.append(found)
    return found


def running(name: str) -> list:
    return [i for i in tagged_everything(name)["instances"] if i["State"]["Name"] == "running"]


def cluster(name: str, installed: bool = True) -> list:
    """A 3-instance cluster as `up --wait ssh --extra cpu` leaves it (the install's record), its instances."""
    result = launch(*up_args(name, 3))
    assert result.code == 0, result.err
    if installed:
        state.write_meta(name, extra="cpu")
    return sorted(running(name), key=lambda i: i["AmiLaunchIndex"])


def tags(instance: dict) -> dict:
    return {t["Key"]: t["Value"] for t in instance["Tags"]}


def nobody_unreachable(instances):
    return []


def test_a_terminated_instance_is_replaced_to_the_recorded_count(moto_aws, calls):
    before = cluster("r1")
    plain_client("ec2").terminate_instances(InstanceIds=[before[1]["InstanceId"]])
    calls.calls.clear()
    lines, ssh = [], fake_ssh()
    done = repair.make_whole("r1", lines.append, probe=nobody_unreachable, connect=ssh.connect)
    after = running("r1")
    assert len(after) == 3 and done.terminated == ()
    (new,) = [i for i in after if i["InstanceId"] not in {b["InstanceId"] for b in before}]
    assert done.launched == (new["InstanceId"],)
    assert calls.writes() == ["RunInstances"]  # nothing else is created, no rule changed, nothing terminated
    (run,) = calls.params("RunInstances")
    assert (run["MinCount"], run["MaxCount"], run["InstanceType"]) == (1, 1, "g5.12xlarge")
    assert run["Placement"] == {"GroupName": "launch-r1"}
    assert run["NetworkInterfaces"][0]["SubnetId"] == before[0]["SubnetId"] == new["SubnetId"]
    assert new["ImageId"] == before[0]["ImageId"] and new["KeyName"] == before[0]["KeyName"]
    assert tags(new) == tags(before[0])  # cluster, role, Name, owner: tagged like the others
    assert {g["GroupId"] for g in new["SecurityGroups"]} == {g["GroupId"] for g in before[0]["SecurityGroups"]}
    # waited and checked as `up --wait ssh` does, on the new instance only; no second install into the EFS venv
    new_alias = next(alias for alias, command in ssh.commands() if VERIFY in command)
    assert {alias for alias, _ in ssh.commands()} == {new_alias}
    assert [c for a, c in ssh.commands()] == ["true", shlex.join(["sh", "-c", install.USER_DATA_STATE]),
                                              f"/efs/mxlaunch/venv/bin/python -c '{VERIFY}'"]
    # over one connection, to its public address as the cluster's user with its key; host keys: its known_hosts
    (reached,) = ssh.connects
    assert (reached.host.address, reached.hostname, reached.user) == (new_alias, new["PublicIpAddress"], "ubuntu")
    assert reached.key_files == (str(state.key_path("r1")),)
    assert {(o.known_hosts, o.accept_new) for o in ssh.options} == {(str(state.known_hosts_path("r1")), True)}
    listed = [line.split()[0] for line in state.hostfile_path("r1").read_text().splitlines() if line[:1] != "#"]
    assert sorted(listed) == sorted(f"ubuntu@{i['PrivateIpAddress']}" for i in after)  # moto may reuse an address
    assert lines[0] == "repairing cluster r1: 2 of 3 instance(s) running and reachable"
    assert lines[-1] == f"cluster r1 is whole again: 3 of 3 instance(s), new: {new['InstanceId']} " \
                        f"({new['PrivateIpAddress']})"


def test_an_unreachable_running_instance_is_terminated_and_replaced(moto_aws, calls):
    before = cluster("r2")
    lost = before[2]["InstanceId"]
    asked = []

    def probe(instances):
        asked.extend(i.id for i in instances)
        return [i for i in instances if i.id == lost]
    calls.calls.clear()
    lines = []
    done = repair.make_whole("r2", lines.append, probe=probe, connect=fake_ssh().connect)
    assert sorted(asked) == sorted(i["InstanceId"] for i in before)
    assert done.terminated == (lost,) and len(done.launched) == 1
    assert calls.params("TerminateInstances") == [{"InstanceIds": [lost]}]
    assert calls.writes() == ["TerminateInstances", "RunInstances"]
    ids = {i["InstanceId"] for i in running("r2")}
    assert len(ids) == 3 and lost not in ids and done.launched[0] in ids
    assert f"no SSH answer: {lost} ({before[2]['PrivateIpAddress']})" in lines[0]


def test_a_doomed_address_is_terminated_and_replaced(moto_aws, calls):
    before = cluster("r3")
    doomed = before[0]
    calls.calls.clear()
    lines = []
    done = repair.make_whole("r3", lines.append, [doomed["PrivateIpAddress"]], probe=nobody_unreachable,
                             connect=fake_ssh().connect)
    assert done.terminated == (doomed["InstanceId"],) and len(done.launched) == 1
    assert calls.params("TerminateInstances") == [{"InstanceIds": [doomed["InstanceId"]]}]
    assert doomed["InstanceId"] not in {i["InstanceId"] for i in running("r3")} and len(running("r3")) == 3
    assert "spot interruption notice" in lines[0]


def test_a_whole_cluster_makes_no_write_call(moto_aws, calls):
    cluster("r4")
    calls.calls.clear()
    lines, ssh = [], fake_ssh()
    done = repair.make_whole("r4", lines.append, probe=nobody_unreachable, connect=ssh.connect)
    assert done.terminated == done.launched == ()
    assert calls.calls and calls.writes() == []
    assert lines == ["cluster r4 is whole: 3 of 3 instance(s) running and answering SSH"]
    assert ssh.calls == [] and ssh.connects == []


def test_interrupted_while_checking_removes_only_what_the_repair_launched(moto_aws, calls):
    before = cluster("r5")
    plain_client("ec2").terminate_instances(InstanceIds=[before[0]["InstanceId"]])
    calls.calls.clear()
    with pytest.raises(KeyboardInterrupt):
        repair.make_whole("r5", lambda line: None, probe=nobody_unreachable, connect=fake_ssh(interrupt=True).connect)
    (run,) = calls.params("RunInstances")
    assert calls.writes() == ["RunInstances", "TerminateInstances"]
    (terminated,) = calls.params("TerminateInstances")
    survivors = {i["InstanceId"] for i in before[1:]}
    assert {i["InstanceId"] for i in running("r5")} == survivors  # the peers untouched, the new one gone
    assert not survivors & set(terminated["InstanceIds"])
    held = tagged_everything("r5")
    assert len(held["security_groups"]) == 2 and len(held["file_systems"]) == 1 and len(held["key_pairs"]) == 1


def test_cli_repair_whole_and_capacity_failure(moto_aws, calls, hooks, monkeypatch):
    before = cluster("r6")
    monkeypatch.setattr(repair, "ssh_probe", lambda name, connect: nobody_unreachable)
    result = launch("cluster", "repair", "r6")
    assert result.code == Exit.OK, result.err
    assert "cluster r6 is whole: 3 of 3" in result.err and "0 instance(s) terminated, 0 launched" in result.out
    plain_client("ec2").terminate_instances(InstanceIds=[before[2]["InstanceId"]])
    hooks.append(FailCalls("RunInstances", times=5))
    calls.calls.clear()
    result = launch("cluster", "repair", "r6")
    assert result.code == Exit.AWS_CAPACITY, result.err
    error = [line for line in result.err.splitlines() if "error:" in line]
    assert error == ["launch: error: cannot replace 1 instance(s) of cluster r6: no capacity for g5.12xlarge in its "
                     "zone (InsufficientInstanceCapacity); it runs 2 of 3: `launch cluster repair r6` later"]
    assert calls.writes() == ["RunInstances"]  # refused: nothing made, nothing to undo
    assert len(running("r6")) == 2 and len(tagged_everything("r6")["mount_targets"]) == 1


def test_cli_repair_of_a_cluster_never_made_here(moto_aws):
    result = launch("cluster", "repair", "nosuch")
    assert result.code == Exit.FAILED
    assert "no record of its `up` here" in result.err and len(result.err.strip().splitlines()) == 1


def test_known_hosts_keeps_the_live_instances_keys_only(aws_env):
    salt = b"0123456789abcdef0123"
    hashed = "|1|{}|{}".format(base64.b64encode(salt).decode(),
                               base64.b64encode(hmac.new(salt, b"10.0.0.9", hashlib.sha1).digest()).decode())
    path = state.known_hosts_path("k1")
    path.parent.mkdir(parents=True)
    path.write_text(f"# comment\n10.0.0.1 ssh-ed25519 AAAA1\n10.0.0.2 ssh-ed25519 AAAA2\n"
                    f"[10.0.0.3]:2222 ssh-ed25519 AAAA3\n{hashed} ssh-ed25519 AAAA9\n")
    assert state.keep_host_keys("k1", ["10.0.0.1", "10.0.0.3"]) == 2
    assert path.read_text() == "# comment\n10.0.0.1 ssh-ed25519 AAAA1\n[10.0.0.3]:2222 ssh-ed25519 AAAA3\n"
    path.write_text(f"{hashed} ssh-ed25519 AAAA9\n")
    assert state.keep_host_keys("k1", ["10.0.0.9"]) == 0


# ------------------------------------------------------------------ silence read with care (the SSH probe may be ours)
def test_when_no_instance_answers_nothing_is_terminated_and_one_line_names_the_likely_cause(moto_aws, calls,
                                                                                        monkeypatch):
    before = cluster("s1")
    monkeypatch.setattr(repair, "ssh_probe", lambda name, connect: lambda instances: list(instances))
    calls.calls.clear()
    result = launch("cluster", "repair", "s1")
    assert result.code == Exit.SSH, result.err
    assert calls.writes() == [] and len(running("s1")) == 3
    (line,) = result.err.strip().splitlines()
    assert "none of its 3 running instance(s) answers SSH from this machine" in line
    assert "SSH rule" in line and "--ssh-cidr" in line and "VPN" in line and "nothing was terminated" in line
    assert "launch cluster repair s1 --replace-unreachable" in line
    assert all(i["InstanceId"] in line for i in before)


def test_at_most_half_are_terminated_for_silence_and_the_rest_are_named(moto_aws, calls):
    before = cluster("s2")
    silent = [i["InstanceId"] for i in before[1:]]
    calls.calls.clear()
    lines = []
    done = repair.make_whole("s2", lines.append, probe=lambda instances: [i for i in instances if i.id in silent],
                             connect=fake_ssh().connect)
    assert done.terminated == (silent[0],) and done.left == (silent[1],) and len(done.launched) == 1
    assert calls.params("TerminateInstances") == [{"InstanceIds": [silent[0]]}]
    assert silent[1] in {i["InstanceId"] for i in running("s2")} and len(running("s2")) == 3
    assert "left running though they do not answer SSH" in lines[-1] and silent[1] in lines[-1]
    assert "launch cluster repair s2 --replace-unreachable" in lines[-1]


def test_replace_unreachable_lifts_both_limits(moto_aws, calls):
    before = cluster("s3")
    calls.calls.clear()
    done = repair.make_whole("s3", lambda line: None, probe=lambda instances: list(instances),
                             connect=fake_ssh().connect, replace_unreachable=True)
    assert sorted(done.terminated) == sorted(i["InstanceId"] for i in before) and len(done.launched) == 3


def test_an_instance_aws_reports_terminated_is_replaced_without_probing_it(moto_aws, calls):
    before = cluster("s4")
    gone = before[0]["InstanceId"]
    plain_client("ec2").terminate_instances(InstanceIds=[gone])
    asked = []
    done = repair.make_whole("s4", lambda line: None, probe=lambda instances: asked.extend(instances) or [],
                             connect=fake_ssh().connect)
    assert sorted(i.id for i in asked) == sorted(i["InstanceId"] for i in before[1:])
    assert len(done.launched) == 1 and done.terminated == ()


# ------------------------------------------------------------------ before a restart of `launch train --cluster`
def job_addresses(instances) -> list:
    return [i["PrivateIpAddress"] for i in instances]


@pytest.fixture
def no_sleep(monkeypatch):
    from mxlaunch.infra.cloud import wait
    monkeypatch.setattr(wait, "SLEEP", lambda seconds: None)  # the probe's pause between tries


def test_a_restart_where_every_host_answers_makes_no_aws_call(moto_aws, calls, monkeypatch):
    before = cluster("t1")
    ssh = fake_ssh()
    monkeypatch.setattr(install, "CONNECT", ssh.connect)
    calls.calls.clear()
    lines = []
    assert repair.restart_hosts("t1", job_addresses(before), (), lines.append) is None
    assert calls.calls == []  # not even a read: expired credentials cannot end the run here
    assert sorted(ssh.commands()) == sorted((a, "true") for a in job_addresses(before))
    # a private address (what the job's hosts are) is reached at its public one, as `launch train --cluster` does
    assert sorted(e.hostname for e in ssh.connects) == sorted(i["PublicIpAddress"] for i in before)
    assert lines == ["all 3 host(s) of the job answer SSH: restarting on the same hosts"]


def test_a_restart_after_a_lost_host_replaces_it_probing_each_host_once(moto_aws, calls, monkeypatch, no_sleep):
    before = cluster("t2")
    lost = before[1]
    ssh = fake_ssh(silent=[lost["PrivateIpAddress"]])
    monkeypatch.setattr(install, "CONNECT", ssh.connect)
    lines = []
    found = repair.restart_hosts("t2", job_addresses(before), (), lines.append)
    assert calls.params("TerminateInstances") == [{"InstanceIds": [lost["InstanceId"]]}]
    after = running("t2")
    assert lost["InstanceId"] not in {i["InstanceId"] for i in after} and len(after) == 3
    assert sorted(h.address for h in found.hosts) == sorted(job_addresses(after))  # moto may reuse an address
    probes = [e.host.address for e in ssh.connects if e.host.address in job_addresses(before)]
    assert sorted(probes) == sorted(job_addresses(before) + [lost["PrivateIpAddress"]] * (repair.PROBE_ATTEMPTS - 1))
    assert lines[0] == f"no SSH answer from {lost['PrivateIpAddress']}: making cluster t2 whole"


def test_a_lost_host_with_expired_credentials_says_to_refresh_them_and_touches_nothing(moto_aws, calls, hooks,
                                                                                       monkeypatch, no_sleep):
    before = cluster("t3")
    lost = before[2]["PrivateIpAddress"]
    monkeypatch.setattr(install, "CONNECT", fake_ssh(silent=[lost]).connect)
    hooks.append(FailCalls("GetCallerIdentity", times=5, code="ExpiredToken", service="sts"))
    calls.calls.clear()
    with pytest.raises(repair.NoCredentials) as caught:
        repair.restart_hosts("t3", job_addresses(before), (), lambda line: None)
    assert caught.value.exit_code == Exit.AWS_CREDENTIALS and calls.writes() == []
    message = caught.value.format_message()
    assert message.startswith(f"no SSH answer from {lost}, and AWS refused to repair cluster t3: AWS rejected the "
                              f"credentials (sts.GetCallerIdentity: ExpiredToken")
    assert message.endswith("refresh them (`aws sso login`, or the AWS profile's keys)")


# ------------------------------------------------------------------ its deadline; a quota after its own terminations
def test_a_cluster_whose_instances_all_ended_gets_replacements_with_its_original_deadline(moto_aws, calls):
    assert launch(*up_args("d1", 2, "--max-hours", "4")).code == 0
    before = running("d1")
    (deadline,) = {tags(i)["launch:deadline"] for i in before}
    plain_client("ec2").terminate_instances(InstanceIds=[i["InstanceId"] for i in before])
    lines = []
    done = repair.make_whole("d1", lines.append, probe=nobody_unreachable, connect=fake_ssh().connect)
    after = running("d1")
    assert len(done.launched) == 2 and sorted(done.launched) == sorted(i["InstanceId"] for i in after)
    assert {tags(i)["launch:deadline"] for i in after} == {deadline}  # from its record: no instance was left
    ec2 = plain_client("ec2")
    assert {ec2.describe_instance_attribute(InstanceId=i["InstanceId"], Attribute="instanceInitiatedShutdownBehavior")[
        "InstanceInitiatedShutdownBehavior"]["Value"] for i in after} == {"terminate"}


def test_a_passed_deadline_refuses_a_repair_before_anything_is_terminated(moto_aws, calls, monkeypatch):
    from mxlaunch.errors import UsageError
    from mxlaunch.infra.cloud import provision
    before = cluster("d2")
    assert not any("launch:deadline" in tags(i) for i in before)  # made without: give it a passed one, as its record
    (group,) = [g for g in tagged_everything("d2")["security_groups"] if g["GroupName"] == "launch-d2"]
    plain_client("ec2").create_tags(Resources=[group["GroupId"]],
                                    Tags=[{"Key": "launch:deadline", "Value": "2020-01-01T00:00:00Z"}])
    calls.calls.clear()
    with pytest.raises(UsageError) as refused:
        repair.make_whole("d2", lambda line: None, [before[0]["PrivateIpAddress"]], probe=nobody_unreachable,
                          connect=fake_ssh().connect)
    assert refused.value.format_message() == (
        "cluster d2's --max-hours deadline 2020-01-01T00:00:00Z has passed: a repair launches nothing past it; "
        "`launch cluster up d2 --instance-type g5.12xlarge --count 3 --ssh-cidr 203.0.113.7/32 --max-hours H` gives "
        "the cluster a new deadline")
    assert calls.writes() == [] and len(running("d2")) == 3
    assert provision.CLOCK() > dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc)


def test_a_deadline_closer_than_the_repairs_own_waits_refuses_it_before_anything_is_terminated(moto_aws, calls):
    """Ten minutes left: the terminations and the quota's backoff may take longer, and instances terminated
    then could not be replaced."""
    from mxlaunch.errors import UsageError
    from mxlaunch.infra.cloud import provision
    from mxlaunch.infra.cloud.spec import deadline_text
    before = cluster("d3")
    soon = deadline_text(provision.CLOCK() + dt.timedelta(minutes=10))
    (group,) = [g for g in tagged_everything("d3")["security_groups"] if g["GroupName"] == "launch-d3"]
    plain_client("ec2").create_tags(Resources=[group["GroupId"]], Tags=[{"Key": "launch:deadline", "Value": soon}])
    calls.calls.clear()
    with pytest.raises(UsageError) as refused:
        repair.make_whole("d3", lambda line: None, [before[0]["PrivateIpAddress"]], probe=nobody_unreachable,
                          connect=fake_ssh().connect)
    assert f"deadline {soon} is less than 16 minutes away: a repair launches nothing past it" in \
        refused.value.format_message()
    assert calls.writes() == [] and len(running("d3")) == 3


@pytest.fixture
def sleeps(monkeypatch):
    from mxlaunch.infra.cloud import wait
    slept = []
    monkeypatch.setattr(wait, "SLEEP", slept.append)
    return slept


def quota_lines(lines) -> list:
    return [line for line in lines if "trying again" in line]


def test_a_quota_refusal_right_after_its_own_terminations_is_retried_with_backoff(moto_aws, calls, hooks, sleeps):
    before = cluster("q1", installed=False)
    hooks.append(FailCalls("RunInstances", times=2, code="VcpuLimitExceeded"))
    calls.calls.clear()
    lines = []
    done = repair.make_whole("q1", lines.append, [before[0]["PrivateIpAddress"]], probe=nobody_unreachable,
                             connect=fake_ssh().connect)
    assert len(done.launched) == 1 and len(running("q1")) == 3
    assert calls.writes() == ["TerminateInstances", "RunInstances", "RunInstances", "RunInstances"]
    assert quota_lines(lines) == [
        f"VcpuLimitExceeded: AWS may still count the 1 instance(s) this repair terminated toward the quota; trying "
        f"again in {delay} s (for about 5 minutes in all)" for delay in (15, 30)]
    assert [s for s in sleeps if s >= 15] == [15.0, 30.0]


def test_a_quota_refusal_that_lasts_gives_up_after_about_five_minutes(moto_aws, calls, hooks, sleeps):
    before = cluster("q2", installed=False)
    hooks.append(FailCalls("RunInstances", times=100, code="VcpuLimitExceeded"))
    calls.calls.clear()
    lines = []
    with pytest.raises(repair.QuotaExceeded) as caught:
        repair.make_whole("q2", lines.append, [before[0]["PrivateIpAddress"]], probe=nobody_unreachable,
                          connect=fake_ssh().connect)
    assert caught.value.exit_code == Exit.AWS_QUOTA and "VcpuLimitExceeded" in caught.value.format_message()
    assert len(calls.params("RunInstances")) == 1 + len(repair.QUOTA_BACKOFF) == 7
    assert [s for s in sleeps if s >= 15] == list(repair.QUOTA_BACKOFF) and 240 <= sum(repair.QUOTA_BACKOFF) <= 300
    assert len(quota_lines(lines)) == 6 and len(running("q2")) == 2


def test_a_quota_refusal_without_terminations_of_its_own_is_not_retried(moto_aws, calls, hooks, sleeps):
    before = cluster("q3", installed=False)
    plain_client("ec2").terminate_instances(InstanceIds=[before[0]["InstanceId"]])  # not by this repair
    hooks.append(FailCalls("RunInstances", times=1, code="VcpuLimitExceeded"))
    calls.calls.clear()
    lines = []
    with pytest.raises(repair.QuotaExceeded):
        repair.make_whole("q3", lines.append, probe=nobody_unreachable, connect=fake_ssh().connect)
    assert len(calls.params("RunInstances")) == 1 and not quota_lines(lines) and not [s for s in sleeps if s >= 15]


def test_a_quota_smaller_than_the_replacements_need_is_not_retried(moto_aws, calls, hooks, sleeps):
    """The preflight's refusal (the quota itself is too small): no wait helps, so none is spent."""
    from test_cluster_semantics import Answer, quota

    before = cluster("q4", installed=False)
    hooks.append(Answer("service-quotas", "GetServiceQuota", [quota("L-DB2E81BA", "On-Demand G", 0.0)], forever=True))
    calls.calls.clear()
    lines = []
    with pytest.raises(repair.QuotaExceeded) as caught:
        repair.make_whole("q4", lines.append, [before[0]["PrivateIpAddress"]], probe=nobody_unreachable,
                          connect=fake_ssh().connect)
    assert "1 x g5.12xlarge need 48 vCPUs but your quota" in caught.value.format_message()
    assert not calls.params("RunInstances") and not quota_lines(lines) and not [s for s in sleeps if s >= 15]


def test_a_terminate_that_aws_answers_not_found_is_sent_again_for_what_it_shows(moto_aws, calls, hooks):
    """Eventual consistency: TerminateInstances may not know an id DescribeInstances shows; the repair goes on."""
    before = cluster("r9")
    lost = before[2]["InstanceId"]
    refusal = FailCalls("TerminateInstances", times=1, code="InvalidInstanceID.NotFound")
    hooks.append(refusal)
    done = repair.make_whole("r9", [].append, probe=lambda instances: [i for i in instances if i.id == lost],
                             connect=fake_ssh().connect)
    assert refusal.refused == [{"InstanceIds": [lost]}]
    assert done.terminated == (lost,) and len(done.launched) == 1
    ids = {i["InstanceId"] for i in running("r9")}
    assert len(ids) == 3 and lost not in ids
