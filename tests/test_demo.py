"""`make demo` is the job the suite proves: the digits recipe (tests/digits_recipe.py) as a 2-worker,
1-server local job, batch 16 per worker. test_launch_local_trainer trains that very job (its workers on two
CPU contexts each) and proves the >= 97 % the README promises for `make demo`; these tests keep the Makefile,
and the README's local quickstart that says it is the same job, from drifting away from it."""
from __future__ import annotations

import os
import shlex
import subprocess

from digits_recipe import RecipeRun, fit_args

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def demo_commands(tmp_path) -> list:
    """The commands `make demo` would run (make -n runs none), continuation lines joined, as argv lists."""
    out = subprocess.run(["make", "-n", "demo", f"DEMO_DIR={tmp_path}/demo", f"DATA_DIR={tmp_path}/data"],
                         cwd=REPO, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr
    return [shlex.split(line) for line in out.stdout.replace("\\\n", " ").splitlines() if line.strip()]


def test_make_demo_trains_the_recipe_the_tests_prove(tmp_path):
    commands = demo_commands(tmp_path)
    (launch,) = [c for c in commands if c[0].endswith("/launch") and c[1:2] == ["train"]]
    split = launch.index("--")
    assert launch[1:split] == ["train", "--local", "-n", "2", "-s", "1", "--run-dir", f"{tmp_path}/demo"]
    assert launch[split + 1] == "trainer"
    assert launch[split + 2:] == fit_args(f"{tmp_path}/data", f"{tmp_path}/demo/digits-resnet8",
                                          RecipeRun.BATCH // 2)
    # the data it trains on is made first, where the job reads it
    (data,) = [c for c in commands if c[-4:] == ["data", "digits", "--out", f"{tmp_path}/data"]]
    assert commands.index(data) < commands.index(launch)


def readme_local_quickstart() -> list:
    """The `launch train --local` command of the README's "Quickstart: this machine", as an argv list."""
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        section = f.read().split("## Quickstart: this machine", 1)[1].split("\n## ", 1)[0]
    block = section.split("```", 2)[1].replace("\\\n", " ")
    (line,) = [line for line in block.splitlines() if line.startswith("launch train --local")]
    return shlex.split(line)


def test_readme_quickstart_is_the_demo_job():
    launch = readme_local_quickstart()
    split = launch.index("--")
    assert launch[:split] == ["launch", "train", "--local", "-n", "2", "-s", "1"]
    assert launch[split + 1:] == ["trainer", *fit_args("data/digits", "ckpt/digits", RecipeRun.BATCH // 2)]
