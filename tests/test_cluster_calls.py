"""`launch cluster up` and `down` make as many AWS calls for 16 instances as for 1: one RunInstances for all,
describes filtered by tag, no call per instance (moto in-process; --wait running: no instance is contacted).
bench/cluster_moto.py measures the same over HTTP for 1, 8 and 64."""
from __future__ import annotations

import collections

import pytest

from aws_fixtures import launch, up_args

pytestmark = [pytest.mark.aws, pytest.mark.timeout(120)]


class CountCalls:
    """Counts every API call of every client the AWS boundary creates, by operation (botocore's
    `before-parameter-build` fires once per call, retries aside, even for calls answered locally)."""

    def __init__(self):
        self.calls = collections.Counter()

    def install(self, client) -> None:
        client.meta.events.register("before-parameter-build", self._count)

    def _count(self, event_name, **_):
        self.calls[event_name.split(".", 2)[2]] += 1  # before-parameter-build.<service>.<Operation>

    def take(self) -> dict:
        taken, self.calls = dict(self.calls), collections.Counter()
        return taken


def test_up_and_down_make_as_many_calls_for_16_instances_as_for_1(moto_aws, hooks):
    counter = CountCalls()
    hooks.append(counter)
    calls = {}
    for count in (1, 16):
        name = f"calls{count}"
        result = launch(*up_args(name, count))
        assert result.code == 0, result.err
        up = counter.take()
        result = launch("cluster", "down", name, "--yes")
        assert result.code == 0, result.err
        calls[count] = up, counter.take()
    (up1, down1), (up16, down16) = calls[1], calls[16]
    assert up1["RunInstances"] == 1 and down1["TerminateInstances"] == 1
    # the one difference: a cluster placement group, made only when there is more than one instance to place
    assert up16 == {**up1, "CreatePlacementGroup": 1}, calls
    # ... which `down` deletes and then waits for (one DescribePlacementGroups until it is gone)
    assert down16 == {**down1, "DeletePlacementGroup": 1,
                      "DescribePlacementGroups": down1["DescribePlacementGroups"] + 1}, calls
    assert len(moto_aws.groups) == 0
