"""Everything that reaches a file path, a shell on an instance or an ssh config is validated first (one line,
exit 2, nothing written): cluster names, `launch train --cluster`, --ssh-user; wide --ssh-cidr warns; every
printed price names its date."""
from __future__ import annotations

from pathlib import Path

import pytest

from aws_fixtures import CIDR, launch
from mxlaunch.errors import UsageError
from mxlaunch.exits import Exit
from mxlaunch.infra.cloud import catalog, local_state as state
from mxlaunch.infra.cloud import spec as specs
from mxlaunch.infra.cloud.cluster_target import cluster_target


@pytest.mark.parametrize("name", ["../../x", "a/b", "c1\n", "C1", "-c", "", "x" * 32, "c1 ", ".."])
def test_bad_cluster_names_never_reach_the_file_system(name, tmp_path, monkeypatch):
    monkeypatch.setenv("MXLAUNCH_HOME", str(tmp_path / "home"))
    for use in (specs.validate_name, state.cluster_dir, state.read_meta, cluster_target):
        with pytest.raises(UsageError, match="bad cluster name"):
            use(name)
    assert not any(tmp_path.rglob("*"))


def test_train_cluster_with_a_path_is_refused_before_any_path_is_built(aws_env):
    r = launch("train", "--cluster", "../../x", "-n", 1, "--dry-run", "--", "trainer", "fit", "--data-train", "t.rec")
    assert r.code == Exit.USAGE and "bad cluster name '../../x'" in r.err and "Traceback" not in r.err
    assert len(r.err.strip().splitlines()) == 1
    assert not (aws_env / "x").exists() and not (aws_env / "mxlaunch-home").exists()


@pytest.mark.parametrize("user", ["root; reboot", "ubuntu\nProxyCommand touch /tmp/pwned", "Ubuntu", "$(id)",
                                  "ubuntu ", "u" * 33])
def test_ssh_user_must_be_a_login_name(user, aws_env):
    r = launch("cluster", "up", "inp", "--instance-type", "g5.xlarge", "--count", 1, "--ssh-cidr", CIDR,
               "--ssh-user", user, "--wait", "none", "--yes")
    assert r.code == Exit.USAGE and "bad --ssh-user" in r.err and len(r.err.strip().splitlines()) == 1
    with pytest.raises(UsageError, match="--ssh-user"):
        state.write_ssh_config("inp", [("inp-0", "10.0.0.1", "192.0.2.1")], user, None)
    assert not (aws_env / "mxlaunch-home").exists()


def test_ssh_config_paths_are_quoted_or_refused(tmp_path, monkeypatch):
    import paramiko
    monkeypatch.setenv("MXLAUNCH_HOME", str(tmp_path / "my home"))
    key = tmp_path / "my home" / "id_key"
    path = state.write_ssh_config("q", [("q-0", "10.0.0.1", "192.0.2.1")], "ubuntu", key)
    entry = paramiko.SSHConfig.from_path(str(path)).lookup("10.0.0.1")
    assert entry["identityfile"] == [str(key)] and entry["user"] == "ubuntu"
    assert entry["userknownhostsfile"] == str(state.known_hosts_path("q"))
    monkeypatch.setenv("MXLAUNCH_HOME", str(tmp_path / "100%"))
    with pytest.raises(Exception, match="MXLAUNCH_HOME"):
        state.write_ssh_config("q", [("q-0", "10.0.0.1", "192.0.2.1")], "ubuntu", None)


def test_cidrs_normalised_and_wide_ones_warned():
    assert specs.validate_cidr("2001:DB8::/32") == "2001:db8::/32"
    with pytest.raises(UsageError, match=r"host bits are set; did you mean 2001:db8::/32\?"):
        specs.validate_cidr("2001:DB8::1/32")
    assert specs.validate_cidr("198.51.100.4") == "198.51.100.4/32"
    assert specs.cidr_warning("10.0.0.0/8") is None and specs.cidr_warning(CIDR) is None
    assert "33,554,432 addresses" in specs.cidr_warning("10.0.0.0/7")
    assert "whole internet" in specs.cidr_warning("0.0.0.0/0")
    assert "whole internet" in specs.cidr_warning("::/0") and specs.cidr_warning("2001:db8::/32") is None


def test_every_price_estimate_names_its_date():
    assert catalog.PRICES_AS_OF == "2025-06"
    assert catalog.PRICES_AS_OF in catalog.price_text(catalog.lookup("g5.xlarge"), 2)
    assert catalog.lookup("p5.48xlarge").price_per_hour == 55.04  # June 2025: about -44%
    assert catalog.lookup("p4d.24xlarge").price_per_hour == 21.958  # about -33%
    r = launch("cluster", "types")
    assert r.code == 0 and f"us-east-1 list prices as of {catalog.PRICES_AS_OF}" in r.out
    source = (Path(__file__).parent.parent / "launcher" / "cli" / "cluster.py").read_text()
    assert "on-demand estimates)" not in source and "(estimate)" not in source  # every estimate via ESTIMATE
