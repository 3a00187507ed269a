"""The AWS of the cluster in a box: a moto server on 127.0.0.1, in its own process (`python -m
testkit.box_server CONFIG`), started by testkit.box. It prints its endpoint URL, serves until
its stdin closes (the lifeline: the box, or the whole test run, is gone), then exits.

Two additions to moto, made in this process only (the CLI under test is a real subprocess that talks HTTP):
- placement groups (moto 5 has none): Create/Describe/DeletePlacementGroup, tag filters honoured, the same
  answers as the client-side stand-in testkit.aws.FakePlacementGroups;
- RunInstances hands out the box's bed hosts, in launch order: each new instance's PrivateIpAddress and
  PublicIpAddress are the next free host's address, and the host "boots" (testkit.image.boot: the
  key pair's public key, from moto's own record of it, for the image's user). With no free host left, the
  call fails as AWS does (InsufficientInstanceCapacity) and creates nothing. Each boot is appended to the
  events file as one JSON line.

CONFIG (JSON): {"image_user", "events", "hosts": [{"address", "sshd_pid"}, ...]}.
"""
from __future__ import annotations

import json
import sys
import threading
from typing import Any, Dict, List

from testkit.image import Image, boot


class Pool:
    """The bed hosts not yet handed out, in order."""

    def __init__(self, hosts: List[dict], image: Image, events: str):
        self.free, self.image, self.events = list(hosts), image, events
        self.lock = threading.Lock()

    def attach(self, backend, reservation) -> None:
        for inst in reservation.instances:
            host = self.free.pop(0)
            nic = inst.nics[0]
            nic.private_ip_address = nic.public_ip = host["address"]
            nic.private_ip_addresses = [{"Primary": True, "PrivateIpAddress": host["address"]}]
            nic.public_ip_auto_assign = False  # a stop/start keeps the address (moto would draw a new one)
            key = backend.describe_key_pairs([inst.key_name])[0].public_key if inst.key_name else None
            if key:
                boot(host["sshd_pid"], self.image, key)
            with open(self.events, "a") as fh:
                fh.write(json.dumps({"instance_id": inst.id, "address": host["address"],
                                     "key_name": inst.key_name, "booted": bool(key)}) + "\n")


def serve_bed_hosts(pool: Pool) -> None:
    from moto.ec2.exceptions import EC2ClientError
    from moto.ec2.models.instances import InstanceBackend
    original = InstanceBackend.run_instances

    def run_instances(self, image_id, count, user_data, security_group_names, **kwargs):
        with pool.lock:
            if count > len(pool.free):
                raise EC2ClientError("InsufficientInstanceCapacity",
                                     f"We currently do not have sufficient capacity: {count} instance(s) asked, "
                                     f"{len(pool.free)} bed host(s) left in the box")
            reservation = original(self, image_id, count, user_data, security_group_names, **kwargs)
            pool.attach(self, reservation)
            return reservation
    InstanceBackend.run_instances = run_instances


GROUPS: Dict[Any, Dict[str, dict]] = {}  # (account, region) -> group name -> {"strategy", "tags"}


def add_placement_groups() -> None:
    from moto.core.responses import ActionResult
    from moto.ec2.exceptions import EC2ClientError
    from moto.ec2.responses import EC2Response

    def groups(self) -> Dict[str, dict]:
        return GROUPS.setdefault((self.current_account, self.region), {})

    def describe(name: str, group: dict) -> dict:
        return {"GroupName": name, "Strategy": group["strategy"], "State": "available",
                "Tags": [{"Key": k, "Value": v} for k, v in group["tags"].items()]}

    def create_placement_group(self):
        name, strategy = self._get_param("GroupName"), self._get_param("Strategy")
        if name in groups(self):
            raise EC2ClientError("InvalidPlacementGroup.Duplicate", f"The placement group '{name}' already exists.")
        tags = self._parse_tag_specification("placement-group").get("placement-group", {})
        groups(self)[name] = {"strategy": strategy, "tags": tags}
        return ActionResult({"PlacementGroup": describe(name, groups(self)[name])})

    def describe_placement_groups(self):
        names = self._get_param("GroupNames", [])
        filters = self._filters_from_querystring()
        found = [describe(n, g) for n, g in groups(self).items()
                 if (not names or n in names)
                 and all(g["tags"].get(f[4:]) in values for f, values in filters.items() if f.startswith("tag:"))]
        return ActionResult({"PlacementGroups": found})

    def delete_placement_group(self):
        name = self._get_param("GroupName")
        if groups(self).pop(name, None) is None:
            raise EC2ClientError("InvalidPlacementGroup.Unknown", f"The Placement Group '{name}' is unknown.")
        return ActionResult({})

    for fn in (create_placement_group, describe_placement_groups, delete_placement_group):
        setattr(EC2Response, fn.__name__, fn)


def main(argv: List[str]) -> None:
    with open(argv[0]) as fh:
        config = json.load(fh)
    add_placement_groups()
    serve_bed_hosts(Pool(config["hosts"], Image(user=config["image_user"]), config["events"]))
    from moto.server import ThreadedMotoServer
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    print(f"http://{host}:{port}", flush=True)
    sys.stdin.read()  # until the box closes our stdin, or dies
    server.stop()


if __name__ == "__main__":
    main(sys.argv[1:])
