"""The product's sources say why, not where they came from: no project-history citations (issue numbers, the
contract file), no paths of one machine; a function-level import only where it keeps a heavy library off start-up
(`# heavy`) or breaks a real import cycle (`# cycle`), and the word must be true; every package docstring that
lists its modules lists exactly the package's modules."""
from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path
from typing import Dict, Iterator, List, Set, Tuple

import pytest

from test_layers import REPO, cycles, import_graph, install_map, installed_modules, ours

HEAVY = ("boto3", "botocore", "paramiko", "matplotlib", "mxnet", "jinja2", "numpy", "PIL")
HISTORY = re.compile(r"design\.md|(?<!MXNet )\b[Ii]ssue \d+|\b[Ii]ssues? #\d+")  # upstream ones name their project
MACHINE_PATH = re.compile(r"(?<![\w.])/(?:work|root|home/\w+|Users/\w+)/")
REASON = re.compile(r"#\s*(heavy|cycle)\b")
LISTED_MODULE = re.compile(r"^ {2,}([a-z_][a-z0-9_]*)\s{2,}\S")  # "  name   what it does" in a package docstring

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def modules() -> Dict[str, Path]:
    return installed_modules(list(install_map(REPO)))


def product_texts(modules: Dict[str, Path]) -> Iterator[Tuple[Path, str]]:
    for path in sorted(set(modules.values())):
        yield path, path.read_text()
    for path in sorted((REPO / "templates").glob("*.j2")):
        yield path, path.read_text()


def test_no_history_citations_or_machine_paths_in_product_files(modules):
    found = [f"{path.relative_to(REPO) if path.is_relative_to(REPO) else path}:{n}: {line.strip()[:100]}"
             for path, text in product_texts(modules) for n, line in enumerate(text.splitlines(), 1)
             if HISTORY.search(line) or MACHINE_PATH.search(line)]
    assert not found, "\n".join(found)


def function_imports(path: Path) -> Iterator[Tuple[int, ast.AST, str]]:
    """(line, node, reason word or '') of every import inside a function."""
    text = path.read_text()
    lines = text.splitlines()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for inner in ast.walk(node):
                if isinstance(inner, (ast.Import, ast.ImportFrom)):
                    said = REASON.search(lines[inner.lineno - 1])
                    yield inner.lineno, inner, said.group(1) if said else ""


def imported_modules(node: ast.AST, importer: str, is_package: bool) -> List[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    base = node.module or ""
    if node.level:
        package = importer if is_package else importer.rpartition(".")[0]
        package = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
        base = f"{package}.{base}" if base else package
    return [f"{base}.{a.name}" for a in node.names]


def module_level_imports(modules: Dict[str, Path]) -> Tuple[Dict[str, Set[str]], Dict[str, Set[str]]]:
    """Per module of ours: the modules of ours and the foreign top-level names it imports at module level."""
    graph = import_graph(modules)
    inner = {m: {line for line, _, _ in function_imports(p)} for m, p in modules.items()}
    ours_at_top = {m: {t for t, line in graph.edges[m].items() if line not in inner[m]} for m in modules}
    foreign_at_top = {m: {t for t, line in graph.foreign[m].items() if line not in inner[m]} for m in modules}
    return ours_at_top, foreign_at_top


def loads_heavy(module: str, ours_at_top, foreign_at_top, seen=None) -> bool:
    seen = seen if seen is not None else set()
    if module in seen:
        return False
    seen.add(module)
    return bool(foreign_at_top[module] & set(HEAVY)) or any(
        loads_heavy(m, ours_at_top, foreign_at_top, seen) for m in ours_at_top[module])


def bare_start_up() -> Set[str]:
    """The modules a bare interpreter has loaded when its first line runs (site included, no .pth of ours)."""
    out = subprocess.run([sys.executable, "-I", "-S", "-c", "import site, sys; print(' '.join(sys.modules))"],
                         capture_output=True, text=True, check=True, timeout=60).stdout
    return set(out.split())


def start_up_modules() -> Set[str]:
    """Modules of ours that every interpreter start-up of the environment imports (the .pth files we install):
    for them "heavy" is anything a bare start-up has not loaded already."""
    return {m for pth in REPO.glob("*.pth") for m in re.findall(r"import ([\w.]+)", pth.read_text())}


def import_problems(modules: Dict[str, Path], start_up: Set[str] = frozenset(), bare: Set[str] = frozenset()
                    ) -> List[str]:
    ours_at_top, foreign_at_top = module_level_imports(modules)
    problems = []
    for module, path in modules.items():
        for line, node, reason in function_imports(path):
            names = imported_modules(node, module, path.stem == "__init__")
            targets = [ours(n, modules) for n in names]
            where = f"{path.name}:{line}: {module}"
            if reason == "heavy":
                heavy = any(n.split(".")[0] in HEAVY for n in names) or any(
                    t and loads_heavy(t, ours_at_top, foreign_at_top) for t in targets) or (
                    module in start_up and all((t or n) not in bare for n, t in zip(names, targets)))
                if not heavy:
                    problems.append(f"{where} says heavy, but {', '.join(names)} loads none of {', '.join(HEAVY)}")
            elif reason == "cycle":
                closing = [t for t in targets if t and cycles({**{m: sorted(v) for m, v in ours_at_top.items()},
                                                               module: sorted(ours_at_top[module] | {t})})]
                if not closing:
                    problems.append(f"{where} says cycle, but importing {', '.join(names)} at the top closes none")
            else:
                problems.append(f"{where} imports {', '.join(names)} inside a function with no `# heavy`/`# cycle`")
    return problems


def test_every_function_level_import_keeps_a_heavy_library_off_start_up_or_breaks_a_cycle(modules):
    problems = import_problems(modules, start_up_modules(), bare_start_up())
    assert not problems, "\n".join(problems)


def test_the_import_check_catches_each_kind_of_unjustified_import(tmp_path):
    tree = {
        "pkg/__init__.py": "",
        "pkg/light.py": "import json\n",
        "pkg/heavy.py": "import numpy\n",
        "pkg/a.py": "from pkg import b\n",
        "pkg/b.py": ("def f():\n    from pkg import a  # cycle\n\n"
                     "def g():\n    from pkg import light  # heavy\n\n"
                     "def h():\n    from pkg import heavy  # heavy\n\n"
                     "def i():\n    import os\n\n"
                     "def j():\n    from pkg import light  # cycle\n"),
    }
    for rel, text in tree.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    modules = {"pkg": tmp_path / "pkg/__init__.py", **{f"pkg.{n}": tmp_path / f"pkg/{n}.py"
                                                       for n in ("light", "heavy", "a", "b")}}
    found = [p.split(": ", 1)[0] for p in import_problems(modules)]
    assert found == ["b.py:5", "b.py:11", "b.py:14"]


def test_package_docstrings_list_exactly_their_modules(modules):
    packages = {m: p for m, p in modules.items() if p.stem == "__init__"}
    checked = 0
    for package, path in packages.items():
        listed = {match.group(1) for line in (ast.get_docstring(ast.parse(path.read_text()), clean=False) or "").splitlines()
                  for match in [LISTED_MODULE.match(line)] if match}
        if not listed:
            continue
        checked += 1
        present = {p.stem for p in path.parent.glob("*.py") if not p.stem.startswith("__")} | {
            p.name for p in path.parent.iterdir() if (p / "__init__.py").exists()}
        assert listed == present, (f"{path.relative_to(REPO)}: listed but absent {sorted(listed - present)}, "
                                   f"present but not listed {sorted(present - listed)}")
    assert checked >= 5
