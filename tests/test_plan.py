"""The job plan is pure data: roles, hosts, ports and every role's environment, without processes."""
import os
import struct
import random
import socket

import pytest
import yaml

from mxlaunch.launcher.jobs import resume
from mxlaunch.exits import Exit
from mxlaunch.launcher.jobs import ports, rundir
from mxlaunch.errors import UsageError
from mxlaunch.infra.transport.hosts import Host, parse_hosts
from mxlaunch.launcher.jobs.plan import JobSpec, masked, parse_env_pair, plan_job

EMPTY_PARAMS = struct.pack("<QQQQ", 0x112, 0, 0, 0)  # a whole MXNet .params file holding no arrays


def local_spec(**kw):
    base = dict(command=("python", "train.py"), num_workers=2, num_servers=1, hosts=(Host.loopback(slots=2),))
    base.update(kw)
    return JobSpec(**base)


def test_local_plan_has_every_role_with_the_dmlc_environment():
    plan = plan_job(local_spec(), job_id="j1", run_dir="/runs/r", port=23456, local_cpus=4)
    assert [r.name for r in plan.roles] == ["scheduler", "server-0", "worker-0", "worker-1"]
    assert [r.label for r in plan.roles] == ["scheduler", "server 0", "worker 0", "worker 1"]
    for role in plan.roles:
        env = role.env_dict()
        assert env["DMLC_ROLE"] == role.kind
        assert env["DMLC_PS_ROOT_URI"] == env["DMLC_NODE_HOST"] == "127.0.0.1"
        assert env["DMLC_PS_ROOT_PORT"] == "23456"
        assert (env["DMLC_NUM_SERVER"], env["DMLC_NUM_WORKER"]) == ("1", "2")
        assert env["LAUNCH_RUN_DIR"] == "/runs/r" and env["LAUNCH_JOB_ID"] == "j1"
        assert env["LAUNCH_ROLE"] == role.name
    # several MXNet processes share this machine's cores: servers get one thread, workers a fair share
    assert plan.role("server-0").env_dict()["OMP_NUM_THREADS"] == "1"
    assert plan.role("worker-1").env_dict()["OMP_NUM_THREADS"] == "2"
    assert plan_job(local_spec(), "j1", "/runs/r", 23456, 4) == plan  # pure: same inputs, same plan
    # a worker with `--cpus 2` runs two engine pools: its share is halved again
    devices = plan_job(local_spec(command=("trainer", "fit", "--data-train", "t.rec", "--cpus", "2")), "j1", "/runs/r", 23456, 8)
    assert devices.role("worker-1").env_dict()["OMP_NUM_THREADS"] == "2"  # 8 cores / (2 workers x 2 contexts)
    assert plan_job(local_spec(command=("python", "x.py", "--cpus", "2")), "j1", "/r", 23456, 8).role(
        "worker-1").env_dict()["OMP_NUM_THREADS"] == "4"  # not the trainer: its --cpus means nothing to us


def test_user_environment_layers_and_role_specific_values():
    spec = local_spec(env=(("A", "all"), ("OMP_NUM_THREADS", "3"), ("B", "all")),
                      env_worker=(("B", "worker"),), env_server=(("C", "server"),))
    plan = plan_job(spec, "j", "/r", 20001, local_cpus=2)
    worker, server, scheduler = plan.role("worker-0").env_dict(), plan.role("server-0").env_dict(), plan.scheduler.env_dict()
    assert (worker["A"], worker["B"], worker["OMP_NUM_THREADS"]) == ("all", "worker", "3")
    assert "C" not in worker and server["C"] == "server" and server["B"] == "all"
    assert scheduler["A"] == "all" and "C" not in scheduler


def test_hosts_plan_places_scheduler_first_and_workers_by_slots():
    hosts = parse_hosts("10.0.0.1 slots=2,10.0.0.2:2222,ubuntu@10.0.0.3")
    spec = local_spec(hosts=hosts, local=False, num_workers=3, num_servers=2)
    plan = plan_job(spec, "j", "/r", 20001, local_cpus=8)
    assert plan.scheduler.host.address == "10.0.0.1"
    # by hostfile slots, numbered in ps-lite's rank order (address descending as text): worker-i is rank i
    assert [r.host.address for r in plan.workers] == ["10.0.0.2", "10.0.0.1", "10.0.0.1"]
    assert [plan.role(f"server-{i}").host.address for i in range(2)] == ["10.0.0.1", "10.0.0.2"]
    for role in plan.roles:
        assert role.env_dict()["DMLC_PS_ROOT_URI"] == "10.0.0.1"
        assert role.env_dict()["DMLC_NODE_HOST"] == role.host.address
    assert "OMP_NUM_THREADS" not in plan.role("worker-0").env_dict()  # remote cores are unknown here


@pytest.mark.parametrize("text, expected", [
    ("K=V", ("K", "V")), ("K=", ("K", "")), ("K=a=b c", ("K", "a=b c")), ("_K1=ü $x;'\"", ("_K1", "ü $x;'\"")),
])
def test_env_pairs_keep_values_byte_for_byte(text, expected):
    assert parse_env_pair(text) == expected


@pytest.mark.parametrize("text, needle", [
    ("NOEQUALS", "expected KEY=VALUE"), ("1BAD=x", "not a valid"), ("A B=x", "not a valid"),
    ("DMLC_PS_ROOT_PORT=1", "set by the launcher"), ("LAUNCH_JOB_ID=x", "set by the launcher"),
])
def test_bad_env_pairs_are_usage_errors(text, needle):
    with pytest.raises(UsageError, match=needle) as info:
        parse_env_pair(text)
    assert info.value.exit_code == Exit.USAGE


@pytest.mark.parametrize("kw, needle", [
    ({"num_workers": 0}, "at least 1"), ({"num_servers": 0}, "at least 1"), ({"command": ()}, "missing command"),
    ({"timeout": 0}, "--timeout"),
])
def test_invalid_specs_are_refused(kw, needle):
    with pytest.raises(UsageError, match=needle):
        plan_job(local_spec(**kw), "j", "/r", 20001)


def test_secret_looking_values_are_masked():
    env = {"AWS_SECRET_ACCESS_KEY": "x", "API_TOKEN": "y", "DB_PASSWORD": "z", "SSH_KEY": "k", "MONKEY": "ok",
           "LR": "0.1"}
    assert masked(env) == {"AWS_SECRET_ACCESS_KEY": "***", "API_TOKEN": "***", "DB_PASSWORD": "***",
                           "SSH_KEY": "***", "MONKEY": "ok", "LR": "0.1"}


def test_job_yaml_round_trips_the_plan_with_secrets_masked():
    command = ("python", "t.py", "a b", "it's", 'q"uote', "$HOME", "ünï", "x,y", "")
    spec = local_spec(command=command, env=(("MY_TOKEN", "hunter2"), ("NOTE", "a: b # c")))
    plan = plan_job(spec, "j", "/r", 20001, local_cpus=2)
    text = rundir.render_plan(plan, workdir="/w")
    data = yaml.safe_load(text)
    assert data["command"] == list(command) and data["job_id"] == "j" and data["workdir"] == "/w"
    assert data["scheduler"] == {"host": "127.0.0.1", "port": 20001}
    assert data["env"] == {"MY_TOKEN": "***", "NOTE": "a: b # c"} and "hunter2" not in text
    assert [r["name"] for r in data["roles"]] == [r.name for r in plan.roles]
    assert data["roles"][2]["env"] == masked(plan.role("worker-0").env_dict())


def test_scheduler_port_is_outside_the_ephemeral_range_and_avoids_listeners():
    low, high = ports.ephemeral_range()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    try:
        assert listener.getsockname()[1] in ports.listening_ports()
        rng = random.Random(7)
        for _ in range(50):
            port = ports.choose_port(rng, avoid=[20000])
            assert not (low <= port <= high) and port != 20000 and port not in ports.listening_ports()
    finally:
        listener.close()


def test_bind_failure_is_recognised_in_the_scheduler_log():
    assert ports.bind_failed(["MXNetError: Check failed: my_node_.port != -1 (-1 vs. -1) : bind failed"])
    assert not ports.bind_failed(["Bind to role=scheduler, id=1, ip=127.0.0.1, port=23456"])


def test_resume_spec_loads_the_job_with_the_newest_checkpoint(tmp_path):
    ckpt = tmp_path / "ck"
    ckpt.mkdir()
    for n in (1, 2, 9):  # (10, the trainer's default --num-epochs, would be a finished run: nothing to resume)
        (ckpt / f"m-{n:04d}.params").write_bytes(EMPTY_PARAMS)
    (ckpt / "m-symbol.json").write_text("{}")
    spec = local_spec(command=("trainer", "fit", "--data-train", "t.rec", "--model-prefix", "ck/m", "--load-epoch", "1"),
                      env=(("A", "1"),))
    run_dir = str(tmp_path / "run")
    rundir.prepare(run_dir)
    rundir.write_plan_files(plan_job(spec, "j", run_dir, 20001), workdir=str(tmp_path))
    resumed, where = resume.resume_spec(run_dir)
    assert resumed.command == ("trainer", "fit", "--data-train", "t.rec", "--model-prefix", "ck/m", "--load-epoch", "9")
    assert resumed.env == (("A", "1"),) and resumed.num_workers == 2 and resumed.local
    assert where == os.path.abspath(run_dir)
    with pytest.raises(UsageError, match="already holds a job"):
        rundir.prepare(run_dir)


def test_scheduler_keeps_its_bind_report_when_the_user_silences_ps_lite():
    plan = plan_job(local_spec(env=(("PS_VERBOSE", "0"),)), "j", "/r", 20001)
    assert plan.scheduler.env_dict()["PS_VERBOSE"] == "1"
    assert plan.role("worker-0").env_dict()["PS_VERBOSE"] == "0"
    plan = plan_job(local_spec(env=(("PS_VERBOSE", "2"),)), "j", "/r", 20001)
    assert plan.scheduler.env_dict()["PS_VERBOSE"] == "2"
