"""Make the CUDA 11 libraries of the `gpu` extra loadable, with nothing for the user to set.

`mxnet-cu112`'s libmxnet.so links libcudart.so.11.0, libcublas.so.11, ... dynamically and ships none of them;
the `gpu` extra installs them as NVIDIA's pip wheels (site-packages/nvidia/*/lib), where the loader does not
look. The wheel of mxlaunch puts `mxlaunch-gpu-libs.pth` into site-packages: at interpreter start-up it calls
`install()`, which only registers a finder (microseconds, no file is opened). The first `import mxnet` — in the
trainer, in any launched role, or in a plain `python -c "import mxnet"` — then loads those libraries once with
RTLD_GLOBAL, by path, in dependency order; libmxnet.so's NEEDED entries are then satisfied by soname. Where the
folders are absent (the CPU wheel) nothing happens. The driver's libcuda.so.1 is the system's, as always.

Why not LD_LIBRARY_PATH: the loader reads it once, at process start, so it would have to be set by every shell,
service and launcher that ever starts Python in this environment. Standard library only: it runs at start-up.
"""
from __future__ import annotations

import ctypes
import glob
import os
import sys

# libmxnet.so's CUDA NEEDED entries (readelf -d), each after the libraries it needs itself.
SONAMES = ("libcudart.so.11.0", "libcublasLt.so.11", "libcublas.so.11", "libcufft.so.10", "libcurand.so.10",
           "libcusolver.so.11", "libnvrtc.so.11.2", "libnvToolsExt.so.1", "libcudnn.so.8", "libnccl.so.2")


def library_paths(search=None) -> dict:
    """soname -> file, from the nvidia/*/lib folders of the first sys.path entry that has them."""
    for entry in (search if search is not None else sys.path):
        found = {os.path.basename(p): p for p in glob.glob(os.path.join(entry or ".", "nvidia", "*", "lib", "*.so*"))}
        if found:
            return {name: found[name] for name in SONAMES if name in found}
    return {}


def preload(search=None) -> list:
    """Load the CUDA libraries found, in order; returns the sonames loaded. A library that fails to load is
    skipped: importing mxnet then fails with the loader's own message naming it."""
    loaded = []
    for name, path in library_paths(search).items():
        try:
            ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
            loaded.append(name)
        except OSError:
            pass
    return loaded


class _PreloadBeforeMxnet:
    """A meta-path finder that finds nothing: it only preloads, once, when `mxnet` is first imported."""

    @classmethod
    def find_spec(cls, fullname, path=None, target=None):
        if fullname == "mxnet":
            if cls in sys.meta_path:
                sys.meta_path.remove(cls)
            preload()
        return None


def install() -> None:
    """Called by mxlaunch-gpu-libs.pth at start-up."""
    if _PreloadBeforeMxnet not in sys.meta_path and "mxnet" not in sys.modules:
        sys.meta_path.insert(0, _PreloadBeforeMxnet)
