"""The one AWS boundary: a client factory (boto3 Session: profiles, --region, AWS_ENDPOINT_URL; botocore
`standard` retries) and `Aws.call`, through which every AWS call passes, so that errors are translated in one
place into one clear line, and `--dry-run` can print every call it would make.

Error categories carry their exit statuses (mxlaunch/exits.py: a user's scripts can rely on them).
"""
from __future__ import annotations

import itertools
from typing import Callable, Iterator, Optional

import boto3
import botocore.exceptions as bce
import botocore.session
from botocore.parsers import ResponseParserError
from botocore.config import Config

from mxlaunch.errors import CommandError, UsageError
from mxlaunch.exits import Exit

from mxlaunch.infra.cloud.wait import Backoff

RETRY_CONFIG = Config(retries={"mode": "standard", "max_attempts": 6}, connect_timeout=10, read_timeout=60)
# RunInstances: capacity errors come as HTTP 500, which botocore's standard mode retries ~6 times per zone
# (30-60 s) before failover could move on. Its client makes one attempt; provision retries what is transient.
ONCE_CONFIG = Config(retries={"mode": "standard", "total_max_attempts": 1}, connect_timeout=10, read_timeout=60)


class AwsError(CommandError):
    """AWS refused a call. `code` is AWS's error code (or None)."""

    exit_code = Exit.AWS_ERROR

    def __init__(self, message: str, code: Optional[str] = None):
        super().__init__(message)
        self.code = code


class NoCredentials(AwsError):
    exit_code = Exit.AWS_CREDENTIALS


class PermissionDenied(AwsError):
    exit_code = Exit.AWS_DENIED


class QuotaExceeded(AwsError):
    exit_code = Exit.AWS_QUOTA


class CapacityUnavailable(AwsError):
    exit_code = Exit.AWS_CAPACITY


class OptInRequired(AwsError):
    """The account must opt in first: to the region, or to the AWS Marketplace product behind the image."""

    exit_code = Exit.AWS_DENIED


class UnknownRegion(UsageError):
    pass


CREDENTIAL_CODES = {"AuthFailure", "UnrecognizedClientException", "InvalidClientTokenId", "SignatureDoesNotMatch",
                    "ExpiredToken", "ExpiredTokenException", "RequestExpired", "IncompleteSignature"}
PERMISSION_CODES = {"UnauthorizedOperation", "AccessDenied", "AccessDeniedException", "Blocked"}
QUOTA_CODES = {"InstanceLimitExceeded", "VcpuLimitExceeded", "MaxSpotInstanceCountExceeded",
               "FileSystemLimitExceeded", "SecurityGroupLimitExceeded", "RulesPerSecurityGroupLimitExceeded",
               "ResourceLimitExceeded", "PlacementGroupLimitExceeded", "KeyPairLimitExceeded",
               "NetworkInterfaceLimitExceeded", "ThroughputLimitExceeded"}
CAPACITY_CODES = {"InsufficientInstanceCapacity", "InsufficientHostCapacity", "InsufficientCapacity",
                  "InsufficientCapacityException", "Unsupported", "SpotMaxPriceTooLow",
                  "InsufficientCapacityOnPlacementGroup"}
# A zone's subnet has no free address left: like capacity, the next zone may have room.
SUBNET_FULL = "InsufficientFreeAddressesInSubnet"
# Right after a create, AWS may not yet see the new resource (eventual consistency): retried, bounded.
NOT_YET_CODES = {"InvalidGroup.NotFound", "InvalidPlacementGroup.Unknown", "InvalidKeyPair.NotFound",
                 "FileSystemNotFound", "MountTargetNotFound", "InvalidInstanceID.NotFound", "SecurityGroupNotFound"}
# Retries of AWS's eventual consistency: 2 s growing to 30 s, about 5 minutes in all. A policy conditioned on
# tags may deny a resource created seconds ago (its tags not yet visible to IAM): about 30 s more for that.
CONSISTENCY = Backoff(frozenset(NOT_YET_CODES), total=300.0)
JUST_CREATED_DENIED = Backoff(frozenset({"UnauthorizedOperation"}), total=30.0, cap=8.0)
# Partitions whose ARNs and endpoints differ from `aws` (arn:aws-cn:..., amazonaws.com.cn): not supported.
PARTITION = "aws"
MUTATING_PREFIXES = ("create_", "delete_", "run_", "terminate_", "authorize_", "revoke_", "put_", "modify_")


_SHARED: dict = {}


def _botocore_session() -> botocore.session.Session:
    """A fresh botocore session (fresh credentials and config) sharing one data loader, so that the large
    service models are parsed once per process, not once per command."""
    session = botocore.session.Session()
    if "loader" in _SHARED:
        session.register_component("data_loader", _SHARED["loader"])
    else:
        _SHARED["loader"] = session.get_component("data_loader")
    return session


def _known_regions(session: boto3.Session) -> set:
    if "regions" in _SHARED:
        return _SHARED["regions"]
    regions = set()
    for partition in session.get_available_partitions():
        regions.update(session.get_available_regions("ec2", partition_name=partition))
    _SHARED["regions"] = regions
    return regions


def _not_aws(operation: str, status, what: str) -> "AwsError":
    """An answer that is no AWS error document (a proxy's or a load balancer's HTML page, an outage)."""
    http = f"HTTP {status} " if status else ""
    return AwsError(f"{operation}: {http}from the AWS endpoint, {what} (an outage, or a proxy in the way?): try "
                    f"again later", f"HTTP{status or ''}")


def translate(exc: Exception, operation: str) -> CommandError:
    """One clear line for an AWS failure; the caller raises it `from exc`."""
    if isinstance(exc, ResponseParserError):
        return _not_aws(operation, None, "an answer that is not an AWS response (an HTML page?)")
    if isinstance(exc, (bce.NoCredentialsError, bce.PartialCredentialsError)):
        return NoCredentials("no AWS credentials found: set AWS_PROFILE (or --profile), run `aws configure`, "
                             "or export AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY", "NoCredentials")
    if isinstance(exc, (bce.SSOTokenLoadError, bce.UnauthorizedSSOTokenError, bce.TokenRetrievalError)):
        return NoCredentials(f"AWS SSO session expired or missing: run `aws sso login` ({exc})", "NoCredentials")
    if isinstance(exc, bce.ProfileNotFound):
        return NoCredentials(f"AWS profile not found: {exc}", "NoCredentials")
    if isinstance(exc, bce.EndpointConnectionError):
        return AwsError(f"cannot reach the AWS endpoint for {operation}: {exc}")
    if isinstance(exc, bce.ClientError):
        err = exc.response.get("Error", {})
        code, message = err.get("Code", "Unknown"), " ".join(str(err.get("Message", "")).split())
        where = f"{operation}: {code}: {message}"
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code == "Unknown" or code.isdigit():  # botocore's stand-in when the body was no AWS error
            return _not_aws(operation, status or (code if code.isdigit() else None), "not an AWS error answer")
        return _client_error(code, where)
    if isinstance(exc, bce.BotoCoreError):
        return AwsError(f"{operation}: {' '.join(str(exc).split())}")
    raise exc


def _client_error(code: str, where: str) -> CommandError:
    """The typed line for AWS error `code` (`where`: the operation, the code and AWS's message)."""
    if code in CREDENTIAL_CODES:
        return NoCredentials(f"AWS rejected the credentials ({where})", code)
    if code in PERMISSION_CODES:
        return PermissionDenied(f"not permitted by your AWS policy ({where})", code)
    if code in QUOTA_CODES:
        return QuotaExceeded(f"AWS quota exceeded ({where}); request an increase in the Service Quotas "
                             f"console (e.g. 'Running On-Demand G and VT instances' / 'P instances' vCPUs)", code)
    if code in CAPACITY_CODES:
        return CapacityUnavailable(where, code)
    if code in OWN_LINES:
        kind, text = OWN_LINES[code]
        return kind(f"{text} ({where})", code)
    return AwsError(where, code)


# Codes that need their own words: what they mean for a cluster, and what to do (their meanings:
# https://docs.aws.amazon.com/AWSEC2/latest/APIReference/errors-overview.html).
OWN_LINES = {
    "OptInRequired": (OptInRequired, "your account must opt in first: to this region (Account settings, AWS "
                                     "Regions), or, for an AWS Marketplace image, to its product (subscribe in the "
                                     "Marketplace console, or pass another --ami)"),
    "PendingVerification": (AwsError, "AWS is still verifying your account (a new account, or a region just "
                                      "enabled): try again once AWS's email says it is done"),
    SUBNET_FULL: (CapacityUnavailable, "the zone's default subnet has no free address left"),
    "AuthFailure.ServiceLinkedRoleCreationNotPermitted": (
        PermissionDenied, "AWS could not create the service-linked role spot instances need: grant "
                          "iam:CreateServiceLinkedRole for spot.amazonaws.com (`launch cluster policy` does), or "
                          "create it once: `aws iam create-service-linked-role --aws-service-name spot.amazonaws.com`"),
}


def _op_name(service: str, op: str) -> str:
    return f"{service}.{''.join(p.capitalize() for p in op.split('_'))}"


def describe_params(params: dict) -> str:
    """`k=v` list for a dry-run line; user data is summarised (it is shown by its template, not inlined)."""
    parts = []
    for key, value in params.items():
        if key == "UserData":
            value = f"<{len(value)} bytes from templates/cluster_userdata.sh.j2>"
        parts.append(f"{key}={value!r}")
    return ", ".join(parts)


class Aws:
    """A boto3 Session for one region, its clients, and the single `call` seam."""

    def __init__(self, region: Optional[str] = None, profile: Optional[str] = None, dry_run: bool = False,
                 echo: Callable[[str], None] = print):
        try:
            self.session = boto3.Session(botocore_session=_botocore_session(), profile_name=profile,
                                         region_name=region)
        except bce.ProfileNotFound as exc:
            raise translate(exc, "Session") from exc
        self.region = self.session.region_name
        if not self.region:
            raise UsageError("no AWS region: pass --region, or set AWS_REGION / AWS_DEFAULT_REGION or a profile "
                             "region")
        if self.region not in _known_regions(self.session):
            raise UnknownRegion(f"unknown AWS region {self.region!r} (e.g. us-east-1, us-west-2, eu-west-1)")
        partition = self.session.get_partition_for_region(self.region)
        if partition != PARTITION:
            raise UsageError(f"region {self.region} is in the {partition} partition: `launch cluster` supports "
                             f"the {PARTITION} partition only (its IAM policy, ARNs and EFS DNS names are those of "
                             f"{PARTITION}); use a region such as us-east-1")
        self.dry_run = dry_run
        self.echo = echo
        self._clients: dict = {}
        self._fake_ids = itertools.count(1)

    def client(self, service: str):
        """`service`, or `service:once` for the client that makes one attempt per call (no botocore retries)."""
        if service not in self._clients:
            name, _, once = service.partition(":")
            self._clients[service] = self.session.client(name, region_name=self.region,
                                                         config=ONCE_CONFIG if once else RETRY_CONFIG)
        return self._clients[service]

    def call(self, service: str, op: str, *, once: bool = False, **params) -> dict:
        """Call `op`; `once`: one attempt, no botocore retries (the caller decides what to retry)."""
        name = _op_name(service, op)
        mutating = op.startswith(MUTATING_PREFIXES)
        if self.dry_run:
            self.echo(f"{'would call' if mutating else 'reads'}  {name}({describe_params(params)})")
            if mutating:
                return self._fake(op, params)
        try:
            return getattr(self.client(f"{service}:once" if once else service), op)(**params)
        except (bce.ClientError, bce.BotoCoreError, ResponseParserError) as exc:
            raise translate(exc, name) from exc

    def paginate(self, service: str, op: str, key: str, **params) -> Iterator[dict]:
        """Every item under `key` of every page (botocore paginator)."""
        name = _op_name(service, op)
        if self.dry_run:
            self.echo(f"reads  {name}({describe_params(params)})")
        try:
            for page in self.client(service).get_paginator(op).paginate(**params):
                yield from page.get(key, [])
        except (bce.ClientError, bce.BotoCoreError, ResponseParserError) as exc:
            raise translate(exc, name) from exc

    # --dry-run: what a create call would have returned, with placeholder ids.
    def _fake(self, op: str, params: dict) -> dict:
        n = next(self._fake_ids)
        if op == "create_key_pair":
            return {"KeyName": params["KeyName"], "KeyPairId": f"key-dryrun{n}", "KeyMaterial": ""}
        if op == "create_security_group":
            return {"GroupId": f"sg-dryrun{n}"}
        if op == "create_file_system":
            return {"FileSystemId": f"fs-dryrun{n}", "LifeCycleState": "available"}
        if op == "create_mount_target":
            return {"MountTargetId": f"fsmt-dryrun{n}", "LifeCycleState": "available"}
        if op == "create_placement_group":
            return {"PlacementGroup": {"GroupName": params["GroupName"]}}
        if op == "run_instances":
            count = params["MinCount"]
            subnet = (params.get("NetworkInterfaces") or [{}])[0].get("SubnetId", params.get("SubnetId"))
            return {"Instances": [{"InstanceId": f"i-dryrun{n}-{i}", "State": {"Name": "pending"},
                                   "InstanceType": params["InstanceType"], "AmiLaunchIndex": i,
                                   "SubnetId": subnet, "Placement": {}} for i in range(count)]}
        return {}
