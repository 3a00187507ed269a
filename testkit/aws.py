"""moto 5 lacks placement groups: a client-side stand-in, installed on every client the tests and the
benchmark create (tests/aws_fixtures.py, tests/test_cluster_server.py, bench/cluster_moto.py)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class HttpStub:
    """Just enough of an HTTP response for botocore's before-call short-circuit."""

    status_code: int
    headers: dict = None
    content: bytes = b""

    def __post_init__(self):
        self.headers = self.headers or {}


class FakePlacementGroups:
    """moto 5 has no placement groups: answer Create/Describe/DeletePlacementGroup from a dict, honouring
    tag filters, before the request is sent (botocore `before-call` short-circuit)."""

    OPS = ("CreatePlacementGroup", "DescribePlacementGroups", "DeletePlacementGroup")

    def __init__(self):
        self.groups = {}  # name -> tags dict
        self.calls = []

    def install(self, client) -> None:
        if client.meta.service_model.service_name != "ec2":
            return
        for op in self.OPS:
            client.meta.events.register(f"before-parameter-build.ec2.{op}", self._stash)
            client.meta.events.register(f"before-call.ec2.{op}", getattr(self, f"_{op}"))

    @staticmethod
    def _stash(params, context, **_):
        context["fake_params"] = dict(params)

    @staticmethod
    def _ok(body):
        return HttpStub(200), {**body, "ResponseMetadata": {"HTTPStatusCode": 200}}

    @staticmethod
    def _error(code, message):
        return HttpStub(400), {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": 400}}

    def _CreatePlacementGroup(self, context, **_):
        p = context["fake_params"]
        self.calls.append(("create", p))
        if p["GroupName"] in self.groups:
            return self._error("InvalidPlacementGroup.Duplicate", "exists")
        tags = {t["Key"]: t["Value"] for s in p.get("TagSpecifications", []) for t in s["Tags"]}
        self.groups[p["GroupName"]] = tags
        return self._ok({"PlacementGroup": {"GroupName": p["GroupName"], "Strategy": p.get("Strategy"),
                                            "State": "available"}})

    def _DescribePlacementGroups(self, context, **_):
        filters = context["fake_params"].get("Filters", [])
        found = []
        for name, tags in self.groups.items():
            if all(tags.get(f["Name"][4:]) in f["Values"] for f in filters if f["Name"].startswith("tag:")):
                found.append({"GroupName": name, "Strategy": "cluster", "State": "available",
                              "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]})
        return self._ok({"PlacementGroups": found})

    def _DeletePlacementGroup(self, context, **_):
        name = context["fake_params"]["GroupName"]
        self.calls.append(("delete", name))
        if self.groups.pop(name, None) is None:
            return self._error("InvalidPlacementGroup.Unknown", f"The Placement Group '{name}' is unknown.")
        return self._ok({})
