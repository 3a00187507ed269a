"""Whether an MXNet `.params` file is whole, read with the standard library only (no `import mxnet`), from
a local file or over SFTP: the launcher picks the checkpoint a restart resumes from on any machine.

The file is MXNet's NDArray list (`mx.nd.save`, MXNet 1.x src/ndarray/ndarray.cc): a header, then each
array (magic, storage type, shape, context, dtype, data), then the names. Walking the headers and seeking
past the data proves every array and name is there and nothing follows: a file cut short anywhere (a
writer killed mid-save, a full disk) fails, at the cost of a few small reads per array.
"""
from __future__ import annotations

import struct
from typing import BinaryIO

LIST_MAGIC = 0x112
V2_MAGIC, V3_MAGIC = 0xF993FAC9, 0xF993FACA  # V3: NumPy shape semantics (ndim -1 = unknown, 0 = scalar)
DEFAULT_STORAGE = 0
DTYPE_BYTES = {0: 4, 1: 8, 2: 2, 3: 1, 4: 4, 5: 1, 6: 8, 7: 1, 8: 2, 9: 2, 10: 4, 11: 8, 12: 2}  # mshadow type flags
MAX_NAME = 1 << 20  # a name longer than this is a damaged length, not a name


class Incomplete(Exception):
    """The file ends (or goes wrong) before MXNet's format says it should."""


def _read(stream: BinaryIO, fmt: str):
    size = struct.calcsize(fmt)
    data = stream.read(size)
    if len(data) != size:
        raise Incomplete("ends early")
    return struct.unpack(fmt, data)


def _skip(stream: BinaryIO, size: int, nbytes: int) -> None:
    end = stream.tell() + nbytes
    if end > size:
        raise Incomplete("an array's data is cut short")
    stream.seek(end)


def check(stream: BinaryIO, size: int) -> bool:
    """True when `stream` (seekable, at its start, `size` bytes long) is a whole NDArray list file; raises
    Incomplete otherwise. False: an array kind this check does not walk (sparse), so it cannot tell."""
    magic, _reserved, count = _read(stream, "<QQQ")
    if magic != LIST_MAGIC:
        raise Incomplete(f"not an MXNet params file (magic {magic:#x})")
    for _ in range(count):
        (array_magic,) = _read(stream, "<I")
        if array_magic not in (V2_MAGIC, V3_MAGIC):
            raise Incomplete(f"bad array header {array_magic:#x}")
        (storage,) = _read(stream, "<i")
        if storage != DEFAULT_STORAGE:
            return False
        (ndim,) = _read(stream, "<i")
        if ndim < 0 or (ndim == 0 and array_magic == V2_MAGIC):  # an unknown shape: no data follows
            continue
        dims = _read(stream, f"<{ndim}q")
        _dev_type, _dev_id, dtype = _read(stream, "<iii")
        if dtype not in DTYPE_BYTES or any(d < 0 for d in dims):
            raise Incomplete(f"bad array header (dtype {dtype}, shape {dims})")
        elements = 1
        for d in dims:
            elements *= d
        _skip(stream, size, elements * DTYPE_BYTES[dtype])
    (names,) = _read(stream, "<Q")
    if names not in (0, count):
        raise Incomplete(f"{names} names for {count} arrays")
    for _ in range(names):
        (length,) = _read(stream, "<Q")
        if length > MAX_NAME:
            raise Incomplete("bad name length")
        _skip(stream, size, length)
    if stream.tell() != size:
        raise Incomplete(f"{size - stream.tell()} bytes past the end of the arrays")
    return True


def is_complete(stream: BinaryIO, size: int) -> bool:
    """Whether a params file can be resumed from: whole, or of a kind this check cannot walk."""
    try:
        check(stream, size)
        return True
    except (Incomplete, OverflowError, struct.error, OSError):
        return False


def local_complete(path: str) -> bool:
    import os

    try:
        with open(path, "rb") as stream:
            return is_complete(stream, os.fstat(stream.fileno()).st_size)
    except OSError:
        return False
