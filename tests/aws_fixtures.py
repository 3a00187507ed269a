"""Fixtures of the `launch cluster` tests: fake AWS credentials and region, a private MXLAUNCH_HOME, moto,
instant waits, a CLI runner that shows what a user sees (one line + exit status), and small botocore event
hooks for what moto lacks (placement groups; capacity errors on demand). A plugin of tests/conftest.py
(`pytest_plugins`): its fixtures reach every test module; modules import only its helpers and constants.

Never: the user's ~/.aws, a real AWS endpoint, or any non-loopback address (moto's instance addresses are made
up; tests use --wait running/none and never connect to them).
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import boto3
import pytest
from click.testing import CliRunner

from testkit.aws import FakePlacementGroups, HttpStub

REGION = "us-east-1"
AMI = "ami-dca37ea5"  # one of moto's own images: `up` reads the image (DescribeImages) first
CIDR = "203.0.113.7/32"
TAG = "launch:cluster"


@pytest.fixture
def aws_env(tmp_path, monkeypatch):
    """Fake credentials and region; no shared config, no IMDS, no endpoint override; MXLAUNCH_HOME in tmp."""
    for var in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN", "AWS_REGION",
                "AWS_SECURITY_TOKEN", "AWS_ENDPOINT_URL_EC2", "AWS_ENDPOINT_URL_EFS", "AWS_ENDPOINT_URL_SSM",
                "XDG_CONFIG_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("MXLAUNCH_HOME", str(tmp_path / "mxlaunch-home"))
    import mxlaunch.infra.cloud.wait
    monkeypatch.setattr(mxlaunch.infra.cloud.wait, "SLEEP", lambda seconds: None)  # waits are instant, still bounded
    return tmp_path


class FailCalls:
    """Answer the first `times` calls of an EC2/EFS operation with an AWS error (moto never runs out of
    capacity, never says DependencyViolation while instances terminate, ...). Records the params it refused."""

    def __init__(self, operation: str = "RunInstances", times: int = 1, code: str = "InsufficientInstanceCapacity",
                 service: str = "ec2"):
        self.operation, self.times, self.code, self.service = operation, times, code, service
        self.refused = []

    def install(self, client) -> None:
        if client.meta.service_model.service_name == self.service:
            sid = client.meta.service_model.service_id.hyphenize()
            client.meta.events.register(f"before-parameter-build.{sid}.{self.operation}", self._stash)
            client.meta.events.register(f"before-call.{sid}.{self.operation}", self._call)

    @staticmethod
    def _stash(params, context, **_):
        context["fake_params"] = dict(params)

    def _call(self, context, **_):
        if self.times <= 0:
            return None
        self.times -= 1
        self.refused.append(context["fake_params"])
        return HttpStub(400), {"Error": {"Code": self.code, "Message": f"simulated {self.code}"},
                            "ResponseMetadata": {"HTTPStatusCode": 400}}


@pytest.fixture
def hooks(monkeypatch):
    """Hooks installed on every client the AWS boundary creates (`mxlaunch.infra.cloud.aws.Aws.client`)."""
    import mxlaunch.infra.cloud.aws
    installed = []
    original = mxlaunch.infra.cloud.aws.Aws.client

    def client(self, service):
        fresh = service not in self._clients
        c = original(self, service)
        if fresh:
            for hook in installed:
                hook.install(c)
        return c
    monkeypatch.setattr(mxlaunch.infra.cloud.aws.Aws, "client", client)
    return installed


def teach_moto() -> None:
    """DescribeInstances' `client-token` filter, which AWS has and moto 5 lacks (moto keeps each instance's
    token): how `up` finds a launch whose answer was lost."""
    from moto.ec2 import utils
    utils.filter_dict_attribute_mapping.setdefault("client-token", "client_token")


@pytest.fixture(scope="module")
def moto_module():
    """One moto per test module (a reset costs ~0.5 s of CPU); tests use distinct cluster names."""
    from moto import mock_aws
    teach_moto()
    with mock_aws():
        yield


@pytest.fixture
def moto_aws(moto_module, aws_env, hooks):
    pgs = FakePlacementGroups()
    hooks.append(pgs)
    yield pgs


class Result(NamedTuple):
    code: int
    out: str
    err: str


def launch(*args, stdin: str = "") -> Result:
    """Run `launch ARGS...` in this process as a user would (the real entry point: one-line errors, exit
    statuses), capturing output: `r = launch(...)`, or `code, out, err = launch(...)`."""
    from mxlaunch.launcher.cli import main
    runner = CliRunner()
    with runner.isolation(input=stdin) as streams:
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        out, err = streams[0].getvalue().decode(), streams[1].getvalue().decode()
    return Result(code, out, err)


def up_args(name="c1", count=3, *extra):
    return ["cluster", "up", name, "--instance-type", "g5.12xlarge", "--count", count, "--ssh-cidr", CIDR,
            "--ami", AMI, "--wait", "running", "--yes", *extra]


_CLIENTS: dict = {}


def plain_client(service: str, region: str = REGION, endpoint_url: Optional[str] = None):
    """A plain boto3 client (not ours), made once per process: moto intercepts it whenever a mock is active;
    with `endpoint_url` it talks to that (a moto server)."""
    key = service, region, endpoint_url
    if key not in _CLIENTS:
        _CLIENTS[key] = boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing",
                                      region_name=region).client(service, endpoint_url=endpoint_url)
    return _CLIENTS[key]


def tagged_everything(name: str, region: str = REGION, endpoint_url: Optional[str] = None) -> dict:
    """What AWS holds tagged launch:cluster=NAME (non-terminated), read with plain boto3 clients."""
    ec2 = plain_client("ec2", region, endpoint_url)
    efs = plain_client("efs", region, endpoint_url)
    flt = [{"Name": f"tag:{TAG}", "Values": [name]}]
    instances = [i for r in ec2.describe_instances(Filters=flt)["Reservations"] for i in r["Instances"]
                 if i["State"]["Name"] not in ("terminated", "shutting-down")]
    fss = [f for f in efs.describe_file_systems()["FileSystems"]
           if {"Key": TAG, "Value": name} in f.get("Tags", [])]
    return {"instances": instances,
            "security_groups": ec2.describe_security_groups(Filters=flt)["SecurityGroups"],
            "key_pairs": ec2.describe_key_pairs(Filters=flt)["KeyPairs"],
            "file_systems": fss,
            "mount_targets": [m for f in fss for m in
                              efs.describe_mount_targets(FileSystemId=f["FileSystemId"])["MountTargets"]]}


def nothing_tagged(name: str) -> bool:
    return not any(tagged_everything(name).values())
