"""The roles' environment on its way to files, screens and a detached launcher: names checked whole, values split
only at "\\n", and every secret-name rule of docs/jobs.md held both ways (masked, and shown), through --dry-run and
the job.yaml of a real run."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml

from mxlaunch.errors import UsageError
from mxlaunch.launcher.jobs import detached
from mxlaunch.launcher.jobs.env_options import read_env_file
from mxlaunch.launcher.jobs.plan import masked

pytestmark = pytest.mark.timeout(120)
SECRET = "s3cr3t-v4lue-9f2"
TAIL = "TAILOFTHESECRET"
# every character str.splitlines() breaks a line at, besides "\n"
SEPARATORS = ["\r", "\v", "\f", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"]

# docs/jobs.md: names containing SECRET, TOKEN, PASS, PWD, CREDENTIAL, PRIVATE, APIKEY or AUTH, or KEY as a word
MASKED = ["DB_SECRET", "GH_TOKEN", "PGPASSWORD", "MYSQL_PWD", "AZURE_CREDENTIALS", "GPG_PRIVATE", "OPENAI_APIKEY",
          "GITHUB_AUTH", "AUTHORIZATION", "AWS_ACCESS_KEY_ID", "KEY_ID", "KEY", "API_KEY", "api_key"]
SHOWN = ["MYKEY", "MONKEY", "KEYBOARD", "TURKEY_ID", "OMP_NUM_THREADS", "DATA_DIR"]


def launch(*args, env=None, cwd=None, timeout=90):
    run = subprocess.run([sys.executable, "-m", "mxlaunch.launcher", *args], capture_output=True, text=True,
                         timeout=timeout, env=dict(os.environ, NO_COLOR="1", **(env or {})), cwd=cwd,
                         stdin=subprocess.DEVNULL)
    return run.returncode, run.stdout, run.stderr


def one_line(code, out, err, status=2):
    assert code == status and "Traceback" not in err and "internal error" not in err, (code, out, err)
    assert len(err.strip().splitlines()) == 1, err
    return err.strip()


# ------------------------------------------------------------------------------------ names: a full match

@pytest.mark.parametrize("arg", ["A\n=1", "A\n", "A\r=1", "A =1", "=1"])
def test_an_environment_name_with_a_line_break_or_space_is_refused(tmp_path, arg):
    """`$` of a regular expression matches before a final newline: "A\\n" passed as a name, and job.yaml then
    held a key no --resume or `launch runs` could read back."""
    run_dir = tmp_path / "run"
    line = one_line(*launch("train", "--local", "-n", "1", "--run-dir", str(run_dir), "--env", arg, "--", "true"))
    assert "not a valid environment variable name" in line
    assert not run_dir.exists()


def test_an_env_file_name_holding_a_separator_is_refused_by_line(tmp_path):
    env_file = tmp_path / "job.env"
    env_file.write_text(f"GOOD=1\nB\u2028AD={SECRET}\n", encoding="utf-8")
    with pytest.raises(UsageError, match=f"{env_file}:2: .* is not a valid environment variable name") as error:
        read_env_file(str(env_file))
    assert SECRET not in str(error.value)


# ----------------------------------------------------------------------------- values: split only at "\n"

@pytest.mark.parametrize("separator", SEPARATORS, ids=[f"U+{ord(c):04X}" for c in SEPARATORS])
def test_an_env_file_value_holding_another_line_separator_stays_one_value(tmp_path, separator):
    """Before, str.splitlines() cut the value there: its tail became a second variable, or was named in an error."""
    env_file = tmp_path / "job.env"
    value = f"{SECRET}{separator}{TAIL}=x" if separator != "\r" else f"{SECRET}\r{TAIL}"
    env_file.write_bytes(f"API_TOKEN={value}\nNEXT=2\n".encode("utf-8"))
    assert read_env_file(str(env_file)) == (("API_TOKEN", value), ("NEXT", "2"))


@pytest.mark.parametrize("separator", SEPARATORS, ids=[f"U+{ord(c):04X}" for c in SEPARATORS])
def test_a_secret_holding_a_separator_is_never_split_nor_shown_by_launch_train(tmp_path, separator):
    env_file = tmp_path / "job.env"
    env_file.write_bytes(f"API_TOKEN={SECRET}{separator}{TAIL}\n".encode("utf-8"))
    code, out, err = launch("train", "--local", "-n", "1", "--env-file", str(env_file), "--dry-run", "--", "true")
    assert code == 0, err
    assert TAIL not in out + err and SECRET not in out + err
    assert yaml.safe_load(out)["env"] == {"API_TOKEN": "***"}


def test_an_env_file_value_holding_a_nul_byte_is_refused_in_one_line_naming_only_the_key(tmp_path):
    """Before: --dry-run took it, and a run started every role to fail at exec (embedded null byte)."""
    env_file = tmp_path / "job.env"
    env_file.write_bytes(f"GOOD=1\nAPI_TOKEN={SECRET}\0{TAIL}\n".encode("utf-8"))
    line = one_line(*launch("train", "--local", "-n", "1", "--env-file", str(env_file), "--dry-run", "--", "true"))
    assert f"--env-file {env_file}:2 API_TOKEN: its value holds a NUL byte" in line
    assert SECRET not in line and TAIL not in line


def test_crlf_env_files_still_read_as_lines(tmp_path):
    env_file = tmp_path / "job.env"
    env_file.write_bytes(b"A=1\r\nB=two words\r\n")
    assert read_env_file(str(env_file)) == (("A", "1"), ("B", "two words"))


def test_an_env_file_that_never_ends_is_refused_in_one_line():
    line = one_line(*launch("train", "--local", "-n", "1", "--env-file", "/dev/zero", "--dry-run", "--", "true"))
    assert "--env-file /dev/zero: larger than 1 MiB" in line


@pytest.mark.parametrize("separator", SEPARATORS + ["\n"], ids=[f"U+{ord(c):04X}" for c in SEPARATORS + ["\n"]])
def test_a_detached_launchers_environment_refuses_any_line_separator_naming_only_the_key(separator):
    """What goes through the starter's pipe is read on instance 0 by the mxlaunch installed there, which may be
    one that splits lines as str.splitlines() does: a value holding any of those is refused here."""
    with pytest.raises(UsageError) as error:
        detached._env_file_text([("OK", "fine"), ("API_TOKEN", f"{SECRET}{separator}{TAIL}")])
    assert "--env API_TOKEN" in str(error.value)
    assert SECRET not in str(error.value) and TAIL not in str(error.value)
    assert detached._env_file_text([("OK", "a b=c")]) == "OK=a b=c\n"


# ------------------------------------------------------------------------------------------ secret names

@pytest.mark.parametrize("name", MASKED)
def test_each_secret_name_rule_masks(name):
    assert masked({name: SECRET}) == {name: "***"}


@pytest.mark.parametrize("name", SHOWN)
def test_a_name_holding_key_only_inside_a_word_is_shown(name):
    assert masked({name: "visible"}) == {name: "visible"}


def _env_args():
    values = {name: f"{SECRET}-{i}" for i, name in enumerate(MASKED)}
    values.update({name: f"shown-{i}" for i, name in enumerate(SHOWN)})
    return values, [arg for name, value in values.items() for arg in ("--env", f"{name}={value}")]


def _check_env(env: dict, values: dict) -> None:
    for name in MASKED:
        assert env[name] == "***", name
    for name in SHOWN:
        assert env[name] == values[name], name


def test_secret_names_are_masked_and_others_shown_by_dry_run_in_both_modes():
    values, args = _env_args()
    code, out, err = launch("train", "--local", "-n", "1", *args, "--dry-run", "--", "true")
    assert code == 0, err
    job = yaml.safe_load(out)
    _check_env(job["env"], values)
    for role in job["roles"]:
        _check_env(role["env"], values)
    code, out, err = launch("train", "--hosts", "127.0.0.1,127.0.0.2", "-n", "1", "--python", sys.executable, *args,
                            "--dry-run", "--", "true")
    assert code == 0, err
    assert SECRET not in out + err
    job = yaml.safe_load(out)  # job.yaml, then `ssh:` with every role's command and the JSON line of its stdin
    _check_env(job["env"], values)
    configs = [config for roles in job["ssh"]["hosts"].values() for config in roles.values()]
    assert len(configs) == 3
    for config in configs:
        _check_env(config["env"], values)


def test_secret_names_are_masked_and_others_shown_in_a_real_runs_job_yaml(tmp_path):
    values, args = _env_args()
    run_dir = tmp_path / "run"
    code, out, err = launch("train", "--local", "-n", "1", "--run-dir", str(run_dir), *args, "--", "true")
    assert code == 0, err
    text = (run_dir / "job.yaml").read_text(encoding="utf-8")
    assert SECRET not in text
    job = yaml.safe_load(text)
    _check_env(job["env"], values)
    for role in job["roles"]:
        _check_env(role["env"], values)
