"""`launch train`'s environment options: --env KEY=VALUE / KEY (its value from this environment, so that a secret
is never on a command line), --env-file FILE, --env-worker/--env-server."""
from __future__ import annotations

import os
from typing import Sequence, Tuple

from mxlaunch.errors import UsageError
from mxlaunch.files import MIB, size_text
from mxlaunch.launcher.jobs.plan import check_env_key, parse_env_pair

ENV_FILE_LIMIT = MIB  # characters: an environment file is a few lines; /dev/zero is not one


def from_environment(key: str, option: str, where: str = "") -> Tuple[str, str]:
    """`KEY` alone: its value from the launcher's own environment, so that a secret is never on a command line."""
    check_env_key(key, where or option)
    if key not in os.environ:
        raise UsageError(f"{where or option} {key}: not set in this environment (export it first, or give "
                         f"{key}=VALUE)")
    return key, os.environ[key]


def env_pairs(values: Sequence[str], option: str) -> Tuple[Tuple[str, str], ...]:
    """--env KEY=VALUE, or --env KEY (the value of KEY here)."""
    return tuple(parse_env_pair(v, option) if "=" in v else from_environment(v, option) for v in values)


def read_env_file(path: str) -> Tuple[Tuple[str, str], ...]:
    """--env-file FILE: `KEY=VALUE` lines (the value as is, to the end of the line; `export ` allowed before
    it), `KEY` alone (from this environment), blank lines and `#` comments. Errors name the line and the
    key, never a value."""
    try:
        with open(path, encoding="utf-8", newline="") as f:  # the user's own file (a pipe too): links are fine
            text = f.read(ENV_FILE_LIMIT + 1)
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--env-file {path}: cannot read it ({getattr(exc, 'strerror', None) or exc})") from exc
    if len(text) > ENV_FILE_LIMIT:
        raise UsageError(f"--env-file {path}: larger than {size_text(ENV_FILE_LIMIT)}: not an environment file")
    # only "\n" ends a line: str.splitlines() would also split a value at \v, \f, \x1c, U+2028, ...
    lines = text.split("\n")
    pairs = []
    for number, line in enumerate(lines, 1):
        body = line.strip()
        if not body or body.startswith("#"):
            continue
        if body.startswith("export "):
            body = body[len("export "):].lstrip()
        where = f"--env-file {path}:{number}"
        key, sep, value = body.partition("=")
        if sep:
            key = check_env_key(key.strip(), where)
            if "\0" in value:  # no environment can hold it: every role would fail to start
                raise UsageError(f"{where} {key}: its value holds a NUL byte, which no environment variable can")
            pairs.append((key, value))
        else:
            pairs.append(from_environment(key, "--env-file", where))
    return tuple(pairs)


def user_env(env: Sequence[str], env_files: Sequence[str]) -> Tuple[Tuple[str, str], ...]:
    """Every role's environment from --env-file FILEs, then --env (a later value wins)."""
    return sum((read_env_file(path) for path in env_files), ()) + env_pairs(env, "--env")
