"""Offline installs for the packaging tests: wheels packed back from the distributions this interpreter already
has, and a pip that reads no configuration of this machine.

A wheel is the files of an installed distribution plus its .dist-info, so packing those back (RECORD says which
files are its own) gives a wheelhouse for `pip install --no-index --find-links` without any registry.
"""
from __future__ import annotations

import base64
import csv
import hashlib
import importlib.metadata
import io
import os
import sysconfig
import zipfile
from typing import Dict, Iterable, List

_NOT_PACKED = {"INSTALLER", "REQUESTED", "RECORD", "direct_url.json"}  # what pip writes at install time


def _hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def repack(name: str, out_dir: str) -> str:
    """The installed distribution `name` as a wheel file in `out_dir` (its tag from its own WHEEL file); the
    path of the wheel. Files outside site-packages (scripts) and bytecode are left out: pip makes them."""
    dist = importlib.metadata.distribution(name)
    meta = dist.metadata
    tags = [line.split(":", 1)[1].strip() for line in (dist.read_text("WHEEL") or "").splitlines()
            if line.startswith("Tag:")]
    if not tags:
        raise ValueError(f"{name}: no WHEEL tag (not installed from a wheel)")
    dist_name, version = meta["Name"].replace("-", "_"), meta["Version"]
    info = f"{dist_name}-{version}.dist-info"
    wheel = os.path.join(out_dir, f"{dist_name}-{version}-{tags[0]}.whl")
    record = io.StringIO()
    rows = csv.writer(record, lineterminator="\n")
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as out:
        for file in dist.files or ():
            path = file.as_posix()
            if path.startswith("../") or "__pycache__" in file.parts:
                continue
            if file.parts[0].endswith(".dist-info"):
                if file.name in _NOT_PACKED:
                    continue
                path = f"{info}/{file.name}"
            data = file.locate().read_bytes()
            out.writestr(path, data)
            rows.writerow([path, _hash(data), len(data)])
        rows.writerow([f"{info}/RECORD", "", ""])
        out.writestr(f"{info}/RECORD", record.getvalue())
    return wheel


def wheelhouse(names: Iterable[str], out_dir: str) -> List[str]:
    """`repack` of each distribution that is installed here (the others are left out)."""
    os.makedirs(out_dir, exist_ok=True)
    found = []
    for name in names:
        try:
            found.append(repack(name, out_dir))
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def pip_env(**extra) -> Dict[str, str]:
    """The environment for a pip that sees no configuration of this machine (no config file, no PIP_*
    variables: no index or find-links the tests did not name) and never prompts."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "PYTHON"))}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1")
    env.update(extra)
    return env


def frameworks(dest: str) -> str:
    """A folder of links to this interpreter's third-party packages (mxnet, numpy, boto3, ...), without
    mxlaunch's own install and without .pth files: a line naming it in another venv's .pth (same Python
    version) makes pip find every dependency already installed, so only mxlaunch itself is installed there."""
    site = sysconfig.get_paths()["purelib"]
    os.makedirs(dest, exist_ok=True)
    for entry in os.listdir(site):
        if entry.startswith(("mxlaunch", "__editable__", "__pycache__")) or entry.endswith(".pth"):
            continue
        os.symlink(os.path.join(site, entry), os.path.join(dest, entry))
    return dest
