"""Role names are made and read in one place (`RoleId`): names, labels, parsing and order agree everywhere."""
import pytest

from mxlaunch.launcher.cli import logs as logs_cmd
from mxlaunch.infra.transport.hosts import Host
from mxlaunch.launcher.jobs.plan import JobSpec, plan_job
from mxlaunch.infra.transport.roles import SCHEDULER_ID, RoleId


def test_names_labels_and_parse_round_trip():
    assert [(r.name, r.label) for r in (SCHEDULER_ID, RoleId("server", 0), RoleId("worker", 12))] == [
        ("scheduler", "scheduler"), ("server-0", "server 0"), ("worker-12", "worker 12")]
    for role in (SCHEDULER_ID, RoleId("server", 3), RoleId("worker", 0)):
        assert RoleId.parse(role.name) == role


@pytest.mark.parametrize("text", ["", "scheduler-0", "worker", "worker-", "worker-01", "worker--1", "worker-x",
                                  "worker-²", "chief-0", "notes"])
def test_parse_refuses_what_is_not_a_role_name(text):
    with pytest.raises(ValueError):
        RoleId.parse(text)


def test_bad_values_are_refused():
    for kind, index in (("chief", 0), ("worker", -1), ("scheduler", 1)):
        with pytest.raises(ValueError):
            RoleId(kind, index)


def test_order_is_the_start_order():
    shuffled = [RoleId("worker", 10), RoleId("server", 1), RoleId("worker", 2), SCHEDULER_ID, RoleId("server", 0)]
    assert [r.name for r in sorted(shuffled)] == ["scheduler", "server-0", "server-1", "worker-2", "worker-10"]


def test_plan_roles_use_the_same_names():
    spec = JobSpec(command=("python", "train.py"), num_workers=2, num_servers=2, hosts=(Host.loopback(slots=2),))
    plan = plan_job(spec, job_id="j1", run_dir="/runs/r", port=23456)
    assert [r.id for r in plan.roles] == sorted(r.id for r in plan.roles)  # planned in start order
    assert all(r.env_dict()["LAUNCH_ROLE"] == r.id.name == r.name for r in plan.roles)


def test_logs_lists_roles_in_start_order_and_other_files_last(tmp_path):
    (tmp_path / "logs").mkdir()
    for name in ("worker-10", "worker-2", "notes", "server-0", "scheduler"):
        (tmp_path / "logs" / f"{name}.log").write_text("")
    assert logs_cmd._roles(str(tmp_path)) == ["scheduler", "server-0", "worker-2", "worker-10", "notes"]
    assert [logs_cmd._label(n) for n in ("worker-10", "scheduler", "notes")] == [
        "[worker 10] ", "[scheduler] ", "[notes] "]
