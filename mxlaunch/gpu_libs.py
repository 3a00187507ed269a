"""Make the CUDA 11 libraries of the `gpu` extra loadable, with nothing for the user to set.

`mxnet-cu112`'s libmxnet.so links libcudart.so.11.0, libcublas.so.11, ... dynamically and ships none of them;
the `gpu` extra installs them as NVIDIA's pip wheels (site-packages/nvidia/*/lib), where the loader does not
look. The wheel of mxlaunch puts `mxlaunch-gpu-libs.pth` into site-packages: every interpreter start-up runs
`install()`, which only puts a finder at the front of sys.meta_path. Importing this module costs next to
nothing (only `sys`; everything else is imported inside the functions), since every Python start in the
environment pays for it.

The finder finds nothing and stays where it is (Python is iterating sys.meta_path when it is asked): the
first time `mxnet` is imported - in the trainer, in any launched role, in a plain `python -c "import mxnet"` - it
locates the libraries by the files the installed nvidia-* distributions list (their RECORD, through
importlib.metadata: never a folder that happens to be called nvidia/ on sys.path) and loads them once with
RTLD_GLOBAL, by path, in dependency order; libmxnet.so's NEEDED entries are then satisfied by soname. Where
none is installed (the CPU wheel) nothing happens. The driver's libcuda.so.1 is the system's, as always: when
the GPU build of MXNet is installed and no driver can be loaded, the import fails with one line saying so
(`cuda.DriverMissing`: an ImportError, and a usage error of the command that imported it, exit 2).

Why not LD_LIBRARY_PATH: the loader reads it once, at process start, so it would have to be set by every shell,
service and launcher that ever starts Python in this environment. Standard library only.
"""
import os  # both already loaded by every start-up (site imports them): free here
import sys

# libmxnet.so's CUDA NEEDED entries (readelf -d), each after the libraries it needs itself.
SONAMES = ("libcudart.so.11.0", "libcublasLt.so.11", "libcublas.so.11", "libcufft.so.10", "libcurand.so.10",
           "libcusolver.so.11", "libnvrtc.so.11.2", "libnvToolsExt.so.1", "libcudnn.so.8", "libnccl.so.2")
DRIVER = "libcuda.so.1"
# The NVIDIA wheels of the gpu extra, and which of those libraries each installs.
WHEELS = {
    "nvidia-cuda-runtime-cu11": ("libcudart.so.11.0",), "nvidia-cublas-cu11": ("libcublasLt.so.11", "libcublas.so.11"),
    "nvidia-cufft-cu11": ("libcufft.so.10",), "nvidia-curand-cu11": ("libcurand.so.10",),
    "nvidia-cusolver-cu11": ("libcusolver.so.11",), "nvidia-cuda-nvrtc-cu11": ("libnvrtc.so.11.2",),
    "nvidia-nvtx-cu11": ("libnvToolsExt.so.1",), "nvidia-cudnn-cu11": ("libcudnn.so.8",), "nvidia-nccl-cu11": ("libnccl.so.2",),
}
GPU_MXNET = ("mxnet_cu", "mxnet-cu")  # dist-info names of MXNet's GPU builds: mxnet_cu112-1.9.1.dist-info, ...
SERVING_ROLES = ("server", "scheduler")  # DMLC_ROLE values for which importing mxnet is the whole program


def library_paths() -> dict:
    """soname -> file of the CUDA libraries the installed NVIDIA wheels hold, in load order: found by each
    wheel's own file list (its RECORD, through importlib.metadata), never by a folder's name on sys.path."""
    from importlib import metadata  # heavy: only when mxnet is imported (which imports it anyway)

    found = {}
    for wheel, names in WHEELS.items():
        try:
            dist = metadata.distribution(wheel)
        except metadata.PackageNotFoundError:
            continue
        root = str(dist.locate_file(""))
        for line in (dist.read_text("RECORD") or "").splitlines():  # path,hash,size (a path holds no comma here)
            path = line.rsplit(",", 2)[0]
            if path.rpartition("/")[2] in names:
                found.setdefault(path.rpartition("/")[2], os.path.join(root, path))
    return {name: found[name] for name in SONAMES if name in found}


def gpu_build(path=None) -> bool:
    """Whether the mxnet that `import mxnet` finds (on `path`, else sys.path) is a GPU build: a dist-info of
    mxnet-cuXXX beside it."""
    from importlib.machinery import PathFinder  # heavy: only when mxnet is imported

    spec = PathFinder.find_spec("mxnet", path)
    if spec is None or not spec.submodule_search_locations:
        return False
    folder = os.path.dirname(list(spec.submodule_search_locations)[0])
    try:
        return any(name.startswith(GPU_MXNET) and name.endswith(".dist-info") for name in os.listdir(folder))
    except OSError:
        return False


def preload(paths=None) -> list:
    """Load the CUDA libraries found (library_paths), in order; returns the sonames loaded. A library that fails
    to load is skipped: importing mxnet then fails with the loader's own message naming it."""
    import ctypes  # heavy: only when mxnet is imported

    loaded = []
    for name, path in (library_paths() if paths is None else paths).items():
        try:
            ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
            loaded.append(name)
        except OSError:
            pass
    return loaded


def driver_error():
    """None when the NVIDIA driver's library loads; else the DriverMissing to raise."""
    import ctypes  # heavy: only when mxnet is imported

    try:
        ctypes.CDLL(DRIVER, mode=ctypes.RTLD_GLOBAL)
        return None
    except OSError as exc:
        from mxlaunch.cuda import DriverMissing  # heavy: it brings click, which no start-up should load

        return DriverMissing(str(exc))


def prepare(path=None) -> None:
    """What the first `import mxnet` needs: the CUDA libraries loaded; with the GPU build, the driver checked."""
    preload(library_paths())
    error = driver_error() if gpu_build(path) else None
    if error is None:
        return
    if os.environ.get("DMLC_ROLE") in SERVING_ROLES:  # MXNet itself exits in this import for these roles
        program = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] not in ("", "-c") else "python"
        sys.stderr.write(f"{'python' if program == '__main__.py' else program}: error: {error}\n")
        raise SystemExit(int(error.exit_code))
    raise error


class _PreloadBeforeMxnet:
    """A meta-path finder that finds nothing: it only prepares, once, when `mxnet` is first imported. It never
    leaves sys.meta_path (Python is iterating it then: removing itself would skip the next finder)."""

    done = False

    @classmethod
    def find_spec(cls, fullname, path=None, target=None):
        if fullname == "mxnet" and not cls.done:
            cls.done = True  # first: whatever prepare() imports never comes back here
            prepare(path)
        return None


def install() -> None:
    """Called by mxlaunch-gpu-libs.pth at start-up."""
    if _PreloadBeforeMxnet not in sys.meta_path and "mxnet" not in sys.modules:
        sys.meta_path.insert(0, _PreloadBeforeMxnet)
