"""RecordIO files: write them, and inspect them before MXNet's C++ reader sees them.

MXNet's `ImageRecordIter` answers a missing, corrupt or mismatched file with a C++ stack trace or a
crash deep inside training; every check a user can get wrong is done here first, in Python, with one
clear line (`DataError`, exit status 2).
"""
from __future__ import annotations

import io
import os
import struct
from dataclasses import dataclass
from typing import Iterable, Iterator, Optional, Tuple

import numpy as np

from mxlaunch.errors import UsageError

RECORDIO_MAGIC = 0xCED7230A
_IR_FORMAT = "IfQQ"  # MXNet's IRHeader: flag, label, id, id2
_IR_SIZE = struct.calcsize(_IR_FORMAT)


class DataError(UsageError):
    """A data file that cannot be trained on as given."""


@dataclass(frozen=True)
class RecordSummary:
    """What a `.rec` file holds, learned by reading it once."""

    path: str
    count: int
    max_label: int
    image_shape: Tuple[int, int, int]  # (channels, height, width) of the first image


def index_path(rec_path: str) -> str:
    return os.path.splitext(rec_path)[0] + ".idx"


def write_records(rec_path: str, samples: Iterable[Tuple[int, bytes]]) -> int:
    """Write (label, encoded image) pairs as `rec_path` and its `.idx`; return the record count."""
    import mxnet as mx  # heavy

    os.makedirs(os.path.dirname(os.path.abspath(rec_path)), exist_ok=True)
    writer = mx.recordio.MXIndexedRecordIO(index_path(rec_path), rec_path, "w")
    count = 0
    try:
        for count, (label, encoded) in enumerate(samples, start=1):
            header = mx.recordio.IRHeader(0, float(label), count - 1, 0)
            writer.write_idx(count - 1, mx.recordio.pack(header, encoded))
    finally:
        writer.close()
    return count


def encode_png(pixels_hwc: np.ndarray) -> bytes:
    """Lossless encoding, so that converted pixels round-trip exactly."""
    from PIL import Image  # heavy

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels_hwc, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _read_raw_records(path: str) -> Iterator[bytes]:
    """Yield each record's payload, validating the RecordIO framing as it goes (pure Python, fast)."""
    for _, payload in _records_at(path):
        yield payload


def _records_at(path: str) -> Iterator[Tuple[int, bytes]]:
    """(byte offset of its header, payload) of every record."""
    with open(path, "rb") as stream:
        while True:
            offset = stream.tell()
            head = stream.read(8)
            if not head:
                return
            if len(head) < 8:
                raise DataError(f"{path}: truncated record header at byte {offset}")
            magic, lrecord = struct.unpack("<II", head)
            if magic != RECORDIO_MAGIC:
                raise DataError(f"{path}: not a RecordIO file, or corrupt at byte {offset} (bad magic number)")
            cflag, length = lrecord >> 29, lrecord & ((1 << 29) - 1)
            if cflag != 0:
                raise DataError(f"{path}: multi-part records are not supported (byte {offset})")
            payload = stream.read(length)
            if len(payload) < length:
                raise DataError(f"{path}: truncated record at byte {offset}")
            stream.seek((4 - length % 4) % 4, os.SEEK_CUR)
            yield offset, payload


def index_text(path: str) -> str:
    """An `.idx` for `path`, as MXIndexedRecordIO writes one: `key\toffset` per record, keys 0, 1, ..."""
    return "".join(f"{key}\t{offset}\n" for key, (offset, _) in enumerate(_records_at(path)))


def unpack_record(payload: bytes) -> Tuple[float, bytes]:
    """(label, encoded image bytes) of one record payload; multi-label records give their first label."""
    flag, label, _, _ = struct.unpack(_IR_FORMAT, payload[:_IR_SIZE])
    body = payload[_IR_SIZE:]
    if flag > 0:  # label vector stored in front of the image
        labels = np.frombuffer(body[: flag * 4], dtype=np.float32)
        label, body = float(labels[0]), body[flag * 4:]
    return label, body


def decode_image(encoded: bytes, path: str) -> np.ndarray:
    """Decode one image to HWC uint8 (what the network sees after MXNet's own decoder)."""
    from PIL import Image, UnidentifiedImageError  # heavy

    try:
        with Image.open(io.BytesIO(encoded)) as image:
            # a copy: an array that shares the decoder's buffer changes once the image is closed
            return np.array(image.convert("RGB") if image.mode not in ("L", "RGB") else image)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DataError(f"{path}: a record holds no decodable image ({exc})") from exc


def iter_records(path: str) -> Iterator[Tuple[float, np.ndarray]]:
    """(label, HWC pixels) of every record, in file order."""
    for payload in _read_raw_records(path):
        label, encoded = unpack_record(payload)
        yield label, decode_image(encoded, path)


def summarize(path: str, what: str = "data") -> RecordSummary:
    """Read every record header of `path` once: count, largest label, and the shape of the first image."""
    if not path:
        raise DataError(f"no {what} file given")
    if not os.path.isfile(path):
        raise DataError(f"{what} file not found: {path}")
    count, max_label, first = 0, -1, None
    for payload in _read_raw_records(path):
        if len(payload) < _IR_SIZE:
            raise DataError(f"{path}: record {count} is too short to hold a header (corrupt file)")
        label, encoded = unpack_record(payload)
        if first is None:
            first = decode_image(encoded, path)
        if label != int(label) or label < 0:
            raise DataError(f"{path}: record {count} has label {label}, expected a class index >= 0")
        max_label = max(max_label, int(label))
        count += 1
    if count == 0:
        raise DataError(f"{path}: holds no records")
    channels = 1 if first.ndim == 2 else first.shape[2]
    return RecordSummary(path, count, max_label, (channels, first.shape[0], first.shape[1]))


def check_image_shape(summary: RecordSummary, image_shape: Tuple[int, int, int], pad: int) -> None:
    """The network input must have the data's channels and fit inside the (padded) images."""
    channels, height, width = summary.image_shape
    want_c, want_h, want_w = image_shape
    if want_c != channels and not (want_c == 3 and channels == 1):
        raise DataError(f"--image-shape {want_c},{want_h},{want_w} does not match {summary.path}: "
                        f"its images have {channels} channel(s)")
    if want_h > height + 2 * pad or want_w > width + 2 * pad:
        raise DataError(f"--image-shape {want_c},{want_h},{want_w} does not match {summary.path}: its images "
                        f"are {height}x{width} (with --pad-size {pad}); use at most "
                        f"{channels},{height + 2 * pad},{width + 2 * pad}")


def check_labels(summary: RecordSummary, num_classes: int) -> None:
    if summary.max_label >= num_classes:
        raise DataError(f"--num-classes {num_classes} is too small: {summary.path} has label "
                        f"{summary.max_label} (need --num-classes >= {summary.max_label + 1})")


def read_index_count(path: str) -> Optional[int]:
    """Record count from the `.idx` beside `path`, when there is one."""
    idx = index_path(path)
    if not os.path.isfile(idx):
        return None
    with open(idx) as stream:
        return sum(1 for line in stream if line.strip())
