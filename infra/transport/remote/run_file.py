"""run_file: one file of a run directory, read on the host where it is (the launcher fetches what roles wrote
under WORKDIR/runs, and a cluster's run records, through this: infra/transport/ssh_runner.py). Another user of
the host may own WORKDIR/runs and plant links or FIFOs there: the directory is opened without following a link
and must be this user's own (not writable by others), the file is opened under it (openat) without following a
link, must be a regular file of this user's, and at most LIMIT bytes are read.

Stdlib only, Python >= 3.6. argv: MODE DIR NAME LIMIT, MODE "stat" or "read"; or `stats DIR NAME...` (every
file at once: one program per host however many files a job wrote). stdout, one line:
    MARKER {"mtime": T, "size": N}                          stat
    MARKER {"mtime": T, "size": N, "data": BASE64}          read
    MARKER {"files": {NAME: {"mtime": T, "size": N}, ...}}  stats (each NAME's value as stat's, without a bound)
    MARKER {"missing": true}                                no such directory or file
    MARKER {"refused": "why, in a clause"}                  a link, not a regular file, another user's, too large
"""
import base64
import errno
import json
import os
import stat
import sys

MARKER = "@@run-file"


class Refused(Exception):
    pass


def _open_dir(folder):
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise Refused("%s is a symbolic link or not a directory" % folder)
        raise
    st = os.fstat(fd)
    if st.st_uid != os.geteuid() or st.st_mode & stat.S_IWOTH:
        os.close(fd)
        raise Refused("%s is not this user's own directory" % folder)
    return fd


def _open_file(dir_fd, folder, name):
    path = os.path.join(folder, name)
    try:  # O_NONBLOCK: a FIFO without a writer must not block the open
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise Refused("%s is a symbolic link" % path)
        raise
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
        os.close(fd)
        raise Refused("%s is not a regular file of this user's" % path)
    return fd, st


def _refusal(exc, path):
    """The reply for what kept `path` from being opened (a Refused or an OSError)."""
    if isinstance(exc, Refused):
        return {"refused": str(exc)}
    if exc.errno == errno.ENOENT:
        return {"missing": True}
    return {"refused": "%s: %s" % (path, exc.strerror)}


def _not_a_name(name):
    return {"refused": "%r is not a file name" % name} if os.sep in name or name in ("", ".", "..") else None


def answer(mode, folder, name, limit):
    """The reply's JSON object for one request."""
    if _not_a_name(name):
        return _not_a_name(name)
    try:
        dir_fd = _open_dir(folder)
        try:
            fd, st = _open_file(dir_fd, folder, name)
        finally:
            os.close(dir_fd)
    except (Refused, OSError) as exc:
        return _refusal(exc, os.path.join(folder, name))
    with os.fdopen(fd, "rb") as f:
        reply = {"mtime": st.st_mtime, "size": st.st_size}
        if st.st_size > limit:
            return {"refused": "%s is larger than %d bytes" % (os.path.join(folder, name), limit)}
        if mode == "read":
            data = f.read(limit + 1)
            if len(data) > limit:  # it grew while being read
                return {"refused": "%s is larger than %d bytes" % (os.path.join(folder, name), limit)}
            reply.update(size=len(data), data=base64.b64encode(data).decode("ascii"))
    return reply


def _stat_in(dir_fd, folder, name):
    if _not_a_name(name):
        return _not_a_name(name)
    try:
        fd, st = _open_file(dir_fd, folder, name)
    except (Refused, OSError) as exc:
        return _refusal(exc, os.path.join(folder, name))
    os.close(fd)
    return {"mtime": st.st_mtime, "size": st.st_size}


def stats(folder, names):
    """The reply for `stats`: each file of `names` under `folder`, checked as `answer` checks one."""
    try:
        dir_fd = _open_dir(folder)
    except (Refused, OSError) as exc:
        return _refusal(exc, folder)
    try:
        return {"files": dict((name, _stat_in(dir_fd, folder, name)) for name in names)}
    finally:
        os.close(dir_fd)


def parse_reply(text):
    """The reply object in a program's stdout; None when there is none."""
    for line in text.splitlines():
        if line.startswith(MARKER + " "):
            try:
                found = json.loads(line[len(MARKER) + 1:])
            except ValueError:
                return None
            return found if isinstance(found, dict) else None
    return None


def main(argv):
    if argv[0] == "stats":
        reply = stats(argv[1], argv[2:])
    else:
        reply = answer(argv[0], argv[1], argv[2], int(argv[3]))
    sys.stdout.write("%s %s\n" % (MARKER, json.dumps(reply)))


if __name__ == "__main__":
    main(sys.argv[1:])
