"""What a test run demands of this machine. `.ci/run` exports MXLAUNCH_REQUIRE_BED=1: there the SSH test bed
must be made, and a test that needs it fails with the reason; anywhere else it is skipped with the reason
(shown by `-ra`, pytest's default here)."""
from __future__ import annotations

import functools
import os
from typing import Optional

REQUIRE_BED = "MXLAUNCH_REQUIRE_BED"


@functools.lru_cache(maxsize=None)
def bed_unavailable() -> Optional[str]:
    """Why no bed can be made here (asked once per process: it runs `ip netns list`), or None."""
    from testkit import bed
    return bed.why_unavailable()


def bed_required() -> bool:
    return os.environ.get(REQUIRE_BED) == "1"


def need_bed() -> None:
    """Return when a bed can be made; otherwise fail (where required) or skip the calling test, with the reason."""
    import pytest
    reason = bed_unavailable()
    if reason is None:
        return
    if bed_required():
        pytest.fail(f"{REQUIRE_BED}=1 and {reason}", pytrace=False)
    pytest.skip(reason)
