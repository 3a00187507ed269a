"""`launch runs` and `launch logs` (--tail, --role, --merge, --follow's end) on run directories made by hand:
no job runs, click's CliRunner calls the commands in-process."""
import json
import os
import subprocess
import sys

from click.testing import CliRunner

from mxlaunch.launcher.jobs import launcher_record as runstate
from mxlaunch.launcher.cli.logs import logs
from mxlaunch.launcher.cli.runs import runs


def make_run(parent, name, start=None, reason=None, epochs=0, validation=None, seconds=None, launcher_pid=None,
             mode="local", workers=2, hosts=("127.0.0.1",)):
    run_dir = parent / name
    (run_dir / "logs").mkdir(parents=True)
    roles = "".join(f"  - name: worker-{i}\n    host: {hosts[i % len(hosts)]}\n" for i in range(workers))
    (run_dir / "job.yaml").write_text(f"job_id: {name}\nmode: {mode}\nnum_workers: {workers}\nroles:\n{roles}")
    if reason:
        (run_dir / "summary.json").write_text(json.dumps({
            "reason": reason, "start": start, "seconds": seconds, "epochs": epochs,
            "final_validation_accuracy": validation}))
    if launcher_pid is not None:
        (run_dir / "launcher.json").write_text(json.dumps({
            "pid": launcher_pid, "process_start": runstate.process_start(launcher_pid), "started": start}))
    return run_dir


def dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(10)
    return proc.pid


def test_runs_lists_every_run_newest_first_with_status_and_accuracy(tmp_path):
    make_run(tmp_path, "old", "2026-01-01T10:00:00+00:00", "ok", 10, 0.9712, 95.2)
    make_run(tmp_path, "new", "2026-01-02T10:00:00+00:00", "failed", 3, None, 4000, mode="hosts",
             hosts=("10.0.0.1", "10.0.0.2"), workers=4)
    make_run(tmp_path, "live", "2026-01-03T10:00:00+00:00", launcher_pid=os.getpid())
    died = make_run(tmp_path, "died", "2026-01-01T09:00:00+00:00", launcher_pid=os.getpid())
    record = json.loads((died / "launcher.json").read_text())
    record["process_start"] += 1  # the pid lives, but it is another process now
    (died / "launcher.json").write_text(json.dumps(record))
    (tmp_path / "not-a-run").mkdir()
    result = CliRunner().invoke(runs, ["--dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["id", "started", "mode", "hosts", "workers", "status", "epochs", "validation",
                                "duration"]
    rows = [line.split() for line in lines[1:]]
    assert [r[0] for r in rows] == ["live", "new", "old", "died"]
    assert rows[0][3:7] == ["local", "1", "2", "running"]
    assert rows[1][3:] == ["hosts", "2", "4", "failed", "3", "-", "1h06m"]
    assert rows[2][3:] == ["local", "1", "2", "ok", "10", "0.9712", "1m35s"]
    assert rows[3][6:8] == ["launcher", "died"]


def test_runs_of_a_missing_folder_is_one_line_and_exit_2(tmp_path):
    result = CliRunner().invoke(runs, ["--dir", str(tmp_path / "nope")])
    assert result.exit_code == 2 and "no such directory" in result.stderr


def write_log(run_dir, role, lines_and_times):
    (run_dir / "logs" / f"{role}.log").write_text("".join(f"{line}\n" for line, _ in lines_and_times))
    (run_dir / "logs" / f"{role}.log.times").write_text("".join(f"{t:.3f}\n" for _, t in lines_and_times))


def test_logs_tail_role_and_merge_by_receive_time(tmp_path):
    run_dir = make_run(tmp_path, "r", reason="ok")
    write_log(run_dir, "scheduler", [("s1", 1.0), ("s2", 4.0)])
    write_log(run_dir, "worker-0", [("a1", 2.0), ("a2", 3.0), ("a3", 6.0)])
    write_log(run_dir, "worker-1", [("b1", 2.5), ("b2", 5.0)])
    invoke = lambda *args: CliRunner().invoke(logs, [str(run_dir), *args])  # noqa: E731
    merged = invoke("--merge")
    assert merged.exit_code == 0, merged.output
    assert merged.output.splitlines() == ["[scheduler] s1", "[worker 0] a1", "[worker 1] b1", "[worker 0] a2",
                                          "[scheduler] s2", "[worker 1] b2", "[worker 0] a3"]
    assert invoke("--role", "worker-0", "--tail", "2").output == "a2\na3\n"
    assert invoke("--tail", "1", "--merge").output.splitlines() == ["[scheduler] s2", "[worker 1] b2",
                                                                   "[worker 0] a3"]
    assert invoke().output.splitlines()[:3] == ["[scheduler] s1", "[scheduler] s2", "[worker 0] a1"]


def test_logs_follow_ends_when_the_launcher_died_without_a_summary(tmp_path):
    run_dir = make_run(tmp_path, "r", launcher_pid=dead_pid())
    write_log(run_dir, "worker-0", [("last words", 1.0)])
    result = CliRunner().invoke(logs, [str(run_dir), "--follow"])
    assert result.exit_code == 0 and result.stdout == "last words\n"
    assert "is gone without writing summary.json" in result.stderr


def test_a_summary_or_launcher_record_that_is_no_object_or_cut_short_is_taken_as_missing(tmp_path):
    """`launch runs` and `launch logs --follow` read both files: JSON of another shape, or a file cut short, is
    no record (never exit 70). A damaged summary.json of an ended run still ends the follow."""
    for i, (name, text) in enumerate([("summary.json", "[]"), ("summary.json", '{"reason": "ok"'),
                                      ("launcher.json", "[]"), ("launcher.json", '{"pid": 1')]):
        run_dir = make_run(tmp_path / str(i), "r", "2026-01-01T10:00:00+00:00", reason="ok", launcher_pid=dead_pid())
        write_log(run_dir, "worker-0", [("last words", 1.0)])
        (run_dir / name).write_text(text)
        listed = CliRunner().invoke(runs, ["--dir", str(tmp_path / str(i))])
        assert listed.exit_code == 0 and listed.output.splitlines()[1].split()[0] == "r", (name, text, listed.output)
        followed = CliRunner().invoke(logs, [str(run_dir), "--follow"])
        assert followed.exit_code == 0 and followed.stdout == "last words\n", (name, text, followed.output)


def test_a_job_yaml_of_another_shape_is_listed_never_exit_70(tmp_path):
    """Hosts as a list or a number, a role's host as a list: `launch runs` still lists the run."""
    for i, text in enumerate(["job_id: r\nmode: hosts\nroles:\n  - name: worker-0\n    host: [a, b]\n",
                              "job_id: r\nmode: hosts\nhosts: 3\n", "job_id: r\nmode: hosts\nhosts: [[a], [b]]\n"]):
        run_dir = make_run(tmp_path / str(i), "r", "2026-01-01T10:00:00+00:00", reason="ok")
        (run_dir / "job.yaml").write_text(text)
        listed = CliRunner().invoke(runs, ["--dir", str(tmp_path / str(i))])
        assert listed.exit_code == 0, (text, listed.output)
        row = listed.output.splitlines()[1].split()
        assert row[0] == "r" and row[3] == "hosts", (text, listed.output)


def test_a_launcher_record_naming_no_real_pid_is_no_record(tmp_path):
    """pid 0, -1 (kill(-1) reaches every process), true or past the kernel's limit (OverflowError in os.kill):
    the record is damaged, never acted on."""
    for pid in (0, -1, True, 2 ** 31):
        run_dir = make_run(tmp_path / str(pid), "r", "2026-01-01T10:00:00+00:00")
        (run_dir / "launcher.json").write_text(json.dumps({"pid": pid, "started": "2026-01-01T10:00:00+00:00"}))
        assert runstate.read_launcher(str(run_dir)) is None, pid
