"""Every exit status of `launch` and `trainer`, one meaning each (README, "Exit statuses", is checked
against this table by tests/test_exits.py). Scripts rely on these numbers: never reuse one."""
from __future__ import annotations

import enum


@enum.unique  # a reused number is an error at import, not a silent alias
class Exit(enum.IntEnum):
    OK = 0  # every worker exited 0 / the command did what was asked
    FAILED = 1  # a role of the job failed, or a command could not do what was asked
    USAGE = 2  # bad input: arguments, files or data that cannot be used as given
    PREFLIGHT = 3  # SSH mode: a host cannot run the job; nothing was started
    AWS_DENIED = 4  # AWS: permission denied
    AWS_QUOTA = 5  # AWS: a service quota is reached
    AWS_CAPACITY = 6  # AWS: no capacity for the instance type in any zone tried
    WAIT_TIMEOUT = 7  # a bounded wait on AWS (instances, deletions) ran out
    AWS_CREDENTIALS = 8  # AWS: no credentials, or they are invalid or expired
    AWS_ERROR = 9  # AWS refused a call for another reason
    ELSEWHERE = 10  # launch stop: the run's launcher runs on another machine (the line says where to stop it)
    INTERNAL = 70  # a bug of ours (EX_SOFTWARE): one line, MXLAUNCH_DEBUG=1 shows the traceback
    STOPPED_FOR_CHECKPOINT = 75  # trainer: stopped on SIGUSR1 after writing its checkpoint (EX_TEMPFAIL): resume it
    TIMEOUT = 124  # the job ran past --timeout (as timeout(1))
    HUNG_UP = 129  # SIGHUP: 128 + 1
    INTERRUPTED = 130  # Ctrl-C (SIGINT): 128 + 2
    TERMINATED = 143  # SIGTERM: 128 + 15
    SSH = 255  # SSH: a host could not be reached or authenticated (as ssh(1))

    @classmethod
    def for_signal(cls, signum: int) -> "Exit":
        return cls(128 + int(signum))
