"""`launch train --cluster NAME`: hosts, interpreter, EFS workdir and GPUs come from the cluster (moto, dry run)."""
from __future__ import annotations

import click
from click.testing import CliRunner

from aws_fixtures import aws_env, hooks, launch, moto_aws, moto_module, plain_client, up_args  # noqa: F401


def launch_train(*args):
    from mxlaunch.errors import run_cli
    from mxlaunch.launcher.train_cmd import train

    root = click.Group("launch", commands={"train": train})
    with CliRunner().isolation() as streams:
        try:
            run_cli(root, "launch", [str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        return code, streams[0].getvalue().decode(), streams[1].getvalue().decode()


def test_train_on_a_cluster_takes_its_hosts_python_workdir_and_gpus(moto_aws):
    assert launch(*up_args("trainc", 2)).code == 0
    private = sorted(i["PrivateIpAddress"] for r in plain_client("ec2").describe_instances(
        Filters=[{"Name": "tag:launch:cluster", "Values": ["trainc"]},
                 {"Name": "instance-state-name", "Values": ["running"]}])["Reservations"] for i in r["Instances"])
    code, out, err = launch_train("train", "--cluster", "trainc", "-n", 2, "-s", 1, "--dry-run", "--",
                                  "trainer", "fit", "--data-train", "/efs/data/train.rec")
    assert code == 0, err
    for address in private:  # roles address each other by private IP (the security group admits only members)
        assert f'"DMLC_NODE_HOST": "{address}"' in out
    assert "/efs/mxlaunch/venv/bin/python" in out
    assert "/efs/mxlaunch/work" in out
    assert '"--gpus", "0,1,2,3"' in out  # g5.12xlarge: 4 GPUs per host, from the catalog

    code, out, _ = launch_train("train", "--cluster", "trainc", "-n", 2, "--dry-run", "--",
                                "trainer", "fit", "--gpus", "0", "--data-train", "/efs/data/train.rec")
    assert code == 0 and '"--gpus", "0,1,2,3"' not in out and '"--gpus", "0"' in out  # the user's own --gpus wins


def test_unknown_cluster_is_one_line(moto_aws):
    code, _, err = launch_train("train", "--cluster", "nosuch", "-n", 1, "--dry-run", "--", "trainer", "fit")
    assert code != 0 and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and "nosuch" in err
