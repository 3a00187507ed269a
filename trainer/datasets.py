"""`trainer data ...`: turn public data sets into the RecordIO files the trainer reads.

The digits ship with the trainer (digits.csv.gz, 57 KB): the 1,797 8x8 images of UCI's "Optical
Recognition of Handwritten Digits" (Alpaydin and Kaynak, CC BY 4.0) in the file scikit-learn's
`load_digits()` reads, byte for byte. Shipping it keeps `trainer data digits` working with the `cpu` or
`gpu` extra alone, without scikit-learn and scipy (~100 MB, pinned to old releases by numpy 1.23.5) on
every host.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import logging
import os
import pickle
import shutil
import tarfile
import tempfile
import urllib.request
from typing import Iterator, List, Tuple

import numpy as np

from mxlaunch.trainer.records import DataError, encode_png, write_records

log = logging.getLogger("trainer.data")

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_BATCH = "test_batch"

DIGITS_VAL_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0  # fixed split: the same files on every machine
DIGITS_SIZE = 32  # CIFAR-size, so CIFAR networks and commands apply unchanged


def md5_of(path: str) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class _CifarUnpickler(pickle.Unpickler):
    """Unpickles only what a CIFAR-10 batch holds (dicts, lists, strings, bytes, numbers and numpy arrays):
    a pickle is a program, and a tarball from elsewhere must not run one."""

    ALLOWED = {(core, name) for core in ("numpy.core.multiarray", "numpy._core.multiarray")
               for name in ("_reconstruct", "scalar")}
    ALLOWED |= {("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
                ("numpy", "ndarray"), ("numpy", "dtype"),
                ("_codecs", "encode")}  # how Python 2 pickles (the official tarball's) carry bytes

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} (only arrays, lists, dicts, "
                                     f"strings and numbers)")


def _load_batch(stream):
    return _CifarUnpickler(stream, encoding="bytes").load()


def download(url: str, dest: str, md5: str, timeout: float = 60.0) -> None:
    """Download to a temporary file and keep it only if its checksum is the expected one."""
    log.info("downloading %s", url)
    fd, partial = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(dest)), suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            shutil.copyfileobj(response, out)
        actual = md5_of(partial)
        if actual != md5:
            raise DataError(f"download of {url} is corrupt: md5 {actual}, expected {md5}")
        os.replace(partial, dest)
    except OSError as exc:
        raise DataError(f"cannot download {url}: {exc}") from exc
    finally:
        if os.path.exists(partial):
            os.unlink(partial)


def _cifar_batches(tarball: str, names: Tuple[str, ...]) -> Iterator[Tuple[np.ndarray, List[int]]]:
    try:
        archive = tarfile.open(tarball, "r:gz")
    except (OSError, tarfile.TarError) as exc:
        raise DataError(f"{tarball}: not a readable .tar.gz ({exc})") from exc
    with archive:
        members = {os.path.basename(m.name): m for m in archive.getmembers() if m.isfile()}
        for name in names:
            if name not in members:
                raise DataError(f"{tarball}: no {name} inside (is it the CIFAR-10 python version?)")
            try:
                batch = _load_batch(archive.extractfile(members[name]))
                data = np.asarray(batch[b"data"], dtype=np.uint8)
                labels = [int(x) for x in batch[b"labels"]]
            except Exception as exc:  # pickle raises many types on garbage
                raise DataError(f"{tarball}: {name} is not a CIFAR-10 batch ({exc})") from exc
            if data.ndim != 2 or data.shape[1] != 3072 or len(labels) != data.shape[0]:
                raise DataError(f"{tarball}: {name} has data of shape {data.shape}, expected N x 3072")
            yield data, labels


def _cifar_samples(tarball: str, names: Tuple[str, ...]) -> Iterator[Tuple[int, bytes]]:
    for data, labels in _cifar_batches(tarball, names):
        # rows are R, G, B planes of 32x32: to height x width x channel
        images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        for image, label in zip(images, labels):
            yield label, encode_png(image)


def convert_cifar10(out_dir: str, tarball: str = None, url: str = CIFAR10_URL, md5: str = CIFAR10_MD5,
                    unverified: bool = False) -> dict:
    """Write cifar10_train.rec/.idx and cifar10_val.rec/.idx from the official python-version tarball.
    A local tarball whose checksum is not `md5` is refused unless `unverified` (then read all the same,
    through the restricted unpickler, as every tarball is)."""
    if tarball is not None and not os.path.isfile(tarball):
        raise DataError(f"tarball not found: {tarball}")
    if tarball is not None and md5_of(tarball) != md5:
        if not unverified:
            raise DataError(f"{tarball}: md5 {md5_of(tarball)} is not the expected {md5} (not the official "
                            f"CIFAR-10 tarball, or damaged): pass --unverified to convert it anyway")
        log.warning("%s: checksum differs from the official tarball: converting it as given (--unverified)",
                    tarball)
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create --out {out_dir}: {exc.strerror}") from exc
    if tarball is None:
        tarball = os.path.join(out_dir, os.path.basename(url) or "cifar-10-python.tar.gz")
        if not (os.path.isfile(tarball) and md5_of(tarball) == md5):
            download(url, tarball, md5)
    counts = {}
    for split, names in (("train", CIFAR10_TRAIN_BATCHES), ("val", (CIFAR10_TEST_BATCH,))):
        rec = os.path.join(out_dir, f"cifar10_{split}.rec")
        counts[split] = write_records(rec, _cifar_samples(tarball, names))
        log.info("wrote %s (%d images)", rec, counts[split])
    return counts


DIGITS_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "digits.csv.gz")


def load_digits() -> Tuple[np.ndarray, np.ndarray]:
    """(images N x 8 x 8 float, labels N int) as scikit-learn's `load_digits()` gives them, from the shipped file."""
    with gzip.open(DIGITS_FILE, "rb") as f:
        data = np.loadtxt(io.TextIOWrapper(f, encoding="ascii"), delimiter=",")
    return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(int)


def digits_split() -> Tuple[Tuple[np.ndarray, np.ndarray], Tuple[np.ndarray, np.ndarray]]:
    """The 1,797 real handwritten digits as 3x32x32 uint8 images, split train/val once and for all."""
    from PIL import Image  # heavy

    images, target = load_digits()
    # 8x8 intensities 0..16 -> 0..255, smoothly upscaled to CIFAR size, grey in all three channels
    small = np.clip(images * (255.0 / 16.0), 0, 255).astype(np.uint8)
    large = np.stack([
        np.asarray(Image.fromarray(img).resize((DIGITS_SIZE, DIGITS_SIZE), Image.BILINEAR)) for img in small
    ])
    rgb = np.repeat(large[..., None], 3, axis=3)
    order = np.random.RandomState(DIGITS_SPLIT_SEED).permutation(len(rgb))
    n_val = int(round(len(rgb) * DIGITS_VAL_FRACTION))
    val, train = order[:n_val], order[n_val:]
    return (rgb[train], target[train]), (rgb[val], target[val])


def convert_digits(out_dir: str) -> dict:
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create --out {out_dir}: {exc.strerror}") from exc
    counts = {}
    for split, (images, labels) in zip(("train", "val"), digits_split()):
        rec = os.path.join(out_dir, f"digits_{split}.rec")
        counts[split] = write_records(rec, ((int(y), encode_png(x)) for x, y in zip(images, labels)))
        log.info("wrote %s (%d images)", rec, counts[split])
    return counts
