"""The whole `launch cluster` CLI, in a separate process, against a moto SERVER on 127.0.0.1 reached over HTTP
through AWS_ENDPOINT_URL (boto3's own configuration), not in-process mocks.

The server, the CLI runner and its one shim (placement groups): tests/fixtures_moto.py.
"""
from __future__ import annotations

import pytest

from aws_fixtures import AMI, CIDR, tagged_everything
from fixtures_moto import cli

pytestmark = [pytest.mark.aws, pytest.mark.timeout(120)]
def test_whole_cli_over_http_against_a_moto_server(env, moto_server, tmp_path):
    up = ["cluster", "up", "srv", "--instance-type", "g6.xlarge", "--count", 3, "--ssh-cidr", CIDR, "--ami", AMI,
          "--no-placement-group", "--wait", "running", "--max-hours", "1", "--yes"]
    code, out, err = cli(env, *up)
    assert code == 0, err
    held = tagged_everything("srv", endpoint_url=moto_server)
    instances, fss = held["instances"], held["file_systems"]
    assert len(instances) == 3 and {i["InstanceType"] for i in instances} == {"g6.xlarge"}
    assert len(held["security_groups"]) == 2 and len(held["key_pairs"]) == 1
    assert len(fss) == 1 and fss[0]["Encrypted"] and len(held["mount_targets"]) == 1
    home = tmp_path / "home" / "clusters" / "srv"
    assert oct((home / "id_key").stat().st_mode & 0o777) == "0o600"
    hosts = sorted(line.split()[0] for line in (home / "hosts").read_text().splitlines() if not line.startswith("#"))
    assert hosts == sorted(f"ubuntu@{i['PrivateIpAddress']}" for i in instances)

    code, out, err = cli(env, *up)  # idempotent
    assert code == 0 and "nothing to create" in err
    assert len(tagged_everything("srv", endpoint_url=moto_server)["instances"]) == 3

    code, out, err = cli(env, "cluster", "status", "srv")
    assert code == 0 and out.count("running") == 3 and "1 x NVIDIA L4" in out
    code, out, err = cli(env, "cluster", "list")
    assert code == 0 and "srv" in out and "running:3" in out
    code, out, err = cli(env, "cluster", "hostfile", "srv")
    assert code == 0 and sorted(line.split()[0] for line in out.splitlines() if not line.startswith("#")) == hosts
    code, out, err = cli(env, "cluster", "ssh", "srv", "2", "--print")
    assert code == 0 and out.strip() == f"ssh -F {home / 'ssh_config'} srv-2"

    code, out, err = cli(env, "cluster", "up", "bad", "--instance-type", "p2.xlarge", "--count", 1, "--ssh-cidr", CIDR,
                         "--wait", "none", "--yes")
    assert code == 2 and err.strip() == ("launch: error: instance type p2.xlarge (1 x NVIDIA K80 12GB) is retired by "
                                         "AWS; use --instance-type g5.xlarge (1 GPU, NVIDIA A10G 24GB)")

    code, out, err = cli(env, "cluster", "down", "srv", "--yes")
    assert code == 0, err
    assert "3 instance(s)" in out and "EFS file system" in out and "key pair launch-srv" in out
    assert not any(tagged_everything("srv", endpoint_url=moto_server).values())
    assert not home.exists()
    code, out, err = cli(env, "cluster", "down", "srv", "--yes")
    assert code == 0 and "nothing to remove" in out
