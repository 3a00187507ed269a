"""One SSH transport: every product use of SSH goes through infra/transport/ssh.py's Connection. Only the
interactive `launch cluster ssh` (launcher/cli/cluster.py) execs OpenSSH; no other module of the installed
package runs `ssh`, `scp` or `sftp` as a subprocess, execs them, or builds their command line for a runner to
run. Read from the installed package's sources with ast (the modules test_layers finds)."""
from __future__ import annotations

import ast
import os
import textwrap
from typing import Dict, Iterator, List, Optional, Tuple

import pytest

from test_layers import REPO, install_map, installed_modules

pytestmark = pytest.mark.timeout(60)

OPENSSH = {"ssh", "scp", "sftp"}  # the client programs (not sshd, ssh-keygen, ssh-keyscan)
ALLOWED = {"mxlaunch.launcher.cli.cluster"}  # `launch cluster ssh NAME`: an interactive session
# what starts a program: module -> functions
RUNNERS = {
    "subprocess": {"run", "Popen", "call", "check_call", "check_output", "getoutput", "getstatusoutput"},
    "os": {"system", "popen", "execv", "execve", "execl", "execle", "execlp", "execlpe", "execvp", "execvpe",
           "spawnl", "spawnle", "spawnlp", "spawnlpe", "spawnv", "spawnve", "spawnvp", "spawnvpe", "posix_spawn",
           "posix_spawnp"},
    "pty": {"spawn"},
    "asyncio": {"create_subprocess_exec", "create_subprocess_shell"},
    "shutil": {"which"},
}


def _program(node: Optional[ast.AST], names: Dict[str, ast.AST], depth: int = 0) -> Optional[str]:
    """The program a command value starts, where the source says it: a string (its first word: a shell line or
    exec's file), a list or tuple (its first item), `[...] + rest`, an f-string's leading text, or a name
    assigned one of these in the same scope."""
    if node is None or depth > 5:
        return None
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        words = node.value.split()
        return os.path.basename(words[0]) if words else None
    if isinstance(node, (ast.List, ast.Tuple)) and node.elts:
        return _program(node.elts[0], names, depth + 1)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _program(node.left, names, depth + 1)
    if isinstance(node, ast.JoinedStr) and node.values:
        first = node.values[0]
        if isinstance(first, ast.Constant) and isinstance(first.value, str) and first.value.strip():
            return os.path.basename(first.value.split()[0]) if first.value[:1].strip() else None
        return None
    if isinstance(node, ast.Name) and node.id in names:
        return _program(names[node.id], names, depth + 1)
    return None


def _command_line(node: ast.AST) -> bool:
    """A list or tuple that reads as OpenSSH's argv: its program first, then an option or a value (a host, a
    path), not only words (a tuple of choices such as ("ssh", "running", "none") is none)."""
    if not isinstance(node, (ast.List, ast.Tuple)) or len(node.elts) < 2:
        return False
    first, rest = node.elts[0], node.elts[1:]
    if not (isinstance(first, ast.Constant) and isinstance(first.value, str)
            and os.path.basename(first.value) in OPENSSH):
        return False
    return any(not (isinstance(e, ast.Constant) and isinstance(e.value, str)) or e.value.startswith("-")
               for e in rest)


def _runner(func: ast.AST, imported: Dict[str, Tuple[str, str]]) -> Optional[str]:
    """`module.function` when `func` names a program starter (`subprocess.run`, or `run` imported from it)."""
    if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
        module = imported.get(func.value.id, (func.value.id, ""))[0]
        if func.attr in RUNNERS.get(module, ()):
            return f"{module}.{func.attr}"
    if isinstance(func, ast.Name) and func.id in imported:
        module, name = imported[func.id]
        if name in RUNNERS.get(module, ()):
            return f"{module}.{name}"
    return None


def _scopes(tree: ast.AST) -> Iterator[ast.AST]:
    yield tree
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            yield node


def openssh_uses(source: str) -> List[Tuple[int, str]]:
    """(line, what) for every place `source` starts OpenSSH or builds its command line."""
    tree = ast.parse(source)
    imported: Dict[str, Tuple[str, str]] = {}  # local name -> (module, name); a plain import maps to itself
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                imported[alias.asname or alias.name] = (alias.name, "")
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                imported[alias.asname or alias.name] = (node.module, alias.name)
    found = set()
    for scope in _scopes(tree):
        body = scope.body if isinstance(scope.body, list) else [scope.body]
        names: Dict[str, ast.AST] = {}
        for node in (n for stmt in body for n in ast.walk(stmt)):
            if isinstance(node, ast.Assign):
                for target in node.targets:
                    if isinstance(target, ast.Name):
                        names[target.id] = node.value
        for node in (n for stmt in body for n in ast.walk(stmt)):
            if isinstance(node, ast.Call):
                runner = _runner(node.func, imported)
                values = list(node.args[:2]) + [k.value for k in node.keywords if k.arg in ("args", "cmd", "file")]
                if runner and any(_program(v, names) in OPENSSH for v in values):
                    found.add((node.lineno, f"{runner} starts OpenSSH"))
            elif _command_line(node):
                found.add((node.lineno, f"an OpenSSH command line ({node.elts[0].value!r}, ...)"))
    return sorted(found)


# ----------------------------------------------------------------------------- the scanner itself
CAUGHT = {
    "the runner of a former `--wait ssh`": '''
        class Remote:
            def ssh_argv(self, alias, *command):
                return ["ssh", "-F", str(self.ssh_config), alias, *command]
            def upload(self, alias, todo, dest):
                return self.run_cmd(["scp", "-F", str(self.ssh_config), "-p", *todo, f"{alias}:{dest}/"])
        ''',
    "a former repair probe": '''
        def answers(address, run):
            return run(["ssh", "-F", config, address, "true"], capture_output=True).returncode == 0
        ''',
    "exec": 'import os\nos.execvp("ssh", argv)\n',
    "exec by path": 'from os import execv\nexecv("/usr/bin/ssh", ["ssh", "host"])\n',
    "a shell line": 'import subprocess\nsubprocess.run("ssh -F cfg host true", shell=True)\n',
    "an f-string shell line": 'import subprocess as sp\nsp.check_output(f"scp {a} {b}:/x", shell=True)\n',
    "a name assigned a list": '''
        import subprocess
        def go(host):
            argv = ["sftp", host]
            return subprocess.Popen(argv)
        ''',
    "a list joined": 'import subprocess\nsubprocess.call(["ssh"] + rest)\n',
    "a command line kept for later": 'PROBE = ("ssh", "-o", "BatchMode=yes")\n',
    "looking for the client": 'import shutil\nshutil.which("ssh")\n',
}
INNOCENT = {
    "sshd and its tools": 'import subprocess\nsubprocess.run(["ssh-keygen", "-t", "ed25519"])\n'
                          'subprocess.run(["/usr/sbin/sshd", "-f", "cfg"])\n',
    "words in messages": 'import click\nclick.echo("ssh config: x   (launch cluster ssh c 0)")\nx = ["ssh_config"]\n',
    "a tuple of choices": 'WAIT_MODES = ("ssh", "running", "none")\n',
    "a Connection": 'conn.run(["true"], timeout=10)\nconn.sftp().put(a, b)\n',
    "a program that is not OpenSSH": 'import subprocess\nsubprocess.run([sys.executable, "-m", "pip", "wheel"])\n',
}


@pytest.mark.parametrize("case", sorted(CAUGHT))
def test_the_scanner_finds_every_way_of_running_openssh(case):
    assert openssh_uses(textwrap.dedent(CAUGHT[case])), case


@pytest.mark.parametrize("case", sorted(INNOCENT))
def test_the_scanner_leaves_other_programs_and_words_alone(case):
    assert openssh_uses(textwrap.dedent(INNOCENT[case])) == []


# ----------------------------------------------------------------------------- the product
def test_only_the_interactive_cluster_ssh_runs_openssh():
    modules = installed_modules(list(install_map(REPO)))
    uses = {module: openssh_uses(path.read_text()) for module, path in modules.items()}
    others = [f"{modules[m]}:{line}: {what}" for m, found in uses.items() if m not in ALLOWED for line, what in found]
    assert others == [], "OpenSSH outside `launch cluster ssh` (use infra/transport/ssh.py's Connection):\n" + \
        "\n".join(others)
    (allowed,) = ALLOWED  # and the scanner sees the one real use: an exec of the interactive session
    assert any("os.execvp starts OpenSSH" == what for _, what in uses[allowed]), uses[allowed]
