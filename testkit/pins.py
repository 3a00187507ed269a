"""The name of a cached test venv: a hash of exactly what it installs (pyproject.toml's dependencies and the
extra's list) and the Python version — so that editing the test extra or a comment does not rebuild the 2 GB
GPU venv."""
from __future__ import annotations

import hashlib
import os
import sys

if sys.version_info >= (3, 11):
    import tomllib
else:  # the test extra installs tomli there
    import tomli as tomllib

from testkit.checkout import REPO


def pyproject() -> dict:
    """The checkout's pyproject.toml."""
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)


def project() -> dict:
    """pyproject.toml's [project] table."""
    return pyproject()["project"]


def _requirements(extra: str) -> list:
    table = project()
    return sorted(table["dependencies"]) + sorted(table["optional-dependencies"][extra])


def pins_key(extra: str) -> str:
    """12 hex digits naming a venv of `.[extra]` for this Python."""
    text = "\n".join(_requirements(extra)) + "\n" + sys.version
    return hashlib.sha256(text.encode()).hexdigest()[:12]
