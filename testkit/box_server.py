"""The AWS of the cluster in a box: a moto server on 127.0.0.1, in its own process (`python -m
testkit.box_server CONFIG`), started by testkit.box. It prints its endpoint URL, serves until
its stdin closes (the lifeline: the box, or the whole test run, is gone), then exits.

Three additions to moto, made in this process only (the CLI under test is a real subprocess that talks HTTP):
- DescribeInstances' `client-token` filter (AWS has it; moto keeps each instance's token but cannot filter);
- placement groups (moto 5 has none): Create/Describe/DeletePlacementGroup, tag filters honoured, the same
  answers as the client-side stand-in testkit.aws.FakePlacementGroups;
- RunInstances hands out the box's bed hosts, in launch order: each new instance's PrivateIpAddress and
  PublicIpAddress are the next free host's address, and the host "boots" (testkit.image.boot: the
  key pair's public key, from moto's own record of it, for the image's user). With no free host left, the
  call fails as AWS does (InsufficientInstanceCapacity) and creates nothing. Each boot is appended to the
  events file as one JSON line.
- with "user_data" on, a boot installs the key alone and then runs the instance's real user data on its host,
  as cloud-init would (`UserData`: see `run_user_data`), in the background; a host listed in "no_efs" cannot
  mount EFS, so its user data fails at that step.

CONFIG (JSON): {"image_user", "events", "hosts": [{"address", "sshd_pid"}, ...], "user_data": bool,
"no_efs": [addresses]}.
"""
from __future__ import annotations

import base64
import json
import subprocess
import sys
import threading
from typing import Any, Dict, List, Optional

from testkit.image import Image, boot, inside_argv

USER_DATA_TIMEOUT = 300.0  # the real user data on a box host: seconds (apt fails at once, EFS is a bind mount)
# cloud-init's part of a boot when the user data runs: the key pair's public key for the login user
KEY_ONLY = """\
set -e
u="$1"; home="$2"
install -d -m 700 -o "$u" -g "$u" "$home/.ssh"
cat >> "$home/.ssh/authorized_keys"
chown "$u:" "$home/.ssh/authorized_keys"; chmod 600 "$home/.ssh/authorized_keys"
"""
# Where the user data runs (as root, in its host's namespaces, then a private mount namespace of its own): the
# host gets its own /var/log (the log is read over SSH, so in the host's namespace); in the user data's own
# namespace /etc/fstab is a private copy, and apt-get, yum and fuser fail at once (nothing may be installed on
# this machine, whose file system the hosts share), shutdown and poweroff do nothing; a host without EFS sees
# /efs unmounted, and `sleep` returns at once (the mount loop gives up in seconds, not ten minutes).
PREPARE = """\
set -e
mkdir -p /root/.box
printf '#!/bin/sh\\nexit 100\\n' > /root/.box/fail; printf '#!/bin/sh\\nexit 0\\n' > /root/.box/ok
chmod 755 /root/.box/fail /root/.box/ok
cat /etc/fstab > /root/.box/fstab 2>/dev/null || : > /root/.box/fstab
cat > /root/.box/user-data
[ -e /var/log/.box ] || { mount -t tmpfs -o mode=755 tmpfs /var/log; touch /var/log/.box; }
"""
ISOLATE = """\
set -e
mount --bind /root/.box/fstab /etc/fstab
for p in /usr/bin/apt-get /usr/bin/yum /usr/bin/fuser; do [ ! -e "$p" ] || mount --bind /root/.box/fail "$p"; done
for p in /usr/sbin/shutdown /usr/sbin/poweroff; do [ ! -e "$p" ] || mount --bind /root/.box/ok "$p"; done
if [ "$1" = no-efs ]; then umount /efs; mount --bind /root/.box/ok /usr/bin/sleep; fi
exec bash /root/.box/user-data
"""


class Pool:
    """The bed hosts not yet handed out, in order."""

    def __init__(self, hosts: List[dict], image: Image, events: str, user_data: bool = False, no_efs=()):
        self.free, self.image, self.events = list(hosts), image, events
        self.user_data, self.no_efs = user_data, set(no_efs)
        self.lock = threading.Lock()

    def attach(self, backend, reservation) -> None:
        for inst in reservation.instances:
            host = self.free.pop(0)
            nic = inst.nics[0]
            nic.private_ip_address = nic.public_ip = host["address"]
            nic.private_ip_addresses = [{"Primary": True, "PrivateIpAddress": host["address"]}]
            nic.public_ip_auto_assign = False  # a stop/start keeps the address (moto would draw a new one)
            key = backend.describe_key_pairs([inst.key_name])[0].public_key if inst.key_name else None
            script = base64.b64decode(inst.user_data.as_bytes()).decode() if inst.user_data else None
            if key and self.user_data:
                _run(inside_argv(host["sshd_pid"]) + ["sh", "-c", KEY_ONLY, "boot", self.image.user,
                                                      self.image.home], key.strip() + "\n", 15)
                threading.Thread(target=run_user_data, args=(host, script, host["address"] in self.no_efs),
                                 daemon=True).start()
            elif key:
                boot(host["sshd_pid"], self.image, key)
            with open(self.events, "a") as fh:
                fh.write(json.dumps({"instance_id": inst.id, "address": host["address"],
                                     "key_name": inst.key_name, "booted": bool(key)}) + "\n")


def _run(argv: List[str], stdin: str, timeout: float) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[-4:]} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def run_user_data(host: dict, script: Optional[str], no_efs: bool) -> None:
    """The instance's user data, as cloud-init runs it: root, once, its output its own business (it logs to
    /var/log/mxlaunch-userdata.log). A user data that would arm a --max-hours shutdown is not run here."""
    try:
        if not script or "mxlaunch-deadline" in script:
            raise RuntimeError("no user data, or one with a --max-hours deadline: not run in the box")
        pid = str(host["sshd_pid"])
        _run(["nsenter", "--target", pid, "--mount", "--net", "--", "sh", "-c", PREPARE], script, 15)
        subprocess.run(["nsenter", "--target", pid, "--mount", "--net", "--", "unshare", "--mount", "--propagation",
                        "private", "sh", "-c", ISOLATE, "isolate", "no-efs" if no_efs else "efs"],
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=USER_DATA_TIMEOUT)
    except Exception as exc:  # noqa: BLE001 - the server goes on; the test sees no marker and says so
        print(f"box: the user data of {host['address']} could not run: {exc}", file=sys.stderr, flush=True)


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
    from moto.ec2 import utils
    utils.filter_dict_attribute_mapping.setdefault("client-token", "client_token")
    add_placement_groups()
    serve_bed_hosts(Pool(config["hosts"], Image(user=config["image_user"]), config["events"],
                         config.get("user_data", False), config.get("no_efs", ())))
    from moto.server import ThreadedMotoServer
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    print(f"http://{host}:{port}", flush=True)
    sys.stdin.read()  # until the box closes our stdin, or dies
    server.stop()


if __name__ == "__main__":
    main(sys.argv[1:])
