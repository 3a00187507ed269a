"""Whether a run's launcher still runs (launcher/jobs/launcher_record.py), as `launch logs --follow` and `launch runs` see it."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from click.testing import CliRunner

from mxlaunch.launcher.cli import logs as logs_cmd

from mxlaunch.launcher.jobs import launcher_record as runstate
def _record(run_dir, pid):
    with open(runstate.launcher_path(str(run_dir)), "w") as f:
        json.dump({"pid": pid, "process_start": runstate.process_start(pid)}, f)


def test_a_live_launcher_is_running_even_between_restart_attempts(tmp_path):
    (tmp_path / "summary.json").write_text("{}")  # the last attempt's summary: --max-restarts goes on
    _record(tmp_path, os.getpid())
    assert runstate.state(str(tmp_path)) == runstate.RUNNING


def test_ended_gone_and_unknown(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    assert runstate.state(str(tmp_path)) == runstate.UNKNOWN
    with open(runstate.launcher_path(str(tmp_path)), "w") as f:
        json.dump({"pid": int(dead), "process_start": 1}, f)
    assert runstate.state(str(tmp_path)) == runstate.GONE
    (tmp_path / "summary.json").write_text("{}")
    assert runstate.state(str(tmp_path)) == runstate.ENDED


def test_follow_of_a_run_without_any_record_ends(tmp_path, monkeypatch):
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "worker-0.log").write_text("hello\n")
    monkeypatch.setattr(logs_cmd, "FOLLOW_UNKNOWN_LIMIT", 0.3)
    result = CliRunner().invoke(logs_cmd.logs, [str(tmp_path), "--follow"])
    assert result.exit_code == 0 and "hello" in result.output
    assert "stopped following" in result.output
