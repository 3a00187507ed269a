"""No function of the installed package is longer than 80 lines (from its `def` to its last line, nested
functions included): a longer one holds several jobs that want names of their own."""
from __future__ import annotations

import ast

import pytest

from test_layers import REPO, install_map, installed_modules

LIMIT = 80
# (module, function) -> why it may be longer for now. An entry that is no longer needed fails the test too.
KNOWN: dict = {}  # (module, function) -> why it may be longer, for a split in flight

pytestmark = pytest.mark.timeout(60)


def long_in(source: str) -> dict:
    """{name (Class.method for a method): lines} of every function of `source` over LIMIT lines."""
    found = {}
    for parent in ast.walk(ast.parse(source)):
        for node in ast.iter_child_nodes(parent):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > LIMIT:
                    found[f"{parent.name}.{node.name}" if isinstance(parent, ast.ClassDef) else node.name] = lines
    return found


def long_functions() -> dict:
    """{(module, name): lines} of every function over LIMIT lines in the installed package."""
    return {(module, name): lines for module, path in installed_modules(sorted(install_map(REPO))).items()
            for name, lines in long_in(path.read_text(encoding="utf-8")).items()}


def test_no_function_is_longer_than_80_lines():
    found = long_functions()
    assert {k: v for k, v in found.items() if k not in KNOWN} == {}
    assert [k for k in KNOWN if k not in found] == [], "no longer needed: remove it from KNOWN"


def test_the_count_sees_every_floor_and_every_kind_of_function():
    """The walk reaches each floor; a function, method or nested function of 81 lines is seen, one of 80 not
    (decorators do not count)."""
    modules = installed_modules(sorted(install_map(REPO)))
    for package in ("mxlaunch.launcher.cli", "mxlaunch.launcher.jobs", "mxlaunch.infra.cloud",
                    "mxlaunch.infra.transport", "mxlaunch.infra.transport.remote", "mxlaunch.trainer"):
        assert any(m.startswith(package + ".") for m in modules), package

    def body(lines, indent):
        return "".join(f"{indent}x{i} = {i}\n" for i in range(lines - 1))

    source = (f"@decorator\ndef ok():\n{body(LIMIT, '    ')}"
              f"def long():\n{body(LIMIT + 1, '    ')}"
              f"class C:\n    def method(self):\n{body(LIMIT + 1, '        ')}"
              f"def outer():\n    def inner():\n{body(LIMIT + 1, '        ')}")
    assert long_in(source) == {"long": LIMIT + 1, "C.method": LIMIT + 1, "outer": LIMIT + 2, "inner": LIMIT + 1}
