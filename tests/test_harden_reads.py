"""What the launcher reads from a run directory, where another user (or a damaged disk) may have put anything:
`launch runs` shows a damaged run as damaged and goes on, reading only regular files; `launch logs` streams,
bounded in memory whatever the file; no read follows a planted link. Real `launch` processes on run
directories made by hand; memory measured from the process's own accounting."""
from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys

import pytest
from click.testing import CliRunner

from mxlaunch.launcher.cli.logs import logs
from testkit.jobs import launch_argv

pytestmark = pytest.mark.timeout(180)


# Runs a command and writes its peak resident memory (kB, the kernel's accounting of the reaped child) to the
# descriptor PEAK_FD.
PEAK = ("import os, resource, subprocess, sys\n"
        "code = subprocess.call(sys.argv[1:])\n"
        "os.write(int(os.environ['PEAK_FD']), b'%d' % resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
        "sys.exit(code)\n")


def launch(*args, timeout=60, limit_mb=None, cwd=None, stdout=subprocess.PIPE):
    """`launch ARGS` in its own process (stdin empty), bounded in time and, with `limit_mb`, in address space
    (RLIMIT_AS: past it an allocation fails): (exit status, stdout, stderr, its peak resident memory in MB)."""
    def limit():
        if limit_mb:
            resource.setrlimit(resource.RLIMIT_AS, (limit_mb << 20, limit_mb << 20))
    peak_r, peak_w = os.pipe()
    proc = subprocess.Popen([sys.executable, "-c", PEAK, *launch_argv(*args)], stdout=stdout,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=dict(os.environ, NO_COLOR="1", PEAK_FD=str(peak_w)),
                            preexec_fn=limit, cwd=cwd, pass_fds=(peak_w,))
    os.close(peak_w)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        for pid in [int(p) for p in open(f"/proc/{proc.pid}/task/{proc.pid}/children").read().split()]:
            os.kill(pid, 9)  # the launch process this harness started (by its pid)
        proc.kill()
        out, err = proc.communicate(timeout=10)
        os.close(peak_r)
        pytest.fail(f"launch {' '.join(args)} did not end within {timeout}s: {err.decode()[-2000:]}")
    with os.fdopen(peak_r, "rb") as f:
        peak = int(f.read() or 0) / 1024
    return proc.returncode, (out or b"").decode("utf-8", "replace"), err.decode("utf-8", "replace"), peak


def make_run(parent, name, start="2026-01-01T10:00:00+00:00", **summary):
    run_dir = parent / name
    (run_dir / "logs").mkdir(parents=True)
    (run_dir / "job.yaml").write_text(f"job_id: {name}\nmode: local\nnum_workers: 1\n")
    data = {"reason": "ok", "start": start, "seconds": 12.0, "epochs": 2, "final_validation_accuracy": 0.5}
    data.update(summary)
    (run_dir / "summary.json").write_text(json.dumps(data))
    return run_dir


def rows(out):
    return {line.split()[0]: line.split() for line in out.splitlines()[1:]}


# -------------------------------------------------------------------------------------------- launch runs

@pytest.mark.parametrize("damage", [{"start": "2026-01-02T10:00:00"}, {"seconds": float("nan")},
                                    {"seconds": float("inf")}, {"final_validation_accuracy": float("-inf")},
                                    {"seconds": "12"}, {"start": 5}],
                         ids=["time-without-zone", "nan", "infinity", "-infinity", "text", "number-as-time"])
def test_runs_shows_a_damaged_summary_as_damaged_and_lists_the_others(tmp_path, damage):
    make_run(tmp_path, "good")
    make_run(tmp_path, "bad", **damage)
    make_run(tmp_path, "later", start="2026-01-03T10:00:00+00:00")
    code, out, err, _ = launch("runs", "--dir", str(tmp_path))
    assert code == 0, err
    listed = rows(out)
    assert set(listed) == {"good", "bad", "later"}, out
    assert listed["bad"][6:8] == ["damaged:", "summary.json"], out
    assert listed["good"][6:] == ["ok", "2", "0.5000", "12s"] and listed["later"][6] == "ok"


@pytest.mark.parametrize("name", ["job.yaml", "summary.json", "launcher.json"])
def test_runs_reads_only_regular_files_a_fifo_is_damage_not_a_hang(tmp_path, name):
    make_run(tmp_path, "good")
    bad = make_run(tmp_path, "bad")
    target = bad / name
    if target.exists():
        target.unlink()
    os.mkfifo(target)
    code, out, err, _ = launch("runs", "--dir", str(tmp_path), timeout=30)
    assert code == 0, err
    listed = rows(out)
    assert listed["bad"][6:8] == ["damaged:", name], out
    assert listed["good"][6] == "ok"


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_runs_shows_a_launcher_record_of_another_user_as_damaged(tmp_path):
    """A launcher.json another user owns is not this user's launcher's: not trusted, said as damage."""
    bad = make_run(tmp_path, "bad")
    (bad / "launcher.json").write_text(json.dumps({"pid": os.getpid(), "started": "2026-01-01T10:00:00+00:00"}))
    os.chown(bad / "launcher.json", 65534, 65534)
    code, out, err, _ = launch("runs", "--dir", str(tmp_path))
    assert code == 0 and rows(out)["bad"][6:8] == ["damaged:", "launcher.json"], (out, err)


def test_runs_never_reads_through_a_planted_link(tmp_path):
    secret = tmp_path / "elsewhere.json"
    secret.write_text(json.dumps({"reason": "PLANTED", "start": "2026-01-01T10:00:00+00:00"}))
    runs_dir = tmp_path / "runs"
    bad = make_run(runs_dir, "bad")
    (bad / "summary.json").unlink()
    (bad / "summary.json").symlink_to(secret)
    os.symlink("/dev/zero", bad / "job.yaml.tmp")  # a stray name is never read
    code, out, err, _ = launch("runs", "--dir", str(runs_dir))
    assert code == 0, err
    assert "PLANTED" not in out and rows(out)["bad"][6:8] == ["damaged:", "summary.json"], out


def test_runs_refuses_a_huge_record_without_reading_it_whole(tmp_path):
    bad = make_run(tmp_path, "bad")
    with open(bad / "job.yaml", "wb") as f:
        f.truncate(1 << 30)  # 1 GiB, sparse: reading it whole would take the time and memory a listing has not
    code, out, err, _ = launch("runs", "--dir", str(tmp_path), limit_mb=600)
    assert code == 0, err
    assert rows(out)["bad"][6:8] == ["damaged:", "job.yaml"], out


# -------------------------------------------------------------------------------------------- launch logs

MEMORY_MB = 300  # what `launch logs` may hold at most, whatever the run directory holds
SAFETY_MB = 4096  # address space: a reader that reads without bound fails here instead of filling the machine


def write_log(run_dir, role, lines):
    (run_dir / "logs" / f"{role}.log").write_bytes(b"".join(line + b"\n" for line in lines))
    (run_dir / "logs" / f"{role}.log.times").write_bytes(b"".join(b"%d.000\n" % i for i, _ in enumerate(lines)))


def big_log(path, lines=1_000_000, width=99):
    """A 100 MB log: `lines` lines of `width` bytes and a newline, the last one numbered."""
    block = (b"x" * width + b"\n") * 10_000
    with open(path, "wb") as f:
        for _ in range(lines // 10_000):
            f.write(block)
        f.seek(-2 * (width + 1), os.SEEK_END)
        f.write(b"second-to-last".ljust(width, b".") + b"\n" + b"last".ljust(width, b".") + b"\n")


def test_logs_tail_of_a_100_mb_log_reads_from_the_end_in_bounded_memory(tmp_path):
    run_dir = make_run(tmp_path, "r")
    big_log(run_dir / "logs" / "worker-0.log")
    code, out, err, peak = launch("logs", str(run_dir), "--tail", "2", limit_mb=SAFETY_MB)
    assert code == 0, err
    assert out.splitlines() == ["second-to-last".ljust(99, "."), "last".ljust(99, ".")]
    assert peak < MEMORY_MB, f"{peak:.0f} MB"


def read_bytes():
    """The bytes this process has read so far (the kernel's count of every read call)."""
    with open("/proc/self/io", "rb") as f:
        return int(dict(line.split(b": ") for line in f.read().splitlines())[b"rchar"])


def test_logs_tail_without_merge_reads_only_the_end(tmp_path):
    """Without --merge no line is looked up in the times file, so nothing before the tail is counted either:
    --tail 2 of a 200 MB log reads a chunk or two, not the whole file."""
    run_dir = make_run(tmp_path, "r")
    with open(run_dir / "logs" / "worker-0.log", "wb") as f:
        f.truncate(200 << 20)  # sparse: 200 MB of NUL bytes, no newline among them
        f.seek(0, os.SEEK_END)
        f.write(b"\nsecond-to-last\nlast\n")
    before = read_bytes()
    result = CliRunner().invoke(logs, [str(run_dir), "--tail", "2"])
    read = read_bytes() - before
    assert result.exit_code == 0 and result.output == "second-to-last\nlast\n", result.output[-200:]
    assert read < 8 << 20, f"{read / (1 << 20):.0f} MB read"


def test_logs_of_a_100_mb_line_without_a_newline_stays_bounded(tmp_path):
    run_dir = make_run(tmp_path, "r")
    with open(run_dir / "logs" / "worker-0.log", "wb") as f:
        for _ in range(100):
            f.write(b"y" * (1 << 20))
    code, out, err, peak = launch("logs", str(run_dir), limit_mb=SAFETY_MB)
    assert code == 0, err
    assert out == "y" * (100 << 20) + "\n"
    assert peak < MEMORY_MB, f"{peak:.0f} MB"


def test_logs_merge_of_logs_and_times_of_bare_newlines_stays_bounded(tmp_path):
    """Every role's log and times file of nothing but newlines: each chunk read holds a million lines, and
    --merge reads a log and a times file per role at once (before: a chunk split whole, about 80 MB a file)."""
    run_dir = make_run(tmp_path, "r")
    newlines = b"\n" * ((1 << 20) + (1 << 16))  # more than one chunk
    for role in ("scheduler", "worker-0"):  # two roles: before, four such files read at once passed 300 MB
        for name in (f"{role}.log", f"{role}.log.times"):
            (run_dir / "logs" / name).write_bytes(newlines)
    with open(tmp_path / "out", "wb") as out:
        code, _, err, peak = launch("logs", str(run_dir), "--merge", limit_mb=SAFETY_MB, timeout=150, stdout=out)
    assert code == 0, err
    assert peak < MEMORY_MB, f"{peak:.0f} MB"
    with open(tmp_path / "out", "rb") as out:  # every line, each with its role's prefix
        assert sum(block.count(b"\n") for block in iter(lambda: out.read(1 << 20), b"")) == 2 * len(newlines)


@pytest.mark.parametrize("merge", [False, True], ids=["plain", "merge"])
def test_logs_with_a_times_file_linked_to_dev_zero_ends_in_bounded_memory(tmp_path, merge):
    """Before: the times file was read whole, always: 15.8 GB within 30 s."""
    run_dir = make_run(tmp_path, "r")
    write_log(run_dir, "scheduler", [b"s1", b"s2"])
    write_log(run_dir, "worker-0", [b"a1", b"a2"])
    times = run_dir / "logs" / "worker-0.log.times"
    times.unlink()
    times.symlink_to("/dev/zero")
    code, out, err, peak = launch("logs", str(run_dir), *(["--merge"] if merge else []), limit_mb=SAFETY_MB,
                                  timeout=60)
    assert code == 0, err
    assert sorted(out.splitlines()) == ["[scheduler] s1", "[scheduler] s2", "[worker 0] a1", "[worker 0] a2"]
    if merge:  # one line says which times were not read
        assert err.count("\n") == 1 and f"{times} is a symbolic link: not read" in err, err
    assert peak < MEMORY_MB, f"{peak:.0f} MB"


def test_logs_never_follows_a_log_linked_elsewhere(tmp_path):
    elsewhere = tmp_path / "private.txt"
    elsewhere.write_text("PRIVATE NOTES\n")
    run_dir = make_run(tmp_path / "runs", "r")
    write_log(run_dir, "worker-0", [b"a1"])
    (run_dir / "logs" / "worker-1.log").symlink_to(elsewhere)
    code, out, err, _ = launch("logs", str(run_dir))
    assert code == 2 and "PRIVATE" not in out + err, (out, err)
    assert err.count("\n") == 1 and "worker-1.log is a symbolic link: not read" in err, err


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root and setpriv")
@pytest.mark.parametrize("tail", [[], ["--tail", "1"]], ids=["whole", "tail"])
def test_logs_of_a_log_it_may_not_read_is_one_line_and_exit_2(tmp_path, tail):
    """Before: exit 70, internal error (PermissionError). As root without the capabilities that let root read
    any file, a file of mode 000 is one this user may not read."""
    run_dir = make_run(tmp_path, "r")
    write_log(run_dir, "worker-0", [b"a1"])
    write_log(run_dir, "worker-1", [b"b1"])
    (run_dir / "logs" / "worker-1.log").chmod(0)
    proc = subprocess.run(["setpriv", "--bounding-set", "-dac_override,-dac_read_search",
                           *launch_argv("logs", str(run_dir), *tail)], capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, (proc.returncode, proc.stderr)
    assert f"{run_dir}/logs/worker-1.log cannot be read (Permission denied)" in proc.stderr, proc.stderr


def test_logs_refuses_a_fifo_named_like_a_log_instead_of_hanging(tmp_path):
    run_dir = make_run(tmp_path, "r")
    os.mkfifo(run_dir / "logs" / "worker-0.log")
    write_log(run_dir, "worker-1", [b"b1"])
    code, out, err, _ = launch("logs", str(run_dir), timeout=30)
    assert code == 0 and out == "b1\n", (code, out, err)
    (run_dir / "logs" / "worker-1.log").unlink()
    code, out, err, _ = launch("logs", str(run_dir), timeout=30)
    assert code == 2 and err.count("\n") == 1 and "has no role logs yet" in err, (code, err)
