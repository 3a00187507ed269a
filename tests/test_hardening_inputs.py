"""Issue 12 hardening, inputs: every bad input is one line and its documented exit status (never a traceback,
never exit 70), and secrets stay off screens and files. Fast: parsers and commands that stop before a job."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import run_trainer
from mxlaunch.launcher.jobs import where
from mxlaunch.exits import Exit
from mxlaunch.launcher.jobs import rundir
from mxlaunch.infra.transport.hosts import HostfileError, parse_hosts
from mxlaunch.launcher.jobs.plan import masked
from mxlaunch.files import open_new

SECRET = "s3cr3t-v4lue-9f2"


def launch(*args, env=None, cwd=None):
    """`launch ARGS` in its own process: (exit status, stdout, stderr)."""
    run = subprocess.run([sys.executable, "-m", "mxlaunch.launcher", *args], capture_output=True, text=True,
                         timeout=60, env=dict(os.environ, NO_COLOR="1", **(env or {})), cwd=cwd)
    return run.returncode, run.stdout, run.stderr


def one_line_error(code, out, err, status=Exit.USAGE):
    assert code == status, (code, out, err)
    assert "Traceback" not in err and "internal error" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


# ------------------------------------------------------------------------------------------------ hostfiles

@pytest.mark.parametrize("spec, why", [
    ("h:²", "port '²'"), ("h slots=²", "slots must be"), ("h:٣", "port"),
    ("fe80::1%$(reboot)", "zone id"), ("[fe80::1%eth0;x]:22", "zone id"), ("fe80::1%", "zone id"),
    ("h,h:22", "listed twice"), ("[::1]:22,[0:0::1]:22", "listed twice"), ("u@h:2222,v@H:2222", "listed twice"),
])
def test_bad_hostfile_entries_are_one_error(spec, why):
    with pytest.raises(HostfileError, match=why.replace("$", r"\$").replace("(", r"\(").replace("[", r"\[")):
        parse_hosts(spec)


def test_good_zone_id_and_distinct_ports_are_kept():
    hosts = parse_hosts("[fe80::1%eth0.1_a-b]:22,h:22,h:2222")
    assert [h.target for h in hosts] == ["[fe80::1%eth0.1_a-b]:22", "h:22", "h:2222"]


def test_hostfile_with_superscript_slots_exits_2(tmp_path):
    hostfile = tmp_path / "hosts"
    hostfile.write_text("127.0.0.1 slots=²\n", encoding="utf-8")
    line = one_line_error(*launch("train", "--hosts", str(hostfile), "-n", "1", "--dry-run", "--", "true"))
    assert f"{hostfile}:1" in line


# ------------------------------------------------------------------------------------------ --grace/--timeout

@pytest.mark.parametrize("option, value", [("--grace", "nan"), ("--grace", "-1"), ("--grace", "inf"),
                                           ("--timeout", "nan"), ("--timeout", "-5"), ("--timeout", "0")])
def test_grace_and_timeout_must_be_positive_and_finite(option, value):
    line = one_line_error(*launch("train", "--local", "-n", "1", option, value, "--dry-run", "--", "true"))
    assert option in line and "positive number of seconds" in line


# ------------------------------------------------------------------------------------------------- secrets

@pytest.mark.parametrize("name", ["DB_PASS", "MYSQL_PWD", "GH_TOKEN", "client_secret", "AZURE_CREDENTIALS",
                                  "OPENAI_APIKEY", "OPENAI_API_KEY", "PASSPHRASE"])
def test_secret_looking_names_are_masked(name):
    assert masked({name: SECRET}) == {name: "***"}


@pytest.mark.parametrize("value, shown", [
    (f"postgres://bob:{SECRET}@db:5432/x", "postgres://bob:***@db:5432/x"),
    (f"http://u:{SECRET}@x@proxy:3128", "http://u:***@proxy:3128"),
    (f"redis://:{SECRET}@cache:6379", "redis://:***@cache:6379"),
    (f"bob:{SECRET}@db", "bob:***@db"),
    ("http://host:8080/a@b", "http://host:8080/a@b"),
    ("git@github.com:org/repo.git", "git@github.com:org/repo.git"),
])
def test_passwords_in_urls_are_masked_in_any_value(value, shown):
    assert masked({"UPSTREAM": value}) == {"UPSTREAM": shown}


def test_env_key_alone_and_env_file_keep_secrets_off_the_command_line_and_masked(tmp_path):
    env_file = tmp_path / "job.env"
    env_file.write_text(f"# comment\n\nexport DB_URL=postgres://bob:{SECRET}@db/x\nPLAIN=a=b c\nFROM_HERE\n",
                        encoding="utf-8")
    code, out, err = launch("train", "--local", "-n", "1", "--env-file", str(env_file), "--env", "API_TOKEN",
                            "--env", "PLAIN=override", "--dry-run", "--", "true",
                            env={"API_TOKEN": SECRET, "FROM_HERE": "here"})
    assert code == 0, err
    assert SECRET not in out + err
    import yaml
    job = yaml.safe_load(out)
    assert job["env"] == {"DB_URL": "postgres://bob:***@db/x", "PLAIN": "override", "FROM_HERE": "here",
                          "API_TOKEN": "***"}


@pytest.mark.parametrize("args, env", [
    (["--env", f"1BAD={SECRET}"], {}), (["--env", f"BAD-KEY={SECRET}"], {}), (["--env-worker", f"A B={SECRET}"], {}),
    (["--env", "NOT_SET_ANYWHERE_X"], {}), (["--env", "LAUNCH_X"], {"LAUNCH_X": SECRET}),
])
def test_a_bad_key_is_named_but_its_value_never_echoed(args, env):
    line = one_line_error(*launch("train", "--local", "-n", "1", *args, "--dry-run", "--", "true", env=env))
    assert SECRET not in line


def test_a_bad_env_file_line_names_the_line_never_the_value(tmp_path):
    env_file = tmp_path / "job.env"
    env_file.write_text(f"GOOD=1\nBAD KEY={SECRET}\n", encoding="utf-8")
    line = one_line_error(*launch("train", "--local", "-n", "1", "--env-file", str(env_file), "--dry-run", "--", "true"))
    assert f"{env_file}:2" in line and SECRET not in line
    code, out, err = launch("train", "--local", "-n", "1", "--env-file", str(tmp_path / "missing"), "--dry-run",
                            "--", "true")
    one_line_error(code, out, err)


# -------------------------------------------------------------------------------------------- run directory

def _job_yaml(tmp_path, **changes):
    data = {"job_id": "ab12cd34", "mode": "local", "run_dir": str(tmp_path), "workdir": str(tmp_path),
            "command": ["trainer", "fit", "--data-train", "t.rec", "--model-prefix", "m"], "num_workers": 1, "num_servers": 1,
            "timeout": None, "hosts": ["127.0.0.1 slots=1"], "env": {}, "env_worker": {}, "env_server": {}}
    data.update(changes)
    data = {k: v for k, v in data.items() if v != "<absent>"}
    (tmp_path / "job.yaml").write_text(json.dumps(data), encoding="utf-8")


@pytest.mark.parametrize("changes, said", [
    ({"mode": "<absent>"}, "mode: missing (expected local or hosts)"),
    ({"mode": "ssh"}, "mode: expected local or hosts, got 'ssh'"),
    ({"num_workers": "two"}, "num_workers: expected a whole number >= 1, got 'two'"),
    ({"num_workers": 0}, "num_workers: expected a whole number >= 1, got 0"),
    ({"num_workers": True}, "num_workers: expected a whole number >= 1, got True"),
    ({"num_servers": "<absent>"}, "num_servers: missing (expected a whole number >= 1)"),
    ({"command": "trainer fit"}, "command: expected a list of arguments"),
    ({"command": []}, "command: expected a list of arguments"),
    ({"hosts": "h1"}, "hosts: expected a list of hostfile lines"),
    ({"env": ["A=1"]}, "env: expected a mapping of names to values"),
    ({"env": {"API_TOKEN": [SECRET]}}, "env: expected a mapping of names to values"),
    ({"timeout": -1}, "timeout: expected a positive number of seconds, got -1"),
    ({"target": "x"}, "target: expected a mapping"),
    ({"target": {"ssh": "root"}}, "target.ssh: expected a mapping of SSH settings"),
    ({"target": {"ssh": {"user": 7}}}, "target.ssh.user: expected text, got 7"),
    ({"target": {"gpus_per_host": "all"}}, "target.gpus_per_host: expected a whole number >= 0, got 'all'"),
    ({"roles": [{"name": "scheduler"}, {"name": "worker-0", "host": 5}]}, "roles[1].host: expected text, got 5"),
])
def test_a_damaged_job_yaml_is_refused_on_resume_never_guessed(tmp_path, changes, said):
    """One line naming the file and the field (a value is repeated only where it is one word, never an
    environment's)."""
    _job_yaml(tmp_path, **changes)
    line = one_line_error(*launch("train", "--resume", str(tmp_path), "--dry-run"))
    assert f"{tmp_path / 'job.yaml'} is damaged ({said}): it does not describe a job that can be resumed" in line
    assert SECRET not in line


def test_a_job_yaml_that_is_not_utf8_or_yaml_is_one_error(tmp_path):
    (tmp_path / "job.yaml").write_bytes(b"mode: \xff\xfe\n")
    one_line_error(*launch("train", "--resume", str(tmp_path), "--dry-run"))
    (tmp_path / "job.yaml").write_bytes(b"mode: [\n")
    one_line_error(*launch("train", "--resume", str(tmp_path), "--dry-run"))


def test_a_missing_mode_does_not_switch_a_job_to_ssh(tmp_path):
    _job_yaml(tmp_path, mode="<absent>")
    with pytest.raises(Exception, match="mode"):
        where.recorded_target(str(tmp_path))


def test_files_are_never_written_through_a_symlink(tmp_path):
    target = tmp_path / "elsewhere"
    target.write_text("precious", encoding="utf-8")
    run_dir = tmp_path / "run"
    (run_dir / "logs").mkdir(parents=True)
    os.symlink(target, run_dir / "summary.json")
    with pytest.raises(Exception, match="symbolic link"):
        with open_new(str(run_dir / "summary.json")) as f:
            f.write("x")
    with pytest.raises(Exception, match="symbolic link"):
        rundir.prepare(str(run_dir), resume=True)
    os.unlink(run_dir / "summary.json")
    os.symlink(target, run_dir / "logs" / "worker-0.log")
    with pytest.raises(Exception, match="symbolic link"):
        rundir.prepare(str(run_dir), resume=True)
    assert target.read_text(encoding="utf-8") == "precious"


# -------------------------------------------------------------------------------------------- launch plot/logs

@pytest.mark.parametrize("line", [b'{"epoch": "1", "train-accuracy": 0.5}', b'{"epoch": -1}', b'{"epoch": 1.5}',
                                  b'{"epoch": 1' + b"0" * 400 + b"}", b'{"epoch": 0, "x": "\xff"}', b"\xff\xfe",
                                  b'[1, 2]'])
def test_launch_plot_with_a_bad_record_is_one_error(tmp_path, line):
    (tmp_path / "metrics.jsonl").write_bytes(line + b"\n")
    msg = one_line_error(*launch("plot", str(tmp_path), "-o", str(tmp_path / "out.png")))
    assert "metrics.jsonl:1" in msg
    assert not (tmp_path / "out.png").exists()


@pytest.mark.parametrize("name", ["out.txt", "out"])
def test_launch_plot_refuses_an_output_that_is_not_an_image_format(tmp_path, name):
    (tmp_path / "metrics.jsonl").write_text('{"epoch": 0, "train-accuracy": 0.5}\n', encoding="utf-8")
    msg = one_line_error(*launch("plot", str(tmp_path), "-o", str(tmp_path / name)))
    assert ".png" in msg and not (tmp_path / name).exists()


def test_launch_logs_ignores_a_directory_named_like_a_log(tmp_path):
    (tmp_path / "logs" / "evil.log").mkdir(parents=True)
    (tmp_path / "logs" / "worker-0.log").write_text("hello\n", encoding="utf-8")
    code, out, err = launch("logs", str(tmp_path))
    assert code == 0, err
    assert out == "hello\n"


# ------------------------------------------------------------------------------------------------- trainer

@pytest.mark.parametrize("args, words", [
    (["--lr", "nan"], "--lr"), (["--lr", "inf"], "--lr"), (["--lr", "-0.1"], "--lr"), (["--mom", "nan"], "--mom"),
    (["--wd", "nan"], "--wd"), (["--lr-factor", "nan"], "--lr-factor"),
    (["--num-epochs", "0"], "--num-epochs"), (["--num-epochs", "-3"], "--num-epochs"),
    (["--image-shape", "3,0,0"], "--image-shape"),
    (["--kv-store", "dist_sync"], "launch train"),
])
def test_trainer_refuses_bad_options_before_reading_data(tmp_path, args, words):
    result = run_trainer("fit", "--data-train", tmp_path / "missing.rec", *args, timeout=60)
    assert result.returncode == Exit.USAGE, result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert words in result.stderr


def test_trainer_version():
    result = run_trainer("--version", timeout=60)
    assert result.returncode == 0 and result.stdout.startswith("trainer (mxlaunch) "), result


def test_unwritable_model_prefix_is_refused_before_training(digits_dir, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("", encoding="utf-8")
    result = run_trainer("fit", "--data-train", os.path.join(digits_dir, "digits_train.rec"), "--num-layers", "8",
                         "--image-shape", "3,28,28", "--batch-size", "32", "--num-epochs", "1",
                         "--model-prefix", blocker / "ckpt" / "m", timeout=120)
    assert result.returncode == Exit.USAGE, result.stderr
    assert "--model-prefix" in result.stderr and "Epoch[0]" not in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
