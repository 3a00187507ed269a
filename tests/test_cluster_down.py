"""`launch cluster down` and the cluster's local state: the private key and hostfile of a cluster go only
with the cluster, never with a `down` that searched another region (moto in-process)."""
from __future__ import annotations

import pytest

from aws_fixtures import TAG, launch, plain_client, tagged_everything, up_args

pytestmark = [pytest.mark.aws, pytest.mark.timeout(60)]


def test_down_in_another_region_keeps_the_local_state_of_the_cluster_recorded_elsewhere(moto_aws, aws_env):
    assert launch(*up_args("rk", 1, "--region", "eu-west-1")).code == 0
    local = aws_env / "mxlaunch-home" / "clusters" / "rk"
    key = local / "id_key"
    assert key.exists()
    # something tagged with the same name in another region (a leftover): `down` there removes it, and only it
    plain_client("ec2", "us-west-2").create_key_pair(KeyName="launch-rk", TagSpecifications=[
        {"ResourceType": "key-pair", "Tags": [{"Key": TAG, "Value": "rk"}]}])
    r = launch("cluster", "down", "rk", "--region", "us-west-2", "--yes")
    assert r.code == 0, r.err
    assert "removed key pair launch-rk" in r.out and "private key" not in r.out
    assert f"kept the local state {local}: cluster rk is recorded in eu-west-1, not us-west-2" in r.err
    assert key.exists() and (local / "hosts").exists()
    assert not tagged_everything("rk", region="us-west-2")["key_pairs"]
    assert tagged_everything("rk", region="eu-west-1")["instances"]
    nothing = launch("cluster", "down", "rk", "--region", "us-west-2", "--yes")
    assert nothing.code == 0 and "nothing to remove" in nothing.out and key.exists()
    r = launch("cluster", "down", "rk", "--yes")  # its own region, from the local state
    assert r.code == 0 and "private key" in r.out and not local.exists()
    assert not any(tagged_everything("rk", region="eu-west-1").values())
