"""The name of a cached test venv: a hash of exactly what it installs from setup.py (install_requires and the
extra's list, read with ast, never by running setup.py) and the Python version — so that editing the test
extra or a comment does not rebuild the 2 GB GPU venv."""
from __future__ import annotations

import ast
import hashlib
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the checkout: testkit/ is at its top


def _requirements(extra: str) -> list:
    with open(os.path.join(REPO, "setup.py"), encoding="utf-8") as f:
        tree = ast.parse(f.read())
    lists = {t.id: ast.literal_eval(node.value) for node in tree.body if isinstance(node, ast.Assign)
             for t in node.targets if isinstance(t, ast.Name) and isinstance(node.value, ast.List)}
    setup = next(n.value for n in ast.walk(tree) if isinstance(n, ast.Expr) and isinstance(n.value, ast.Call)
                 and getattr(n.value.func, "id", "") == "setup")
    required = next(ast.literal_eval(k.value) for k in setup.keywords if k.arg == "install_requires")
    return sorted(required) + sorted(lists[extra.upper()])


def pins_key(extra: str) -> str:
    """12 hex digits naming a venv of `.[extra]` for this Python."""
    text = "\n".join(_requirements(extra)) + "\n" + sys.version
    return hashlib.sha256(text.encode()).hexdigest()[:12]
