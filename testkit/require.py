"""What a test run demands of this machine. `.ci/run` exports MXLAUNCH_REQUIRE_BED=1: there the SSH test bed
must be made, and a test that needs it fails with the reason; anywhere else it is skipped with the reason
(shown by `-ra`, pytest's default here)."""
from __future__ import annotations

import functools
import os
import shutil
import subprocess
from typing import Optional

from testkit.sshd import SSHD
from testkit.system import IP, BedError, run

REQUIRE_BED = "MXLAUNCH_REQUIRE_BED"


@functools.lru_cache(maxsize=None)
def bed_unavailable() -> Optional[str]:
    """Why no bed can be made here, or None (asked once per process: it runs `ip netns list`)."""
    if os.geteuid() != 0:
        return "the SSH test bed needs root (network namespaces); CI runs as root"
    if not os.access(SSHD, os.X_OK):
        return f"the SSH test bed needs openssh-server ({SSHD} missing; `make test` installs it as root)"
    if not shutil.which("ip"):
        return "the SSH test bed needs iproute2 (`ip`)"
    try:
        run(IP, "netns", "list", timeout=5)
    except (BedError, OSError, subprocess.TimeoutExpired) as exc:
        return f"`ip netns` does not work here: {exc}"
    return None


def bed_required() -> bool:
    return os.environ.get(REQUIRE_BED) == "1"


def need_bed() -> None:
    """Return when a bed can be made; otherwise fail (where required) or skip the calling test, with the reason."""
    import pytest  # the bench scripts use this package without pytest

    reason = bed_unavailable()
    if reason is None:
        return
    if bed_required():
        pytest.fail(f"{REQUIRE_BED}=1 and {reason}", pytrace=False)
    pytest.skip(reason)
