"""`bed_fixture(n, scope)`: the pytest fixture of the SSH test bed (testkit.bed), made once per
module or session, checked clean before and after every test."""
from __future__ import annotations

import time
from typing import List

from testkit.bed import Bed, _pid_alive, _read, up


def bed_fixture(n: int, scope: str = "module"):
    """A pytest fixture yielding a bed of `n` hosts, made once per `scope` ("module" or "session") and shared
    by its tests. Where no bed can be made the test is skipped with the reason, or fails where the run
    requires the bed (testkit.require). Every test gets the bed clean (each sshd up, nothing else
    running in the namespaces); what a test leaves running there is killed after it and reported as that
    test's error. The bed is always torn down, even when a test fails."""
    import pytest
    from testkit.require import need_bed
    beds = {}  # the module (or session) node -> its bed

    def dirt(bed: Bed, settle: float) -> List[str]:
        """What is not as a fresh bed has it, after waiting up to `settle` s (a session ends a moment after
        its connection closes)."""
        deadline = time.monotonic() + settle
        while True:
            found = [f"host {m.index}: sshd not running" for m in bed.members
                     if not (m.sshd_pid and _pid_alive(m.sshd_pid))]
            for i in range(len(bed.members)):
                found += [f"host {i}: pid {p} {_read(f'/proc/{p}/cmdline').replace(chr(0), ' ').strip()!r}"
                          for p in bed.job_pids(i)]
            if not found or time.monotonic() >= deadline:
                return found
            time.sleep(0.05)

    def take_down(holder) -> None:
        problems = beds.pop(holder).down()
        assert not problems, f"test bed teardown left: {problems}"

    @pytest.fixture
    def _bed(request):
        need_bed()
        holder = request.node.getparent(pytest.Session if scope == "session" else pytest.Module)
        if holder not in beds:
            beds[holder] = up(n)
            holder.addfinalizer(lambda: take_down(holder))
        bed = beds[holder]
        found = dirt(bed, settle=5)  # even up(): its port probe leaves an `sshd: [accepted]` for a moment
        assert not found, f"the test bed is not clean at the start of this test: {found}"
        yield bed
        found = dirt(bed, settle=5)
        if found:
            for i, m in enumerate(bed.members):
                bed.kill_jobs(i)
                if not (m.sshd_pid and _pid_alive(m.sshd_pid)):
                    bed.start_sshd(i)
            pytest.fail(f"this test left the bed unclean (now cleaned): {found}", pytrace=False)

    return _bed
