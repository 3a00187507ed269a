"""The one build step that needs code; everything else about the project is in pyproject.toml."""
import os

from setuptools import setup
from setuptools.command.build_py import build_py

GPU_LIBS_PTH = "mxlaunch-gpu-libs.pth"  # see mxlaunch/gpu_libs.py: lets `import mxnet` find the CUDA wheels


class build_py_with_pth(build_py):
    """Also put mxlaunch-gpu-libs.pth at the top of the wheel, so that it lands in site-packages itself: the
    regular wheel and the editable one (`pip install -e`) alike."""

    def run(self):
        super().run()
        self.copy_file(GPU_LIBS_PTH, os.path.join(self._pth_folder(), GPU_LIBS_PTH), preserve_mode=False)

    def _pth_folder(self) -> str:
        if getattr(self, "editable_mode", False):
            # an editable wheel is made of what the install commands write (its root is their install_lib),
            # not of the build output, which stays behind in a temporary folder
            return self.get_finalized_command("install").install_lib
        return self.build_lib

    def get_outputs(self, include_bytecode=True):
        outputs = super().get_outputs(include_bytecode)
        if getattr(self, "editable_mode", False):
            return outputs  # the .pth is not a build output there (see _pth_folder)
        return outputs + [os.path.join(self.build_lib, GPU_LIBS_PTH)]


setup(cmdclass={"build_py": build_py_with_pth})
