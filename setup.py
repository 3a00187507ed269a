"""mxlaunch: take Apache MXNet training from one machine to a GPU cluster on AWS, and back."""
from setuptools import setup

CPU = ["mxnet==1.9.1", "numpy==1.23.5"]
GPU = ["mxnet-cu112==1.9.1", "numpy==1.23.5"]
TEST = [
    "pytest>=7",
    "pytest-timeout>=2.1",
    "scikit-learn==1.3.2",
    "scipy>=1.11,<1.12",
    "moto[server,ec2,efs,ssm,sts]>=5",
]

PACKAGES = {
    "mxlaunch": "mxlaunch",  # the package root and the shared base (exit statuses, one-line errors)
    "mxlaunch.launcher": "launcher",
    "mxlaunch.trainer": "trainer",
    "mxlaunch.trainer.networks": "trainer/networks",
    "mxlaunch.infra": "infra",
    "mxlaunch.templates": "templates",
}

setup(
    name="mxlaunch",
    version="0.1.0",
    description=__doc__,
    python_requires=">=3.9",
    # One import package, mxlaunch; the repository's fixed top-level folders are mapped into it, so that
    # nothing but `mxlaunch` lands in site-packages (no generic `launcher`/`trainer`/`infra` names).
    packages=list(PACKAGES),
    package_dir=PACKAGES,
    package_data={"mxlaunch.templates": ["*.j2"]},
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
