"""Records as data (mxlaunch/records.py): one frozen dataclass per file is the shape it is written in and the
check it is read with — job.yaml (launcher/jobs/job_record.py), launcher.json and the detached start records
(launcher/jobs/launcher_record.py), cluster.json (infra/cloud/local_state.py). What a user sees: the files,
and one line naming the file and the field when one is damaged."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import pytest
import yaml

from mxlaunch.errors import CommandError
from mxlaunch.infra.transport.hosts import Host
from mxlaunch.infra.transport.ssh import SSHOptions
from mxlaunch.infra.transport.target import ssh_target
from mxlaunch.launcher.jobs import job_record, launcher_record as runstate
from mxlaunch.launcher.jobs.job_record import JobRecord, SSHRecord
from mxlaunch.launcher.jobs.plan import JobSpec, plan_job
from mxlaunch.records import RecordError, Word, dump, expect, load, valid_fields

pytestmark = pytest.mark.timeout(60)
SECRET = "s3cr3t-v4lue-9f2"


@dataclass(frozen=True)
class Inner:
    name: str
    size: Optional[int] = expect("a whole number >= 0", lambda n: n >= 0, default=None)


@dataclass(frozen=True)
class Outer:
    count: int = expect("a whole number >= 1", lambda n: n >= 1)
    words: Tuple[Word, ...] = ()
    env: Dict[str, Word] = expect("a mapping of names to values", default_factory=dict)
    inner: Optional[Inner] = None
    items: Tuple[Inner, ...] = ()
    ratio: Optional[float] = None
    flag: bool = False


def problem(data) -> str:
    with pytest.raises(RecordError) as caught:
        load(Outer, data)
    return str(caught.value)


def test_a_record_loads_what_it_dumps_and_takes_hand_written_numbers_as_words():
    record = Outer(count=2, words=("fit", "--lr", "0.1"), env={"A": "1"}, inner=Inner("x", 3),
                   items=(Inner("a"), Inner("b", 0)), ratio=0.5, flag=True)
    data = dump(record)
    assert list(data) == ["count", "words", "env", "inner", "items", "ratio", "flag"]  # field order
    assert data["words"] == ["fit", "--lr", "0.1"] and data["items"][1] == {"name": "b", "size": 0}
    assert load(Outer, json.loads(json.dumps(data))) == record
    assert load(Outer, yaml.safe_load(yaml.safe_dump(data))) == record
    assert load(Outer, {"count": 1, "words": ["--lr", 0.1, 3], "env": {"N": 4}}) == Outer(
        count=1, words=("--lr", "0.1", "3"), env={"N": "4"})
    assert load(Outer, {"count": 1, "ratio": 2}).ratio == 2.0 and load(Outer, {"count": 1, "new": "x"}).count == 1


@pytest.mark.parametrize("data, said", [
    ([1], "not a mapping"),
    ({}, "count: missing (expected a whole number >= 1)"),
    ({"count": 0}, "count: expected a whole number >= 1, got 0"),
    ({"count": True}, "count: expected a whole number >= 1, got True"),
    ({"count": "x" * 100}, "count: expected a whole number >= 1, got '" + "x" * 39 + "..."),
    ({"count": 1, "words": "fit"}, "words: expected a list"),
    ({"count": 1, "words": [True]}, "words: expected a list"),
    ({"count": 1, "env": {"TOKEN": [SECRET]}}, "env: expected a mapping of names to values"),
    ({"count": 1, "env": {1: "x"}}, "env: expected a mapping of names to values"),
    ({"count": 1, "inner": "x"}, "inner: expected a mapping"),
    ({"count": 1, "inner": {"size": 1}}, "inner.name: missing (expected text)"),
    ({"count": 1, "items": [{"name": "a"}, {"name": "b", "size": -1}]}, "items[1].size: expected a whole number >= 0, got -1"),
    ({"count": 1, "ratio": float("nan")}, "ratio: expected a number, got nan"),
    ({"count": 1, "flag": "yes"}, "flag: expected true or false, got 'yes'"),
])
def test_a_wrong_field_is_named_and_only_a_single_value_is_repeated(data, said):
    assert problem(data) == said


def test_valid_fields_keeps_each_field_that_is_valid_alone():
    assert valid_fields(Outer, {"count": 0, "words": ["a"], "inner": {"name": 5}, "flag": True}) == {
        "words": ("a",), "flag": True}
    assert valid_fields(Outer, "not a mapping") == {}


# ------------------------------------------------------------------------------------------------ job.yaml

def _plan(tmp_path):
    hosts = (Host("10.0.0.1", user="ubuntu", slots=1), Host("10.0.0.2", port=2222, slots=1))
    spec_ = JobSpec(command=("python", "train.py", "--lr", "0.1", "ünï", ""), num_workers=2, num_servers=1, hosts=hosts,
                    local=False, env=(("API_TOKEN", SECRET), ("DB", f"postgres://bob:{SECRET}@db/x")),
                    env_worker=(("W", "1"),), workdir="/efs/work", timeout=60.0, watch_spot=True)
    return plan_job(spec_, "j1", str(tmp_path / "run"), 20001, remote_run_dir="/efs/work/runs/run-j1")


def test_job_yaml_is_its_record_in_a_readable_order_with_secrets_masked(tmp_path):
    target = ssh_target((), "/efs/work", "/efs/venv/bin/python", SSHOptions(key="/k", user="ubuntu"), gpus_per_host=4)
    record = job_record.of_plan(_plan(tmp_path), "/efs/work", target)
    text = job_record.text(record)
    assert text.startswith("# mxlaunch job plan") and SECRET not in text
    data = yaml.safe_load(text)
    assert list(data)[:4] == ["mode", "command", "num_workers", "num_servers"] and list(data)[-1] == "roles"
    assert data["env"] == {"API_TOKEN": "***", "DB": "postgres://bob:***@db/x"} and data["env_worker"] == {"W": "1"}
    assert data["hosts"] == ["ubuntu@10.0.0.1 slots=1", "10.0.0.2:2222 slots=1"]
    assert data["target"] == {"cluster": None, "python": "/efs/venv/bin/python", "gpus_per_host": 4,
                              "ssh": {"user": "ubuntu", "key": "/k", "known_hosts": None, "config": "~/.ssh/config",
                                      "accept_new": False}}
    assert [r["env"]["API_TOKEN"] for r in data["roles"]] == ["***"] * 4
    assert "\ncommand:\n- python\n- train.py\n- --lr\n- '0.1'\n- ünï\n- ''\nnum_workers: 2\n" in text  # one per line
    assert load(JobRecord, data) == record  # what it writes is what it reads


def test_a_record_without_an_ssh_config_keeps_ssh_s_own_default():
    """A job.yaml from before `config` was recorded uses SSH's default config, as SSHOptions does; a recorded
    null means none."""
    assert SSHRecord().config == SSHOptions().config_path
    assert load(SSHRecord, {"config": None}).config is None


def test_launch_runs_shows_what_is_valid_of_a_damaged_job_yaml(tmp_path):
    run = tmp_path / "r1"
    run.mkdir()
    (run / "job.yaml").write_text("mode: hosts\nnum_workers: many\nroles: [{name: worker-0, host: 10.0.0.1}]\n")
    proc = subprocess.run([sys.executable, "-m", "mxlaunch.launcher", "runs", "--dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[1].split()[:1] + proc.stdout.splitlines()[1].split()[3:6] == [
        "r1", "hosts", "1", "-"]  # its mode and hosts; workers unreadable: "-"


# -------------------------------------------------------------------------------------------- launch records

def test_a_launcher_record_is_its_dataclass_on_disk(tmp_path):
    runstate.record_launcher(str(tmp_path))
    with open(runstate.launcher_path(str(tmp_path))) as f:
        data = json.load(f)
    assert list(data) == ["pid", "process_start", "boot_id", "hostname", "started", "cluster", "console", "address"]
    record = runstate.read_launcher(str(tmp_path))
    assert record == runstate.LauncherRecord(**data) and record.pid == os.getpid() and runstate.is_alive(record)


@pytest.mark.parametrize("change", [{"pid": "12"}, {"process_start": "x"}, {"hostname": 5}, {"started": 1},
                                    {"cluster": ["a"]}, {"cluster": "../../home"}, {"cluster": "a/b"}])
def test_a_damaged_launcher_record_is_no_record(tmp_path, change):
    """Fail closed: `launch stop` acts on no process it cannot name for sure (exit 1, one line)."""
    (tmp_path / "job.yaml").write_text("job_id: x\n")
    data = {"pid": os.getpid(), "process_start": runstate.process_start(os.getpid()), **change}
    with open(runstate.launcher_path(str(tmp_path)), "w") as f:
        json.dump(data, f)
    assert runstate.read_launcher(str(tmp_path)) is None
    proc = subprocess.run([sys.executable, "-m", "mxlaunch.launcher", "stop", str(tmp_path)], capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
    assert "no readable launcher record (launcher.json missing or damaged)" in proc.stderr


# ------------------------------------------------------------------------------------------------ cluster.json

@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("MXLAUNCH_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_cluster_json_is_written_and_read_as_its_record(home):
    from mxlaunch.infra.cloud import local_state as state

    assert state.read_meta("c1") == state.ClusterMeta()  # none yet: every field unknown
    state.write_meta("c1", region="eu-west-1", instance_type="g5.12xlarge", count=2, spot=True, max_hours=2)
    state.write_meta("c1", extra="cpu")  # a later write keeps what is there
    meta = state.read_meta("c1")
    assert (meta.region, meta.count, meta.spot, meta.max_hours, meta.extra) == ("eu-west-1", 2, True, 2.0, "cpu")
    assert json.loads(state.meta_path("c1").read_text())["instance_type"] == "g5.12xlarge"
    with pytest.raises(TypeError):
        state.write_meta("c1", regoin="x")  # a field that does not exist is a bug, never a silent key


@pytest.mark.parametrize("text, said", [
    ('{"count": "two"}', "count: expected a whole number >= 1, got 'two'"),
    ('{"region": 5}', "region: expected text, got 5"),
    ('["x"]', "not a mapping"),
    ('{"count": ', "Expecting value"),
])
def test_a_damaged_cluster_json_is_one_line_naming_the_file_and_the_field(home, text, said):
    from mxlaunch.infra.cloud import local_state as state

    state.cluster_dir("c1").mkdir(parents=True)
    state.meta_path("c1").write_text(text)
    with pytest.raises(CommandError, match="cannot read .*cluster.json: ") as caught:
        state.read_meta("c1")
    assert said in caught.value.format_message()
    # before any AWS call (the cluster's region is in that file): one line, exit 1
    proc = subprocess.run([sys.executable, "-m", "mxlaunch.launcher", "train", "--cluster", "c1", "-n", "1",
                           "--dry-run", "--", "true"], capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, MXLAUNCH_HOME=str(home)))
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and said in proc.stderr, proc.stderr
    assert str(state.meta_path("c1")) in proc.stderr
