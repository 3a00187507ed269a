"""checkpoint_scan: a job's checkpoints under one --model-prefix, and whether their params files are whole, read
where the files are: run by the job's interpreter on a worker host (launcher/jobs/checkpoints.py sends its source
as `python -c SOURCE`: one SSH exec per host, the file reads local to the host), and imported in-process for
a local job. The one home of both rules:

Which files are checkpoints: MXNet's PREFIX-symbol.json + PREFIX-NNNN.params (after epoch NNNN-1), and the
trainer's mid-epoch PREFIX-EEEE-BBBBBB.params (epoch EEEE in progress, BBBBBB > 0 batches of it done: rank 0's
save on a spot notice); none without PREFIX-symbol.json; temporary files (`.params.tmp-<pid>`) never match.

Whether a params file is whole: it is MXNet's NDArray list (`mx.nd.save`, MXNet 1.x src/ndarray/ndarray.cc):
a header, then each array (magic, storage type, shape, context, dtype, data), then the names. Walking the
headers and seeking past the data proves every array and name is there and nothing follows: a file cut short
anywhere (a writer killed mid-save, a full disk) fails, at the cost of a few small reads per array.

Stdlib only, Python >= 3.6, no `import mxnet`. A conversation of at most two requests (relative paths are
under the current directory: the login directory over SSH):
stdin, one JSON line:   {"prefix": "ckpt/m"}
stdout, one line:       MARKER {"found": [[epoch, batch, mtime, size], ...]}   # mtime: whole seconds
stdin, one JSON line:   {"check": [[epoch, batch], ...]}   # newest first; EOF instead: nothing more to do
stdout, one line:       MARKER {"whole": [epoch, batch] | null}   # the first of them whose params file is whole
"""
import json
import os
import re
import stat
import struct
import sys

MARKER = "@@checkpoints"
SYMBOL_SUFFIX = "-symbol.json"  # MXNet's PREFIX-symbol.json, written before any PREFIX-NNNN.params

LIST_MAGIC = 0x112
V2_MAGIC, V3_MAGIC = 0xF993FAC9, 0xF993FACA  # V3: NumPy shape semantics (ndim -1 = unknown, 0 = scalar)
DEFAULT_STORAGE = 0
DTYPE_BYTES = {0: 4, 1: 8, 2: 2, 3: 1, 4: 4, 5: 1, 6: 8, 7: 1, 8: 2, 9: 2, 10: 4, 11: 8, 12: 2}  # mshadow type flags
MAX_NAME = 1 << 20  # a name longer than this is a damaged length, not a name


# ------------------------------------------------------------------------------------- which files
def params_name(prefix, epoch, batch=0):
    """PREFIX-EEEE.params (batch 0: the epoch checkpoint) or PREFIX-EEEE-BBBBBB.params."""
    return "%s-%04d%s.params" % (prefix, epoch, "-%06d" % batch if batch else "")


def points_in(names, prefix_name):
    """{(epoch, batch)} of every checkpoint among file names (batch 0: an epoch checkpoint)."""
    names = list(names)
    if prefix_name + SYMBOL_SUFFIX not in names:
        return set()
    pattern = re.compile(re.escape(prefix_name) + r"-(\d+)(?:-(\d*[1-9]\d*))?\.params")  # a batch count > 0
    return {(int(m.group(1)), int(m.group(2) or 0)) for m in map(pattern.fullmatch, names) if m}


def listing(prefix):
    """[(epoch, batch, mtime in ns, size)] of every checkpoint of `prefix`; [] without its directory."""
    try:
        names = os.listdir(os.path.dirname(prefix) or ".")
    except OSError:
        return []
    found = []
    for epoch, batch in points_in(names, os.path.basename(prefix)):
        try:
            st = os.stat(params_name(prefix, epoch, batch))
        except OSError:  # gone since the listing
            continue
        found.append((epoch, batch, st.st_mtime_ns, st.st_size))
    return found


# -------------------------------------------------------------------------------------- whole files
class Incomplete(Exception):
    """The file ends (or goes wrong) before MXNet's format says it should."""


def _read(stream, fmt):
    size = struct.calcsize(fmt)
    data = stream.read(size)
    if len(data) != size:
        raise Incomplete("ends early")
    return struct.unpack(fmt, data)


def _skip(stream, size, nbytes):
    end = stream.tell() + nbytes
    if end > size:
        raise Incomplete("an array's data is cut short")
    stream.seek(end)


def check(stream, size):
    """True when `stream` (seekable, at its start, `size` bytes long) is a whole NDArray list file; raises
    Incomplete otherwise. False: an array kind this check does not walk (sparse), so it cannot tell."""
    magic, _reserved, count = _read(stream, "<QQQ")
    if magic != LIST_MAGIC:
        raise Incomplete("not an MXNet params file (magic %#x)" % magic)
    for _ in range(count):
        (array_magic,) = _read(stream, "<I")
        if array_magic not in (V2_MAGIC, V3_MAGIC):
            raise Incomplete("bad array header %#x" % array_magic)
        (storage,) = _read(stream, "<i")
        if storage != DEFAULT_STORAGE:
            return False
        (ndim,) = _read(stream, "<i")
        if ndim < 0 or (ndim == 0 and array_magic == V2_MAGIC):  # an unknown shape: no data follows
            continue
        if stream.tell() + 8 * ndim > size:  # a damaged ndim would size a read of gigabytes
            raise Incomplete("bad array header (ndim %d)" % ndim)
        dims = _read(stream, "<%dq" % ndim)
        _dev_type, _dev_id, dtype = _read(stream, "<iii")
        if dtype not in DTYPE_BYTES or any(d < 0 for d in dims):
            raise Incomplete("bad array header (dtype %s, shape %s)" % (dtype, dims))
        elements = 1
        for d in dims:
            elements *= d
        _skip(stream, size, elements * DTYPE_BYTES[dtype])
    (names,) = _read(stream, "<Q")
    if names not in (0, count):
        raise Incomplete("%d names for %d arrays" % (names, count))
    for _ in range(names):
        (length,) = _read(stream, "<Q")
        if length > MAX_NAME:
            raise Incomplete("bad name length")
        _skip(stream, size, length)
    if stream.tell() != size:
        raise Incomplete("%d bytes past the end of the arrays" % (size - stream.tell()))
    return True


def is_complete(stream, size):
    """Whether a params file can be resumed from: whole, or of a kind this check cannot walk."""
    try:
        check(stream, size)
        return True
    except (Incomplete, OverflowError, struct.error, OSError):
        return False


def local_complete(path):
    """Whether the regular file `path` is a whole params file. A FIFO there would block the read forever, a
    link could show any file: neither is a checkpoint (O_NONBLOCK: opening a FIFO does not wait for a writer)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False
    with os.fdopen(fd, "rb") as stream:
        st = os.fstat(fd)
        return stat.S_ISREG(st.st_mode) and is_complete(stream, st.st_size)


def first_whole(prefix, points):
    """The first (epoch, batch) of `points` whose params file is whole, or None: newest first, the older ones
    are never read (a writer killed mid-save, a full disk cost one file each)."""
    for epoch, batch in points:
        if local_complete(params_name(prefix, epoch, batch)):
            return [epoch, batch]
    return None


# ------------------------------------------------------------------------------------- the program
def _reply(payload):
    sys.stdout.write("%s %s\n" % (MARKER, json.dumps(payload)))
    sys.stdout.flush()


def parse_reply(line):
    """The JSON object of one reply line, or None when the line is not one."""
    marker, _, payload = line.strip().partition(" ")
    if marker != MARKER:
        return None
    try:
        return json.loads(payload)
    except ValueError:
        return None


def main():
    prefix = json.loads(sys.stdin.readline())["prefix"]
    _reply({"found": [[e, b, mtime // 10 ** 9, size] for e, b, mtime, size in listing(prefix)]})  # SFTP's seconds
    line = sys.stdin.readline()
    if line.strip():
        _reply({"whole": first_whole(prefix, json.loads(line)["check"])})


if __name__ == "__main__":
    main()
