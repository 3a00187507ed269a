"""pump_guard_output, the one reader of every guard's stdout: whatever the transport does, the role ends with
exactly one RoleEnded (a pump that died silently would leave the job waiting for that role forever)."""
from __future__ import annotations

import io

from mxlaunch.infra.transport.hosts import Host
from mxlaunch.infra.transport.roles import Role
from mxlaunch.infra.transport.runner import Events, GuardSession, RoleEnded, RoleLaunch, RoleOutput, pump_guard_output


class BreaksAfterOneLine(io.RawIOBase):
    """A guard's stdout whose transport fails mid-read (an SSH channel torn down under the reader)."""

    def __init__(self):
        self.sent = False

    def readable(self):
        return True

    def readinto(self, buffer):
        if self.sent:
            raise OSError("Socket is closed")
        self.sent = True
        data = b"epoch 1\n"
        buffer[:len(data)] = data
        return len(data)


def test_a_read_error_still_ends_the_role_once_with_the_reason():
    role = Role(kind="worker", index=0, host=Host.loopback(), env=())
    session = GuardSession(launch=RoleLaunch(role=role, argv=("true",), cwd=None), token="t")
    events = Events()
    pump_guard_output(session, io.BufferedReader(BreaksAfterOneLine()), events, guard_status=lambda: None)
    seen = []
    while not events.empty():
        seen.append(events.get())
    assert [type(e) for e in seen] == [RoleOutput, RoleEnded]
    assert seen[0].data == b"epoch 1\n"
    assert "could not be read (OSError: Socket is closed)" in seen[1].result.error and not seen[1].result.ok
