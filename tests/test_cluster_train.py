"""`launch train --cluster NAME`: hosts, interpreter, EFS workdir and GPUs come from the cluster (moto, dry run)."""
from __future__ import annotations

import dataclasses

import pytest
import yaml

from aws_fixtures import launch, plain_client, up_args

pytestmark = pytest.mark.aws


def test_train_on_a_cluster_takes_its_hosts_python_workdir_and_gpus(moto_aws):
    assert launch(*up_args("trainc", 2)).code == 0
    private = sorted(i["PrivateIpAddress"] for r in plain_client("ec2").describe_instances(
        Filters=[{"Name": "tag:launch:cluster", "Values": ["trainc"]},
                 {"Name": "instance-state-name", "Values": ["running"]}])["Reservations"] for i in r["Instances"])
    code, out, err = launch("train", "--cluster", "trainc", "-n", 2, "-s", 1, "--dry-run", "--",
                            "trainer", "fit", "--data-train", "/efs/data/train.rec")
    assert code == 0, err
    for address in private:  # roles address each other by private IP (the security group admits only members)
        assert f'"DMLC_NODE_HOST": "{address}"' in out
    assert "/efs/mxlaunch/venv/bin/python" in out
    assert "/efs/mxlaunch/work" in out
    assert '"--gpus", "0,1,2,3"' in out  # g5.12xlarge: 4 GPUs per host, from the catalog

    code, out, _ = launch("train", "--cluster", "trainc", "-n", 2, "--dry-run", "--",
                          "trainer", "fit", "--gpus", "0", "--data-train", "/efs/data/train.rec")
    assert code == 0 and '"--gpus", "0,1,2,3"' not in out and '"--gpus", "0"' in out  # the user's own --gpus wins


def test_unknown_cluster_is_one_line(moto_aws):
    code, _, err = launch("train", "--cluster", "nosuch", "-n", 1, "--dry-run", "--", "trainer", "fit", "--data-train", "t.rec")
    assert code != 0 and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and "nosuch" in err


def test_a_flag_given_beats_the_clusters_value(moto_aws):
    assert launch(*up_args("trainf", 1)).code == 0
    code, out, err = launch("train", "--cluster", "trainf", "-n", 1, "--python", "/opt/other/bin/python",
                            "--workdir", "/scratch/job", "--dry-run", "--", "trainer", "fit", "--data-train", "t.rec")
    assert code == 0, err
    assert "/opt/other/bin/python" in out and "/efs/mxlaunch/venv/bin/python" not in out
    assert "/scratch/job" in out and "/efs/mxlaunch/work" not in out


def test_cluster_job_target_keeps_the_users_ssh_settings_and_always_its_ssh_config(tmp_path):
    from mxlaunch.infra.cloud.cluster_target import with_settings
    from mxlaunch.infra.transport.hosts import Host
    from mxlaunch.infra.transport.ssh import SSHOptions
    from mxlaunch.infra.transport.target import JobTarget

    own = SSHOptions(key=str(tmp_path / "id_key"), user="ubuntu", known_hosts=str(tmp_path / "kh"),
                     config_path=str(tmp_path / "ssh_config"))
    cluster = JobTarget(hosts=(Host("10.0.0.5", user="ubuntu"),), python="/efs/v/bin/python", workdir="/efs/w",
                        ssh=own, gpus_per_host=8, cluster="c")
    t = with_settings(cluster, None, None, SSHOptions(accept_new=True))
    assert (t.hosts, t.local, t.python, t.workdir, t.gpus_per_host, t.cluster) == (
        cluster.hosts, False, "/efs/v/bin/python", "/efs/w", 8, "c")
    assert t.ssh == SSHOptions(key=str(tmp_path / "id_key"), user="ubuntu", known_hosts=str(tmp_path / "kh"),
                               accept_new=True, config_path=str(tmp_path / "ssh_config"))
    mine = with_settings(cluster, "/w", "/p/python", SSHOptions(key="/k", user="me", known_hosts="/kh"))
    assert (mine.workdir, mine.python) == ("/w", "/p/python")
    assert (mine.ssh.key, mine.ssh.user, mine.ssh.known_hosts, mine.ssh.accept_new, mine.ssh.config_path) == (
        "/k", "me", "/kh", False, str(tmp_path / "ssh_config"))
    no_key = with_settings(dataclasses.replace(cluster, ssh=dataclasses.replace(own, key=None)), None, None, None)
    assert no_key.ssh.key is None  # the user's own --key-name: ssh finds it through the agent


def test_a_type_that_needs_fusion_off_gets_it_in_every_roles_environment(moto_aws):
    """L4 (g6, compute capability 8.9): MXNet's fusion would compile for compute_89 with NVRTC 11 -> off."""
    up = [a if a != "g5.12xlarge" else "g6.12xlarge" for a in up_args("fusion", 1)]
    assert launch(*up).code == 0
    code, out, err = launch("train", "--cluster", "fusion", "-n", 1, "--dry-run", "--", "trainer", "fit", "--data-train", "t.rec")
    assert code == 0, err
    plan = yaml.safe_load(out)  # job.yaml, then each host's exact remote commands
    assert [r["env"].get("MXNET_USE_FUSION") for r in plan["roles"]] == ["0", "0", "0"]  # scheduler, server, worker
    code, out, _ = launch("train", "--cluster", "fusion", "-n", 1, "--env", "MXNET_USE_FUSION=1", "--dry-run",
                          "--", "trainer", "fit", "--data-train", "t.rec")
    assert code == 0
    assert [r["env"].get("MXNET_USE_FUSION") for r in yaml.safe_load(out)["roles"]] == ["1", "1", "1"]  # --env wins


def test_a_type_the_wheel_runs_as_built_gets_no_fusion_setting(moto_aws):
    assert launch(*up_args("nofusion", 1)).code == 0  # g5.12xlarge: A10G, 8.6
    code, out, err = launch("train", "--cluster", "nofusion", "-n", 1, "--dry-run", "--", "trainer", "fit", "--data-train", "t.rec")
    assert code == 0 and "MXNET_USE_FUSION" not in out, err
