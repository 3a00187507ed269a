"""A moto SERVER on 127.0.0.1 and the whole `launch` CLI run against it in a separate process, over HTTP through
AWS_ENDPOINT_URL (boto3's own configuration), not in-process mocks. A plugin of tests/conftest.py.

    def test_x(env, moto_server):       # env: the CLI's environment (fake credentials, the server's endpoint)
        code, out, err = cli(env, "cluster", "up", ...)

The one shim: moto 5 implements no placement-group API, so the child process answers those three calls
locally (testkit/aws.py); a cluster may also run with --no-placement-group. Every other call goes over
HTTP to the server.
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from aws_fixtures import REGION, teach_moto
from testkit.procs import OWNER_KEY

SHIM = """
import sys
import mxlaunch.infra.cloud.aws, mxlaunch.infra.cloud.wait
from testkit.aws import FakePlacementGroups
from mxlaunch.launcher.cli import main
pgs, original = FakePlacementGroups(), mxlaunch.infra.cloud.aws.Aws.client
def client(self, service):
    c = original(self, service)
    pgs.install(c) if service == "ec2" and not getattr(c, "_pg", False) else None
    c._pg = True
    return c
mxlaunch.infra.cloud.aws.Aws.client = client
mxlaunch.infra.cloud.wait.SLEEP = lambda seconds: None
main(sys.argv[1:])  # the real `launch` entry point
"""


@pytest.fixture
def moto_server():
    from moto.server import ThreadedMotoServer
    teach_moto()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    assert host == "127.0.0.1"
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def env(tmp_path, moto_server):
    keep = {k: v for k, v in os.environ.items()  # none of the user's settings; the test run's owner mark stays
            if not k.startswith(("AWS_", "MXLAUNCH_", "XDG_CONFIG")) or k == OWNER_KEY}
    keep.update(AWS_ENDPOINT_URL=moto_server, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
                AWS_DEFAULT_REGION=REGION, AWS_CONFIG_FILE=str(tmp_path / "none"),
                AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"), AWS_EC2_METADATA_DISABLED="true",
                MXLAUNCH_HOME=str(tmp_path / "home"), NO_PROXY="127.0.0.1", no_proxy="127.0.0.1")
    return keep


def cli(env, *args):
    proc = subprocess.run([sys.executable, "-c", SHIM, *map(str, args)], env=env, capture_output=True, text=True,
                          timeout=60)
    return proc.returncode, proc.stdout, proc.stderr
