"""`launch cluster down` and the cluster's local state: the private key and hostfile of a cluster go only
with the cluster, never with a `down` that searched another region (moto in-process)."""
from __future__ import annotations

import pytest

from aws_fixtures import TAG, launch, plain_client, tagged_everything, up_args

pytestmark = [pytest.mark.aws, pytest.mark.timeout(60)]


def test_down_in_another_region_is_refused_and_keeps_the_local_state_of_the_cluster_recorded_elsewhere(
        moto_aws, aws_env, monkeypatch):
    assert launch(*up_args("rk", 1, "--region", "eu-west-1")).code == 0
    local = aws_env / "mxlaunch-home" / "clusters" / "rk"
    key, meta = (local / "id_key").read_bytes(), (local / "cluster.json").read_bytes()
    # something tagged with the same name in another region (a leftover): it is not the recorded cluster
    plain_client("ec2", "us-west-2").create_key_pair(KeyName="launch-rk", TagSpecifications=[
        {"ResourceType": "key-pair", "Tags": [{"Key": TAG, "Value": "rk"}]}])
    r = launch("cluster", "down", "rk", "--region", "us-west-2", "--yes")
    assert r.code == 2 and r.out == ""
    (line,) = r.err.strip().splitlines()
    assert "cluster rk lives in account 123456789012 (aws), region eu-west-1" in line
    assert "region us-west-2: refusing to remove it, nothing was changed" in line
    assert (local / "id_key").read_bytes() == key and (local / "cluster.json").read_bytes() == meta
    assert tagged_everything("rk", region="us-west-2")["key_pairs"]
    # the leftover is someone's without local state here: another state directory and --force remove it
    monkeypatch.setenv("MXLAUNCH_HOME", str(aws_env / "elsewhere"))
    r = launch("cluster", "down", "rk", "--region", "us-west-2", "--yes", "--force")
    assert r.code == 0 and "removed key pair launch-rk" in r.out and "private key" not in r.out, r.err
    assert not tagged_everything("rk", region="us-west-2")["key_pairs"]
    assert tagged_everything("rk", region="eu-west-1")["instances"]
    monkeypatch.setenv("MXLAUNCH_HOME", str(aws_env / "mxlaunch-home"))
    r = launch("cluster", "down", "rk", "--yes")  # its own region, from the local state
    assert r.code == 0 and "private key" in r.out and not local.exists()
    assert not any(tagged_everything("rk", region="eu-west-1").values())
