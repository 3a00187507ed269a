"""The floors of mxlaunch point down, and stay so. Every import of every module of the installed package
(found through the package's own install map and resolved by importlib, as `import` would) is held against
the floors below, listed once, top to bottom; the import graph has no cycle between modules, packages or
top-level folders; `--help` loads no heavy library; the install adds no import name but `mxlaunch`."""
from __future__ import annotations

import ast
import importlib.util
import itertools
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import pytest

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("boto3", "botocore", "paramiko", "matplotlib", "mxnet", "jinja2")
TEST_ONLY = ("pytest", "_pytest", "moto", "xdist", "testkit")  # what the product never imports

pytestmark = pytest.mark.timeout(60)


@dataclass(frozen=True)
class Floor:
    name: str
    packages: Tuple[str, ...]  # a module belongs to the floor of its longest matching package


# Top to bottom. A module imports from its own floor or from a lower level, never from a sibling on its level.
LEVELS: Tuple[Tuple[Floor, ...], ...] = (
    (Floor("commands", ("mxlaunch.launcher.cli", "mxlaunch.launcher")),),
    (Floor("jobs", ("mxlaunch.launcher.jobs",)),),
    (Floor("cloud", ("mxlaunch.infra.cloud", "mxlaunch.infra")),),
    (Floor("transport", ("mxlaunch.infra.transport",)), Floor("trainer", ("mxlaunch.trainer",))),
    (Floor("remote programs", ("mxlaunch.infra.transport.remote",)),),
    (Floor("base", ("mxlaunch", "mxlaunch.templates")),),
)
STDLIB_ONLY = "remote programs"  # they run on a bare Python on the hosts


def floor_of(module: str) -> Tuple[int, Floor]:
    """(level, floor) of a module of ours: the floor of its longest matching package."""
    matches = [(len(package), level, floor) for level, floors in enumerate(LEVELS) for floor in floors
               for package in floor.packages if module == package or module.startswith(package + ".")]
    if not matches:
        raise AssertionError(f"{module} is on no floor: add its package to LEVELS")
    _, level, floor = max(matches, key=lambda m: m[0])
    return level, floor


def install_map(root: Path) -> Dict[str, str]:
    """package -> folder, as the project's build configuration maps them (pyproject.toml, else setup.py)."""
    pyproject = root / "pyproject.toml"
    if pyproject.exists():
        import tomllib

        found = tomllib.loads(pyproject.read_text()).get("tool", {}).get("setuptools", {}).get("package-dir")
        if found:
            return {name: folder for name, folder in found.items() if name}
    for node in ast.parse((root / "setup.py").read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "PACKAGES" for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError(f"no package map in {root}")


def installed_modules(packages: Sequence[str]) -> Dict[str, Path]:
    """module -> file of every module of the installed packages, each package found by importlib."""
    found = {}
    for package in packages:
        spec = importlib.util.find_spec(package)
        assert spec is not None and spec.submodule_search_locations, f"{package} is not installed as a package"
        folder = Path(list(spec.submodule_search_locations)[0])
        for path in sorted(folder.glob("*.py")):
            found[package if path.stem == "__init__" else f"{package}.{path.stem}"] = path
    return found


def folder_modules(root: Path, packages: Dict[str, str]) -> Dict[str, Path]:
    """The same, read from the checkout's folders (for trees that are not installed)."""
    found = {}
    for package, folder in packages.items():
        for path in sorted((root / folder).glob("*.py")):
            found[package if path.stem == "__init__" else f"{package}.{path.stem}"] = path
    return found


def imported_names(module: str, tree: ast.AST, is_package: bool) -> Iterator[Tuple[int, str]]:
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


def ours(name: str, modules: Dict[str, Path]) -> Optional[str]:
    """The module of ours that an imported name lands in (`a.b.func` -> `a.b`), or None."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


@dataclass(frozen=True)
class Graph:
    modules: Dict[str, Path]
    edges: Dict[str, Dict[str, int]]  # importer -> {imported module of ours: first line}
    foreign: Dict[str, Dict[str, int]]  # importer -> {imported top-level name not ours: first line}


def import_graph(modules: Dict[str, Path]) -> Graph:
    edges: Dict[str, Dict[str, int]] = {}
    foreign: Dict[str, Dict[str, int]] = {}
    for module, path in modules.items():
        edges[module], foreign[module] = {}, {}
        tree = ast.parse(path.read_text(), str(path))
        for line, name in imported_names(module, tree, path.stem == "__init__"):
            target = ours(name, modules)
            if target is None:
                foreign[module].setdefault(name.split(".")[0], line)
            elif target != module:
                edges[module].setdefault(target, line)
    return Graph(modules, edges, foreign)


def layer_violations(graph: Graph, root: Optional[Path] = None) -> List[str]:
    """One `file:line: module imports name (why)` per import against the floors."""
    found = []

    def where(module: str, line: int) -> str:
        path = graph.modules[module]
        return f"{path.relative_to(root) if root else path}:{line}"

    for module in graph.modules:
        level, floor = floor_of(module)
        for target, line in graph.edges[module].items():
            target_level, target_floor = floor_of(target)
            if floor.name == STDLIB_ONLY or target_level < level or (target_level == level and target_floor != floor):
                why = (f"{floor.name} import nothing of ours" if floor.name == STDLIB_ONLY else
                       f"{floor.name} is below {target_floor.name}" if target_level < level else
                       f"{floor.name} and {target_floor.name} are siblings")
                found.append(f"{where(module, line)}: {module} imports {target} ({why})")
        for name, line in graph.foreign[module].items():
            if name in TEST_ONLY:
                found.append(f"{where(module, line)}: {module} imports {name} (the product never imports test support)")
            elif floor.name == STDLIB_ONLY and name not in sys.stdlib_module_names and name != "__future__":
                found.append(f"{where(module, line)}: {module} imports {name} ({floor.name}: standard library only)")
    return found


def cycles(edges: Dict[str, Sequence[str]]) -> List[List[str]]:
    """Strongly connected components of more than one node (Tarjan)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack = set()
    counter = itertools.count()
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = next(counter)
        stack.append(node)
        on_stack.add(node)
        for other in edges.get(node, ()):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                other = stack.pop()
                on_stack.discard(other)
                component.append(other)
                if other == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in list(edges):
        if node not in index:
            visit(node)
    return found


def grouped(graph: Graph, group_of) -> Dict[str, List[str]]:
    """The import graph between groups of modules (packages, folders), self-edges dropped."""
    edges: Dict[str, set] = {}
    for module, targets in graph.edges.items():
        for target in targets:
            a, b = group_of(module), group_of(target)
            edges.setdefault(a, set())
            if a != b:
                edges[a].add(b)
    return {k: sorted(v) for k, v in edges.items()}


@pytest.fixture(scope="module")
def installed() -> Graph:
    return import_graph(installed_modules(list(install_map(REPO))))


def test_every_import_points_down_the_floors(installed):
    problems = layer_violations(installed)
    assert not problems, "imports against the floors:\n" + "\n".join(problems)


def test_no_cycle_between_modules_packages_or_folders(installed):
    packages = install_map(REPO)
    assert cycles(installed.edges) == []

    def package_of(module: str) -> str:
        return module if installed.modules[module].stem == "__init__" else module.rpartition(".")[0]

    assert cycles(grouped(installed, package_of)) == []
    top_folder = {package: folder.split("/")[0] for package, folder in packages.items()}
    assert cycles(grouped(installed, lambda m: top_folder[package_of(m)])) == []


def test_every_module_is_installed_and_on_a_floor(installed):
    """Each folder of the product that holds Python is a package of the install (nothing silently left out of
    the wheel), and every installed module has a floor."""
    packages = install_map(REPO)
    mapped = {(REPO / folder).resolve() for folder in packages.values()}
    for top in {folder.split("/")[0] for folder in packages.values()}:
        for dirpath, dirnames, filenames in os.walk(REPO / top):
            dirnames[:] = [d for d in dirnames if d != "__pycache__"]
            if any(f.endswith(".py") for f in filenames):
                assert Path(dirpath).resolve() in mapped, f"{dirpath} holds Python but is not installed"
    for module in installed.modules:
        floor_of(module)
    assert {"mxlaunch.exits", "mxlaunch.launcher.cli.train", "mxlaunch.launcher.jobs.job", "mxlaunch.infra.cloud.aws",
            "mxlaunch.infra.transport.ssh", "mxlaunch.infra.transport.remote.roleguard", "mxlaunch.trainer.cli",
            "mxlaunch.trainer.networks", "mxlaunch.templates"} <= set(installed.modules)


def test_no_test_support_in_the_product_folders():
    packages = install_map(REPO)
    for folder in packages.values():
        names = {p.name for p in (REPO / folder).iterdir()}
        assert not names & {"testing", "testkit", "conftest.py"}, folder
    assert (REPO / "testkit" / "__init__.py").exists()
    assert not any(folder.split("/")[0] == "testkit" for folder in packages.values())


def test_the_checker_finds_each_kind_of_bad_import_and_names_its_line(tmp_path):
    tree = {
        "mxlaunch/__init__.py": "",
        "mxlaunch/errors.py": "import os\nfrom mxlaunch.exits import Exit\nfrom mxlaunch.launcher.jobs import plan\n",
        "mxlaunch/exits.py": "import enum\n",
        "trainer/__init__.py": "from . import fit\nfrom ..infra import transport\n",
        "trainer/fit.py": ("from mxlaunch.errors import UsageError\n\n"
                           "def f():\n    from mxlaunch.launcher.jobs.plan import JobSpec\n"),
        "infra/__init__.py": "",
        "infra/transport/__init__.py": "",
        "infra/transport/ssh.py": "import paramiko\nfrom mxlaunch.infra.cloud import aws\n",
        "infra/transport/remote/__init__.py": "",
        "infra/transport/remote/guard.py": "import json, socket\nimport yaml\nfrom mxlaunch import exits\n",
        "infra/cloud/__init__.py": "",
        "infra/cloud/aws.py": "import boto3\nfrom mxlaunch.infra.transport import ssh\nimport pytest\n",
        "launcher/__init__.py": "",
        "launcher/jobs/__init__.py": "",
        "launcher/jobs/plan.py": "from mxlaunch.launcher.cli import train\nfrom testkit import bed\n",
        "launcher/cli/__init__.py": "",
        "launcher/cli/train.py": "from mxlaunch.launcher.jobs import plan\nfrom mxlaunch.infra.cloud import aws\n",
    }
    for rel, text in tree.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    packages = {"mxlaunch": "mxlaunch", "mxlaunch.trainer": "trainer", "mxlaunch.infra": "infra",
                "mxlaunch.infra.transport": "infra/transport", "mxlaunch.infra.transport.remote": "infra/transport/remote",
                "mxlaunch.infra.cloud": "infra/cloud", "mxlaunch.launcher": "launcher",
                "mxlaunch.launcher.jobs": "launcher/jobs", "mxlaunch.launcher.cli": "launcher/cli"}
    graph = import_graph(folder_modules(tmp_path, packages))
    found = [v.split(" (")[0] for v in layer_violations(graph, tmp_path)]
    assert sorted(found) == sorted([
        "mxlaunch/errors.py:3: mxlaunch.errors imports mxlaunch.launcher.jobs.plan",
        "trainer/__init__.py:2: mxlaunch.trainer imports mxlaunch.infra.transport",
        "trainer/fit.py:4: mxlaunch.trainer.fit imports mxlaunch.launcher.jobs.plan",
        "infra/transport/ssh.py:2: mxlaunch.infra.transport.ssh imports mxlaunch.infra.cloud.aws",
        "infra/transport/remote/guard.py:2: mxlaunch.infra.transport.remote.guard imports yaml",
        "infra/transport/remote/guard.py:3: mxlaunch.infra.transport.remote.guard imports mxlaunch.exits",
        "infra/cloud/aws.py:3: mxlaunch.infra.cloud.aws imports pytest",
        "launcher/jobs/plan.py:1: mxlaunch.launcher.jobs.plan imports mxlaunch.launcher.cli.train",
        "launcher/jobs/plan.py:2: mxlaunch.launcher.jobs.plan imports testkit",
    ])
    assert sorted(cycles(graph.edges)) == [["mxlaunch.infra.cloud.aws", "mxlaunch.infra.transport.ssh"],
                                           ["mxlaunch.launcher.cli.train", "mxlaunch.launcher.jobs.plan"]]
    assert cycles({"a": ["b"], "b": ["c"], "c": []}) == []


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
    """`launch --help` takes its summaries from the CLI's table, whole at any terminal width (click's
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
             "names = ('mxlaunch', 'mxlaunch.launcher', 'launcher', 'trainer', 'infra', 'templates', 'testkit')\n"
             "print(json.dumps({n: importlib.util.find_spec(n) is not None for n in names}))\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"mxlaunch": True, "mxlaunch.launcher": True, "launcher": False,
                                       "trainer": False, "infra": False, "templates": False, "testkit": False}
