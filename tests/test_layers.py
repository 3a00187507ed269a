"""The floors of mxlaunch point down, and stay so: every import of every installed module is parsed (ast)
and held against the rules below; `--help` loads no heavy library; the install adds no import name but
`mxlaunch`."""
from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Tuple

import pytest

REPO = Path(__file__).resolve().parents[1]
BASE = ("mxlaunch", "mxlaunch.exits", "mxlaunch.errors")  # the shared base: imports nothing of ours above it
# where `launch` may meet infra: the commands that take --cluster NAME (train; and runs, logs, stop, which reach a
# detached run on the cluster's instance 0 through mxlaunch.infra.detach), each only in its --cluster branch
CLI_LAYER = ("mxlaunch.launcher.cli", "mxlaunch.launcher.train_cmd", "mxlaunch.launcher.runs_cmd",
             "mxlaunch.launcher.logs_cmd", "mxlaunch.launcher.stop_cmd")
HEAVY = ("boto3", "botocore", "paramiko", "matplotlib", "mxnet")

pytestmark = pytest.mark.timeout(60)


def under(name: str, *packages: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


@dataclass(frozen=True)
class Rule:
    why: str
    importer: Callable[[str], bool]  # which modules it binds
    forbidden: Callable[[str], bool]  # which imported names break it


RULES = (
    Rule("the trainer stands alone: nothing of the launcher or infra",
         lambda m: under(m, "mxlaunch.trainer"), lambda n: under(n, "mxlaunch.launcher", "mxlaunch.infra")),
    Rule("the base imports nothing of ours above it",
         lambda m: m in BASE, lambda n: under(n, "mxlaunch") and ".".join(n.split(".")[:2]) not in BASE),
    Rule("the launcher meets infra in its CLI layer only",
         lambda m: under(m, "mxlaunch.launcher") and m not in CLI_LAYER, lambda n: under(n, "mxlaunch.infra")),
    Rule("a remote program runs on a bare Python: standard library only",
         lambda m: under(m, "mxlaunch.launcher.remote"), lambda n: n.split(".")[0] not in sys.stdlib_module_names),
    Rule("the product never imports test helpers",
         lambda m: True, lambda n: under(n, "mxlaunch.testing")),
)


def installed_packages(setup_py: Path) -> Dict[str, str]:
    """setup.py's PACKAGES (package -> folder): exactly what the install holds."""
    for node in ast.parse(setup_py.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "PACKAGES" for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError(f"no PACKAGES in {setup_py}")


def modules(root: Path, packages: Dict[str, str]) -> Iterator[Tuple[str, Path]]:
    """(module name, file) of every module of the product."""
    for package, folder in packages.items():
        for path in sorted((root / folder).glob("*.py")):
            yield (package if path.stem == "__init__" else f"{package}.{path.stem}"), path


def imported_names(module: str, tree: ast.AST, is_package: bool = False) -> Iterator[Tuple[int, str]]:
    """(line, dotted name) of every import, also inside functions; `from a import b` gives a.b."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolved against the importer's package
                package = module if is_package else module.rpartition(".")[0]
                package = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{package}.{base}" if base else package
            for alias in node.names:
                yield node.lineno, f"{base}.{alias.name}" if alias.name != "*" else base


def violations(root: Path, packages: Dict[str, str]) -> List[str]:
    """One `file:line: module imports name (rule)` per broken rule."""
    found = []
    for module, path in modules(root, packages):
        tree = ast.parse(path.read_text(), str(path))
        for line, name in imported_names(module, tree, is_package=path.stem == "__init__"):
            for rule in RULES:
                if rule.importer(module) and rule.forbidden(name):
                    found.append(f"{path.relative_to(root)}:{line}: {module} imports {name} ({rule.why})")
    return found


def test_layers_point_down():
    problems = violations(REPO, installed_packages(REPO / "setup.py"))
    assert not problems, "imports against the layering:\n" + "\n".join(problems)


def test_every_installed_module_is_checked():
    files = {str(p.relative_to(REPO)) for _, p in modules(REPO, installed_packages(REPO / "setup.py"))}
    assert {"mxlaunch/errors.py", "mxlaunch/exits.py", "trainer/cli.py", "trainer/networks/__init__.py",
            "launcher/job.py", "launcher/remote/roleguard.py", "launcher/remote/host_check.py",
            "infra/cli.py"} <= files


def test_the_checker_finds_each_kind_of_bad_import_and_names_its_line(tmp_path):
    tree = {
        "mxlaunch/errors.py": "import os\nfrom mxlaunch.exits import Exit\nfrom mxlaunch.launcher import hosts\n",
        "mxlaunch/exits.py": "import enum\n",
        "trainer/fit.py": ("from mxlaunch.errors import UsageError\n\n"
                           "def f():\n    from mxlaunch.launcher.plan import JobSpec\n"),
        "trainer/model.py": "from ..infra import aws\n",
        "trainer/__init__.py": "from . import fit\nfrom .. import launcher\n",
        "launcher/job.py": "import json\nimport mxlaunch.infra.aws\n",
        "launcher/train_cmd.py": "from mxlaunch.infra.targets import cluster_target\n",
        "launcher/remote/host_check.py": "import json, socket\nimport yaml\nfrom mxlaunch import exits\n",
        "infra/cli.py": "from mxlaunch.launcher.render import render\nfrom mxlaunch.testing import bed\n",
    }
    for rel, text in tree.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    packages = {"mxlaunch": "mxlaunch", "mxlaunch.launcher": "launcher", "mxlaunch.launcher.remote": "launcher/remote",
                "mxlaunch.trainer": "trainer", "mxlaunch.infra": "infra"}
    found = [v.split(" (")[0] for v in violations(tmp_path, packages)]
    assert sorted(found) == sorted([
        "mxlaunch/errors.py:3: mxlaunch.errors imports mxlaunch.launcher.hosts",
        "trainer/fit.py:4: mxlaunch.trainer.fit imports mxlaunch.launcher.plan.JobSpec",
        "trainer/model.py:1: mxlaunch.trainer.model imports mxlaunch.infra.aws",
        "trainer/__init__.py:2: mxlaunch.trainer imports mxlaunch.launcher",
        "launcher/job.py:2: mxlaunch.launcher.job imports mxlaunch.infra.aws",
        "launcher/remote/host_check.py:2: mxlaunch.launcher.remote.host_check imports yaml",
        "launcher/remote/host_check.py:3: mxlaunch.launcher.remote.host_check imports mxlaunch.exits",
        "infra/cli.py:2: mxlaunch.infra.cli imports mxlaunch.testing.bed",
    ])


HELP_PROBE = """
import json, sys
from mxlaunch.{package}.cli import main
try:
    main({args!r})
except SystemExit:
    pass
print(json.dumps(sorted(sys.modules)))
"""


@pytest.mark.parametrize("package,args", [
    ("launcher", ["--help"]), ("launcher", ["train", "--help"]), ("launcher", ["logs", "--help"]),
    ("launcher", ["plot", "--help"]), ("launcher", ["stop", "--help"]), ("launcher", ["runs", "--help"]),
    ("trainer", ["--help"]), ("trainer", ["fit", "--help"]),
    ("trainer", ["data", "cifar10", "--help"]),
])
def test_help_loads_no_heavy_library(package, args):
    proc = subprocess.run([sys.executable, "-c", HELP_PROBE.format(package=package, args=args)],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    help_text, _, loaded = proc.stdout.strip().rpartition("\n")
    assert "Usage:" in help_text
    assert [m for m in json.loads(loaded) if m.split(".")[0] in HEAVY] == []


def test_cluster_help_loads_boto3_so_the_probe_can_tell():
    proc = subprocess.run([sys.executable, "-c", HELP_PROBE.format(package="launcher", args=["cluster", "--help"])],
                          capture_output=True, text=True, timeout=30)
    assert "boto3" in json.loads(proc.stdout.strip().rpartition("\n")[2])


def test_launch_help_lists_each_subcommands_own_summary_whole():
    """`launch --help` takes its summaries from launcher/cli.py's table, whole at any terminal width (click's
    own listing would cut each to one line and "..."), and each is its command's own first paragraph."""
    import click
    from mxlaunch.launcher.cli import SUBCOMMANDS, cli
    ctx = click.Context(cli, info_name="launch")
    for width in (40, 80, 200):
        formatter = click.HelpFormatter(width=width)
        cli.format_commands(ctx, formatter)
        listed = " ".join(formatter.getvalue().split())
        assert "..." not in listed
        for name, (_, _, summary) in SUBCOMMANDS.items():
            assert f"{name} {' '.join(summary.split())}" in listed, (width, name)
    for name, (_, _, summary) in SUBCOMMANDS.items():
        command = cli.get_command(ctx, name)
        assert command.name == name
        assert click.Command(name, help=summary).get_short_help_str(1000) == command.get_short_help_str(1000)


def test_install_adds_no_import_name_but_mxlaunch(tmp_path):
    probe = ("import importlib.util, json\n"
             "names = ('mxlaunch', 'mxlaunch.launcher', 'launcher', 'trainer', 'infra', 'templates')\n"
             "print(json.dumps({n: importlib.util.find_spec(n) is not None for n in names}))\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"mxlaunch": True, "mxlaunch.launcher": True, "launcher": False,
                                       "trainer": False, "infra": False, "templates": False}
