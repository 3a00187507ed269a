"""Every command of both CLIs, `launch ...` and `trainer ...`: an exception nobody expected (a bug of ours) ends
in exit 70 and one line naming it, never a traceback (MXLAUNCH_DEBUG=1 shows one); a hostfile that is not UTF-8
is bad input: exit 2, one line naming the file. Each command runs through its real entry point in its own
process; the fault is put in the one place every command passes (its own argument parsing)."""
from __future__ import annotations

import os
import subprocess
import sys

import click
import pytest

from mxlaunch.exits import Exit
from mxlaunch.launcher.cli import cli as launch_cli
from mxlaunch.trainer.cli import cli as trainer_cli

pytestmark = pytest.mark.timeout(120)

# the entry point, with every leaf command's parsing made to raise an exception of no known kind
FAULTY = """
import sys, click
parse = click.Command.parse_args
def fault(self, ctx, args):
    if not isinstance(self, click.Group):
        raise ZeroDivisionError("injected fault in " + ctx.command_path)
    return parse(self, ctx, args)
click.Command.parse_args = fault
from {module} import main
main(sys.argv[1:])
"""


def leaves(group: click.Group, path=()):
    ctx = click.Context(group)
    for name in group.list_commands(ctx):  # lazily loaded groups list and load theirs this way
        command = group.get_command(ctx, name)
        if isinstance(command, click.Group):
            yield from leaves(command, path + (name,))
        else:
            yield path + (name,)


COMMANDS = ([("mxlaunch.launcher.cli", "launch", words) for words in leaves(launch_cli)]
            + [("mxlaunch.trainer.cli", "trainer", words) for words in leaves(trainer_cli)])


def run(module, words, **env):
    proc = subprocess.run([sys.executable, "-c", FAULTY.format(module=module), *words], capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL, env=dict(os.environ, **env))
    return proc.returncode, proc.stdout, proc.stderr


def test_every_command_is_covered():
    names = {" ".join(words) for _, _, words in COMMANDS}
    assert {"train", "runs", "logs", "stop", "plot", "cluster up", "cluster down", "cluster exec", "cluster put",
            "fit", "fine-tune", "data cifar10", "data digits"} <= names, names


@pytest.mark.parametrize("module, prog, words", COMMANDS, ids=[f"{p} {' '.join(w)}" for _, p, w in COMMANDS])
def test_an_unexpected_exception_is_exit_70_and_one_line(module, prog, words):
    code, out, err = run(module, words)
    assert code == Exit.INTERNAL == 70, (code, out, err)
    assert "Traceback" not in err and err.count("\n") == 1, err
    assert err.startswith(f"{prog}: internal error: ZeroDivisionError: injected fault in {prog} {' '.join(words)}")
    assert "MXLAUNCH_DEBUG=1" in err


def test_mxlaunch_debug_shows_the_traceback():
    code, _, err = run("mxlaunch.launcher.cli", ["runs"], MXLAUNCH_DEBUG="1")
    assert code == 1 and "Traceback" in err and "ZeroDivisionError: injected fault" in err


# ------------------------------------------------------------------------------- a hostfile not in UTF-8

@pytest.mark.parametrize("data", [b"\xff\xfe1\x000\x00.\x000\x00\n", b"10.0.0.1 slots=\xb2\n", b"h\xe9te\n"],
                         ids=["utf-16", "latin-1-superscript", "latin-1-name"])
def test_a_hostfile_that_is_not_utf8_is_exit_2_naming_the_file(tmp_path, data):
    hostfile = tmp_path / "hosts"
    hostfile.write_bytes(data)
    for args in (["--hosts", str(hostfile), "-n", "1"], ["--resume", str(tmp_path / "run"), "--hosts", str(hostfile)]):
        if "--resume" in args:
            (tmp_path / "run").mkdir(exist_ok=True)
            (tmp_path / "run" / "job.yaml").write_text(
                '{"mode": "hosts", "command": ["true"], "num_workers": 1, "num_servers": 1, "workdir": "/w"}')
        proc = subprocess.run([sys.executable, "-m", "mxlaunch.launcher", "train", *args, "--dry-run",
                               *(["--", "true"] if "-n" in args else [])], capture_output=True, text=True, timeout=60,
                              stdin=subprocess.DEVNULL)
        assert proc.returncode == Exit.USAGE == 2, (args, proc.stderr)
        assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert str(hostfile) in proc.stderr and "internal error" not in proc.stderr, proc.stderr
