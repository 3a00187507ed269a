"""Every benchmark runs as `python bench/NAME.py` from anywhere, with nothing set: the test support it imports
(testkit/, not installed) is found from the script's own checkout."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
SCRIPTS = sorted(p.name for p in BENCH.glob("*.py"))


def test_there_are_benchmarks_that_use_the_test_support():
    users = [name for name in SCRIPTS if "from testkit" in (BENCH / name).read_text()]
    assert len(users) >= 3, users


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", SCRIPTS)
def test_a_benchmark_starts_without_pythonpath(name, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run = subprocess.run([sys.executable, str(BENCH / name), "--help"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=100)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.startswith(f"usage: {name} "), run.stdout[:300]
