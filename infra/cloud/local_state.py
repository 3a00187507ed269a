"""The local state of a cluster: `$MXLAUNCH_HOME/clusters/NAME/` (default: $XDG_CONFIG_HOME/mxlaunch or
~/.config/mxlaunch). Holds the private key (0600), cluster.json, hosts (hostfile), ssh_config, known_hosts.
AWS tags remain the source of truth; these files are derived from them and rewritten on every `up`/`hostfile`.
"""
from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from mxlaunch.errors import CommandError
from mxlaunch.infra.transport.hosts import Host
from mxlaunch.records import dump, expect, load
from mxlaunch.templates import render

from mxlaunch.infra.cloud.spec import NAME_RE, Binding, validate_name, validate_ssh_user

if TYPE_CHECKING:  # paramiko: not for every `launch cluster` command
    from mxlaunch.infra.transport.ssh_options import SSHOptions


def home() -> Path:
    if os.environ.get("MXLAUNCH_HOME"):
        return Path(os.environ["MXLAUNCH_HOME"])
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "mxlaunch"


def cluster_dir(name: str) -> Path:
    """The state directory of cluster `name`; every path of a cluster is built here, so the name is checked
    here too (a name such as `../../x` must never reach the file system)."""
    return home() / "clusters" / validate_name(name)


def owner_id_path() -> Path:
    """This state directory's owner id (mxlaunch.infra.cloud.owner.local_id)."""
    return home() / "owner-id"


def _ensure_dir(name: str) -> Path:
    path = cluster_dir(name)
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def key_path(name: str) -> Path:
    return cluster_dir(name) / "id_key"


def hostfile_path(name: str) -> Path:
    return cluster_dir(name) / "hosts"


def ssh_config_path(name: str) -> Path:
    return cluster_dir(name) / "ssh_config"


def known_hosts_path(name: str) -> Path:
    return cluster_dir(name) / "known_hosts"


def save_key(name: str, material: str) -> Path:
    """Write the private key 0600, never over an existing file."""
    _ensure_dir(name)
    path = key_path(name)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(material if material.endswith("\n") else material + "\n")
    os.chmod(path, 0o600)
    return path


def remove_key(name: str) -> bool:
    try:
        key_path(name).unlink()
        return True
    except FileNotFoundError:
        return False


@dataclass(frozen=True)
class ClusterMeta:
    """cluster.json: what `up` knows of a cluster that its tags do not hold (AWS tags stay the source of truth
    for what exists). Every field may be missing: a cluster made by an older mxlaunch, or not yet set up."""

    region: Optional[str] = None
    account: Optional[str] = expect("an AWS account id (12 digits)", lambda a: a.isdigit() and len(a) == 12,
                                    default=None)  # with `partition` and `region`: where the cluster lives
    partition: Optional[str] = None  # aws, aws-cn, aws-us-gov
    instance_type: Optional[str] = None
    count: Optional[int] = expect("a whole number >= 1", lambda n: n >= 1, default=None)
    gpus_per_host: Optional[int] = expect("a whole number >= 0", lambda n: n >= 0, default=None)
    spot: Optional[bool] = None
    on_demand_fallback: Optional[bool] = None  # read by repair and restarts
    ssh_user: Optional[str] = None
    key_file: Optional[str] = None  # the cluster's own key (its state); None: the user's own --key-name
    key_name: Optional[str] = None
    efs: Optional[str] = None  # the file system's id
    ami: Optional[str] = None  # --ami: what a repair boots when no instance is left to copy
    max_hours: Optional[float] = expect("a positive number of hours", lambda h: h > 0, default=None)
    deadline: Optional[str] = None  # an absolute --max-hours deadline (ISO 8601), where one was recorded
    extra: Optional[str] = None  # the install's extra (cpu: `train --cluster` adds no --gpus)
    wheelhouse: Optional[str] = None  # a path on this machine: a repair without EFS installs from it

    @property
    def binding(self) -> Optional[Binding]:
        """Where `up` created the cluster; None for a cluster.json that does not say (an older mxlaunch's)."""
        if not (self.account and self.partition and self.region):
            return None
        return Binding(partition=self.partition, account=self.account, region=self.region)


def meta_path(name: str) -> Path:
    return cluster_dir(name) / "cluster.json"


def holds(name: str) -> bool:
    """Whether this machine holds local state of cluster `name` (its cluster.json or its key)."""
    return meta_path(name).exists() or key_path(name).exists()


def read_meta(name: str) -> ClusterMeta:
    """The cluster's cluster.json (every field None when there is none); a damaged one is one error naming
    the file and the field."""
    path = meta_path(name)
    try:
        return load(ClusterMeta, json.loads(path.read_text()))
    except FileNotFoundError:
        return ClusterMeta()
    except (OSError, ValueError) as exc:  # RecordError, JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise CommandError(f"cannot read {path}: {exc}") from exc


def write_meta(name: str, **changes) -> None:
    """cluster.json with `changes` (field=value) over what it holds."""
    _ensure_dir(name)
    merged = dataclasses.replace(read_meta(name), **changes)
    meta_path(name).write_text(json.dumps(dump(merged), indent=2, sort_keys=True) + "\n")


def write_hostfile(name: str, hosts) -> Path:
    _ensure_dir(name)
    path = hostfile_path(name)
    path.write_text(render_hostfile(hosts))
    return path


def render_hostfile(hosts) -> str:
    return render("hosts.j2", hosts=list(hosts))


def _ssh_config_path_value(path: Path) -> str:
    """A path as an ssh_config value, read alike by OpenSSH and paramiko: whitespace in double quotes; `%`
    (OpenSSH's token character, which paramiko does not unescape), a double quote or a newline: refused."""
    text = str(path)
    if any(c in text for c in '%"\n\r'):
        raise CommandError(f"cannot write an ssh config naming {text!r}: set MXLAUNCH_HOME to a path without "
                           f"%, \" or newlines")
    return f'"{text}"' if any(c.isspace() for c in text) else text


def write_ssh_config(name: str, entries, user: str, key: Optional[Path]) -> Path:
    """`entries`: (alias, private address, address to connect to). Private addresses are aliases too, so that
    `ssh -F ssh_config <private ip>` (what the hostfile lists) connects through the public address."""
    validate_ssh_user(user)  # also when it comes from cluster.json: a newline would add ssh options
    _ensure_dir(name)
    path = ssh_config_path(name)
    path.write_text(render("cluster_ssh_config.j2", name=name, entries=list(entries), user=user,
                           key=_ssh_config_path_value(key) if key else None,
                           known_hosts=_ssh_config_path_value(known_hosts_path(name))))
    return path


def ssh_options(name: str, user: str, key: Optional[Path]) -> "SSHOptions":
    """How mxlaunch reaches cluster `name`'s instances over SSH, as its ssh config says: its user and key
    (None: the user's own key pair, from ssh-agent or the default keys), host keys checked against its
    known_hosts, where a key seen for the first time is recorded (`StrictHostKeyChecking accept-new`)."""
    from mxlaunch.infra.transport.ssh_options import SSHOptions  # heavy

    return SSHOptions(key=str(key) if key else None, user=user, known_hosts=str(known_hosts_path(name)),
                      accept_new=True, config_path=str(ssh_config_path(name)))


def keep_host_keys(name: str, addresses) -> int:
    """The cluster's known_hosts keeps the keys of `addresses` only (its instances now): AWS gives a terminated
    instance's address to a later one, whose new key `StrictHostKeyChecking accept-new` would refuse as a
    changed key. Comments and @-marker lines stay. Returns how many lines were dropped."""
    path = known_hosts_path(name)
    try:
        lines = path.read_text().splitlines(keepends=True)
    except FileNotFoundError:
        return 0
    keep = {a for a in addresses if a}
    kept = [line for line in lines if _known_host_kept(line, keep)]
    if len(kept) != len(lines):
        path.write_text("".join(kept))
    return len(lines) - len(kept)


def _known_host_kept(line: str, keep: set) -> bool:
    fields = line.split()
    if not fields or fields[0].startswith(("#", "@")):
        return True
    for pattern in fields[0].split(","):
        if pattern.startswith("|1|"):  # HashKnownHosts: HMAC-SHA1 of the name, keyed by the salt
            salt, _, digest = pattern[3:].partition("|")
            try:
                salt_bytes, wanted = base64.b64decode(salt), base64.b64decode(digest)
            except ValueError:
                return True  # not ours to judge
            if any(hmac.compare_digest(hmac.new(salt_bytes, a.encode(), hashlib.sha1).digest(), wanted)
                   for a in keep):
                return True
        elif (pattern[1:].partition("]")[0] if pattern.startswith("[") else pattern) in keep:
            return True
    return False


def remove_dir(name: str) -> bool:
    path = cluster_dir(name)
    if path.exists():
        shutil.rmtree(path)
        return True
    return False


def local_clusters() -> list:
    root = home() / "clusters"
    if not root.exists():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and NAME_RE.fullmatch(p.name))


def host_for(address: str, user: str) -> Host:
    return Host(address=address, user=user, slots=1)
