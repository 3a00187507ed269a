"""The test support (testkit/, beside the product, never installed) is a tidy package of its own: no import
cycle between its modules, and its docstrings and comments (and the benchmarks') name no path that exists on one
machine only."""
from __future__ import annotations

import ast
import io
import re
import tokenize
from pathlib import Path
from typing import Dict, Iterator

import pytest

from test_layers import cycles, import_graph

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.timeout(60)
# the top folders every Linux host has, the box hosts' /efs, and IMDS's /latest/...: anything else (/work, /mnt,
# /Users, ...) is one machine's
SHARED_TOPS = {"bin", "boot", "dev", "efs", "etc", "home", "latest", "lib", "lib64", "opt", "proc", "root", "run",
               "sbin", "srv", "sys", "tmp", "usr", "var"}
PATH = re.compile(r"(?<![\w.~$}/:])/([A-Za-z][\w.-]*)((?:/[\w.{}$-]*)*)")


def modules_of_testkit() -> Dict[str, Path]:
    return {"testkit" if p.stem == "__init__" else f"testkit.{p.stem}": p for p in sorted((REPO / "testkit").glob("*.py"))}


def prose(path: Path) -> Iterator[str]:
    """The docstrings and comments of a Python file."""
    text = path.read_text()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=False)
            if doc:
                yield doc
    for token in tokenize.generate_tokens(io.StringIO(text).readline):
        if token.type == tokenize.COMMENT:
            yield token.string


def machine_paths(text: str) -> list:
    """Absolute paths in `text` that exist on one machine only: under a top folder not every host has, or a
    named home (/home/alice/..., /root/...) rather than a placeholder (/home/USER, /home/{user})."""
    found = []
    for match in PATH.finditer(text):
        top, rest = match.group(1), match.group(2).lstrip("/")
        named_home = top in ("home", "root") and rest and not re.match(r"(USER|\{|\.\.\.)", rest)
        if top not in SHARED_TOPS or named_home:
            found.append(match.group(0))
    return found


def test_testkit_has_no_import_cycle():
    modules = modules_of_testkit()
    assert {"testkit.bed", "testkit.require", "testkit.box", "testkit.xdist_groups"} <= set(modules)
    graph = import_graph(modules)
    assert graph.edges["testkit.bed"], "the graph must see testkit's own imports"
    assert cycles(graph.edges) == []


def test_the_cycle_check_sees_a_cycle_between_testkit_modules(tmp_path):
    (tmp_path / "a.py").write_text("from testkit import b\n")
    (tmp_path / "b.py").write_text("def f():\n    from testkit.a import x\n")
    graph = import_graph({"testkit.a": tmp_path / "a.py", "testkit.b": tmp_path / "b.py"})
    assert cycles(graph.edges) == [["testkit.a", "testkit.b"]]


def test_testkit_and_bench_name_no_path_of_one_machine():
    files = sorted((REPO / "testkit").glob("*.py")) + sorted((REPO / "bench").glob("*.py"))
    found = [f"{p.relative_to(REPO)}: {path}" for p in files for text in prose(p) for path in machine_paths(text)]
    assert found == []


def test_machine_paths_tells_one_machines_paths_from_every_hosts():
    text = ("Recipe: /work/shared/testbed.md; cache /root/.cache/x; home /home/alice/src; on the hosts /home/USER, "
            "/home/{user}, /root, /efs/mxlaunch, /var/lib/mxlaunch, /proc/PID/stat; s3://bucket/key, ./rel/path")
    assert machine_paths(text) == ["/work/shared/testbed.md", "/root/.cache/x", "/home/alice/src"]
