"""`launch cluster` in its own process against a moto SERVER on 127.0.0.1 (issue 10's acceptance): SIGTERM and
SIGHUP during `up` roll back like Ctrl-C; `down --region OTHER` is refused and keeps the key of a cluster that runs
elsewhere.
The moto server and the placement-group shim: tests/fixtures_moto.py."""
from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from aws_fixtures import AMI, CIDR, tagged_everything
from testkit.streams import Output
from fixtures_moto import SHIM, cli

pytestmark = [pytest.mark.aws, pytest.mark.timeout(120)]
# The child stops in RunInstances, after AWS answered and before `up` records the instances (the worst moment:
# only the tag finds them), and waits there (bounded) for the signal the test sends.
PAUSE = """
import select, sys, mxlaunch.infra.cloud.aws
_client = mxlaunch.infra.cloud.aws.Aws.client
def client(self, service):
    c = _client(self, service)
    if service == "ec2:once" and not getattr(c, "_paused", False):
        c._paused = True
        c.meta.events.register("after-call.ec2.RunInstances",
                               lambda **_: (print("paused in RunInstances", file=sys.stderr, flush=True),
                                            select.select([sys.stdin], [], [], 30)))
    return c
mxlaunch.infra.cloud.aws.Aws.client = client
"""


def up_args(name):
    return ["cluster", "up", name, "--instance-type", "g6.xlarge", "--count", 2, "--ssh-cidr", CIDR, "--ami",
            AMI, "--no-placement-group", "--wait", "running", "--yes"]


@pytest.mark.parametrize("signum, status, after", [
    (signal.SIGTERM, 143, "created security group"),  # wherever it lands, on the way to RunInstances
    (signal.SIGHUP, 129, "paused in RunInstances"),  # instances started, not yet recorded
])
def test_a_signal_during_up_rolls_back_everything(env, moto_server, signum, status, after):
    name = f"sig{signum}"
    proc = subprocess.Popen([sys.executable, "-c", PAUSE + SHIM, *map(str, up_args(name))], env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        err = Output(proc.stderr)
        lines = []
        while not lines or not lines[-1].startswith(after):
            lines.append(err.readline(timeout=30).decode().strip())
        proc.send_signal(signum)  # `up` cannot finish first: it waits in RunInstances for the signal
        rest = err.read_to_end(timeout=60).decode()
        assert proc.wait(timeout=30) == status, rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert rest.strip().splitlines()[-1] == f"launch: error: stopped by {signal.Signals(signum).name}"
    assert "removing what this run created" in rest
    if after.startswith("paused"):
        assert "removed 2 instance(s)" in rest
    assert not any(tagged_everything(name, endpoint_url=moto_server).values())


def test_down_in_another_region_is_refused_and_keeps_the_key_and_the_cluster(env, moto_server, tmp_path):
    code, out, err = cli(env, *up_args("far"))
    assert code == 0, err
    key = tmp_path / "home" / "clusters" / "far" / "id_key"
    held = key.read_bytes()
    code, out, err = cli(env, "cluster", "down", "far", "--region", "us-west-2", "--yes")
    assert code == 2 and out == "" and "region us-west-2: refusing to remove it" in err, err
    assert key.read_bytes() == held
    code, out, err = cli(env, "cluster", "status", "far")
    assert code == 0 and out.count("running") == 2, out
    code, out, err = cli(env, "cluster", "down", "far", "--yes")
    assert code == 0 and not key.exists(), err
    assert not any(tagged_everything("far", endpoint_url=moto_server).values())
