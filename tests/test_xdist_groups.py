"""`make test`'s two workers keep each group of testkit/xdist_groups.py in one worker: a scratch project with
the same hook, run under `pytest -n 2 --dist loadgroup`, records which worker ran each test. The same project
runs as plainly without xdist (one process, or pytest-xdist not loaded at all)."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from testkit.checkout import with_testkit
from testkit.xdist_groups import group_of

TESTS = "\n".join(f"def test_{i}(): record()" for i in range(6))
RECORD = '''import json, os
def record():
    with open(os.environ["RECORD"], "a") as f:
        f.write(json.dumps([os.environ["PYTEST_CURRENT_TEST"].split(" ")[0],
                            os.environ.get("PYTEST_XDIST_WORKER", "main")]) + "\\n")
'''


def test_group_of_names_each_shared_resource_by_module():
    assert group_of("tests/test_box_cluster.py::test_up[1]") == group_of("tests/test_healing_spot.py::t") == "box"
    assert group_of("tests/test_trainer_devices.py::t") == group_of("tests/test_launch_local_trainer.py::t") == "digits"
    assert group_of("tests/test_install.py::t") == "cached-venvs"
    assert group_of("tests/test_launch_local.py::t") is None and group_of("tests/test_trainer_errors.py::t") is None


SHARED_DIGITS = ("digits_training", "digits_model", "digits_two_contexts", "digits_job", "digits_job_started")


def test_every_module_that_reads_a_shared_digits_run_is_in_the_digits_group():
    """A session fixture is per worker: a module outside the group trains the whole recipe again (a minute)."""
    tests = Path(__file__).parent
    readers = [p.name for p in sorted(tests.glob("test_*.py"))
               if re.search(r"\b(%s)\b" % "|".join(SHARED_DIGITS), p.read_text()) and p.name != Path(__file__).name]
    assert len(readers) >= 6, readers
    assert [name for name in readers if group_of(f"tests/{name}::t") != "digits"] == []


def _scratch_project(tmp_path):
    project = tmp_path / "project"
    (project / "tests").mkdir(parents=True)
    (project / "pytest.ini").write_text("[pytest]\ntestpaths = tests\n")
    (project / "tests" / "conftest.py").write_text(
        "from testkit.xdist_groups import pytest_xdist_make_scheduler  # noqa: F401\n")
    (project / "tests" / "recorder.py").write_text(RECORD)
    for module in ("test_box_a", "test_healing_b", "test_plain_c", "test_plain_d"):
        (project / "tests" / f"{module}.py").write_text(f"from recorder import record\n{TESTS}\n")
    return project


def _run(project, record, *args) -> list:
    env = {k: v for k, v in with_testkit().items() if not k.startswith(("PYTEST_", "RECORD"))}
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args], cwd=project,
                            capture_output=True, text=True, timeout=100, env={**env, "RECORD": str(record)})
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return [json.loads(line) for line in record.read_text().splitlines()]


@pytest.mark.timeout(120)
def test_a_group_runs_in_one_worker_and_the_rest_spread(tmp_path):
    ran = _run(_scratch_project(tmp_path), tmp_path / "record.jsonl", "-n", "2", "--dist", "loadgroup")
    assert len(ran) == 24
    box_workers = {worker for test, worker in ran if group_of(test) == "box"}
    assert len(box_workers) == 1, ran  # 12 box tests, one worker
    assert {worker for _, worker in ran} == {"gw0", "gw1"}, ran  # the others use the second worker


@pytest.mark.timeout(120)
@pytest.mark.parametrize("args", [(), ("-p", "no:xdist")], ids=["one-process", "without-xdist"])
def test_without_workers_the_hook_changes_nothing(tmp_path, args):
    ran = _run(_scratch_project(tmp_path), tmp_path / "record.jsonl", *args)
    assert len(ran) == 24 and {worker for _, worker in ran} == {"main"}, ran
