"""mxlaunch: take Apache MXNet training from one machine to a GPU cluster on AWS, and back."""
import os

from setuptools import setup
from setuptools.command.build_py import build_py

GPU_LIBS_PTH = "mxlaunch-gpu-libs.pth"  # see mxlaunch/gpu_libs.py: lets `import mxnet` find the CUDA wheels

CPU = ["mxnet==1.9.1", "numpy==1.23.5"]
# mxnet-cu112 links CUDA 11 dynamically and ships none of it: NVIDIA's wheels bring each library
# libmxnet.so needs (cuDNN 8, not 9: soname libcudnn.so.8). mxlaunch/gpu_libs.py makes them loadable.
GPU = ["mxnet-cu112==1.9.1", "numpy==1.23.5",
       "nvidia-cuda-runtime-cu11==11.8.89", "nvidia-cublas-cu11==11.11.3.6", "nvidia-cufft-cu11==10.9.0.58",
       "nvidia-curand-cu11==10.3.0.86", "nvidia-cusolver-cu11==11.4.1.48", "nvidia-cuda-nvrtc-cu11==11.8.89",
       "nvidia-cudnn-cu11==8.9.6.50", "nvidia-nccl-cu11==2.21.5", "nvidia-nvtx-cu11==11.8.86"]
TEST = [
    "pytest>=7",
    "pytest-timeout>=2.1",
    "pytest-xdist>=3.5",  # `make test` runs the suite in 2 workers (tests/conftest.py groups what must share one)
    # only to check the digits the trainer ships (trainer/digits.csv.gz) against load_digits(); these
    # releases are the newest that install beside numpy 1.23.5
    "scikit-learn==1.3.2",
    "scipy>=1.11,<1.12",
    "moto[server,ec2,efs,ssm,sts]>=5",
    "parliament>=1.6",  # the IAM policy linter: tests/test_cluster_policy.py runs it over `launch cluster policy`
]

PACKAGES = {
    "mxlaunch": "mxlaunch",  # the base: exit statuses, one-line errors, CUDA facts, the GPU library loader
    "mxlaunch.templates": "templates",  # the text of every rendered file, and render()
    "mxlaunch.trainer": "trainer",
    "mxlaunch.trainer.networks": "trainer/networks",
    "mxlaunch.infra": "infra",
    "mxlaunch.infra.transport": "infra/transport",  # hosts, the SSH connection, role runners
    "mxlaunch.infra.transport.remote": "infra/transport/remote",  # programs sent to the hosts: standard library only
    "mxlaunch.infra.cloud": "infra/cloud",  # EC2 + EFS: a spec in, a cluster out
    "mxlaunch.launcher": "launcher",
    "mxlaunch.launcher.jobs": "launcher/jobs",  # plan, run, watch, restart and record a job
    "mxlaunch.launcher.cli": "launcher/cli",  # every click command: launch ..., launch cluster ...
}



class build_py_with_pth(build_py):
    """Also put mxlaunch-gpu-libs.pth at the top of the wheel, so that it lands in site-packages itself."""

    def run(self):
        super().run()
        self.copy_file(GPU_LIBS_PTH, os.path.join(self.build_lib, GPU_LIBS_PTH), preserve_mode=False)

    def get_outputs(self, include_bytecode=True):
        return super().get_outputs(include_bytecode) + [os.path.join(self.build_lib, GPU_LIBS_PTH)]


setup(
    cmdclass={"build_py": build_py_with_pth},
    name="mxlaunch",
    version="0.1.0",
    description=__doc__,
    # MXNet 1.9.1 needs numpy 1.23.5 (numpy >= 1.24 removed np.bool, and `import mxnet` fails), and numpy
    # 1.23.5 has wheels for CPython 3.8-3.11 only: on 3.12+ pip would try to build it from source and fail.
    python_requires=">=3.8,<3.12",
    # One import package, mxlaunch; the repository's fixed top-level folders are mapped into it, so that
    # nothing but `mxlaunch` lands in site-packages (no generic `launcher`/`trainer`/`infra` names).
    packages=list(PACKAGES),
    package_dir=PACKAGES,
    # digits.csv.gz: the handwritten digits of `trainer data digits` (trainer/datasets.py), no scikit-learn needed
    package_data={"mxlaunch.templates": ["*.j2"], "mxlaunch.trainer": ["digits.csv.gz"]},
    install_requires=[
        # mxnet itself comes from the `cpu` or `gpu` extra: the two wheels must never share an environment.
        "numpy==1.23.5",
        "pillow>=9",
        "jinja2>=3.1",
        "click>=8.1",
        "boto3>=1.28",
        "paramiko>=3.4",
        "matplotlib>=3.7",
        "pyyaml>=6",
    ],
    extras_require={"cpu": CPU, "gpu": GPU, "test": TEST},
    entry_points={
        "console_scripts": [
            "launch = mxlaunch.launcher.cli:main",
            "mxlaunch = mxlaunch.launcher.cli:main",
            "trainer = mxlaunch.trainer.cli:main",
        ]
    },
)
