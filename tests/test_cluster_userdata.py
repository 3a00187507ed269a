"""User data (templates/cluster_userdata.sh.j2) run for what it does, not grepped: the --max-hours deadline
script with a fake clock, the systemd units it installs, the apt-lock wait with fake apt/fuser; and the
deadline as the instance, its tag and `launch cluster status` carry it (moto, --wait running)."""
from __future__ import annotations

import base64
import datetime as dt
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from aws_fixtures import AMI, CIDR, TAG, launch, plain_client, up_args
from mxlaunch.errors import UsageError
from mxlaunch.infra.cloud import spec as specs
from mxlaunch.infra.cloud.userdata import render_user_data
from mxlaunch.templates import render

DEADLINE = dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
EPOCH = int(DEADLINE.timestamp())
EFS_DNS = "fs-1.efs.us-east-1.amazonaws.com"


def spec(**options):
    return specs.build("ud", "g5.xlarge", 2, CIDR, **options)


def heredoc(text: str, marker: str) -> list:
    """The bodies of every `<<'MARKER'` here-document of a script."""
    return re.findall(rf"<<'{marker}'\n(.*?)\n{marker}\n", text, re.S)


def fake_bin(tmp_path: Path, **programs) -> dict:
    """A directory of fake commands (name -> bash body; each logs its argv to calls.log) first on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, body in programs.items():
        path = bin_dir / name
        path.write_text(f'#!/bin/bash\necho "{name} $*" >> {tmp_path}/calls.log\n{body}\n')
        path.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}


def calls(tmp_path: Path) -> list:
    log = tmp_path / "calls.log"
    return log.read_text().splitlines() if log.exists() else []


def test_user_data_is_valid_bash_small_enough_and_arms_the_deadline_first(tmp_path):
    text = render_user_data(spec(max_hours=2), EFS_DNS, DEADLINE)
    plain = render_user_data(spec(efs=False), None)
    for body in (text, plain):
        (tmp_path / "u.sh").write_text(body)
        assert subprocess.run(["bash", "-n", str(tmp_path / "u.sh")]).returncode == 0
        assert len(body.encode()) < 16 * 1024  # EC2's limit for user data (before base64)
    assert f'echo "{EPOCH} 2030-01-02T03:04:05Z" > /etc/mxlaunch/deadline' in text
    assert "systemctl enable --now mxlaunch-deadline.timer" in text
    # armed before anything that can fail or wait (apt, the EFS mount)
    assert text.index("mxlaunch-deadline.timer") < text.index("install_pkg nfs-common") < text.index("mount -t nfs4")
    with_systemd = text.split("else  # no systemd")[0]
    assert not re.search(r"^\s*shutdown -h \+", with_systemd, re.M)  # no cancellable `shutdown -h +N` there
    assert "deadline" not in plain and "shutdown" not in plain and "nfs4" not in plain
    assert f"{EFS_DNS}:/ /efs" in text


@pytest.mark.parametrize("bad", ["root; reboot", "ubuntu\nProxyCommand x", "Ubuntu", "-x", "u" * 33])
def test_a_user_name_that_is_not_a_login_name_never_reaches_user_data(bad):
    with pytest.raises(UsageError, match="--ssh-user"):
        spec(ssh_user=bad)
    with pytest.raises(UsageError, match="--ssh-user"):
        render_user_data(specs.ClusterSpec("ud", "g5.xlarge", 1, CIDR, ssh_user=bad), None)


def deadline_script(tmp_path: Path) -> Path:
    """The deadline program exactly as the user data installs it."""
    (body,) = heredoc(render_user_data(spec(max_hours=1), None, DEADLINE), "MXLAUNCH_DEADLINE_EOF")
    assert body + "\n" == render("cluster_deadline.sh.j2")
    path = tmp_path / "mxlaunch-deadline"
    path.write_text(body + "\n")
    path.chmod(0o755)
    return path


@pytest.mark.parametrize("now, fires", [(EPOCH - 3600, False), (EPOCH - 1, False), (EPOCH, True),
                                        (EPOCH + 86400 * 30, True)])  # e.g. a stopped instance started later
def test_the_deadline_program_powers_off_exactly_from_the_deadline(tmp_path, now, fires):
    script = deadline_script(tmp_path)
    (tmp_path / "deadline").write_text(f"{EPOCH} 2030-01-02T03:04:05Z\n")
    env = fake_bin(tmp_path, date=f"echo {now}", shutdown="exit 0")
    r = subprocess.run([str(script), str(tmp_path / "deadline")], env=env, capture_output=True, text=True,
                       timeout=10)
    assert r.returncode == 0, r.stderr
    powered = [c for c in calls(tmp_path) if c.startswith("shutdown")]
    if fires:
        assert powered == ["shutdown -h now mxlaunch: --max-hours deadline 2030-01-02T03:04:05Z reached"]
    else:
        assert powered == [] and r.stdout.strip() == str(EPOCH - now)


@pytest.mark.parametrize("content", [None, "", "soon 2030-01-02T03:04:05Z\n", "-5 x\n"])
def test_a_missing_or_bad_deadline_file_does_nothing_and_says_so(tmp_path, content):
    script = deadline_script(tmp_path)
    if content is not None:
        (tmp_path / "deadline").write_text(content)
    env = fake_bin(tmp_path, date=f"echo {EPOCH + 10}", shutdown="exit 0")
    r = subprocess.run([str(script), str(tmp_path / "deadline")], env=env, capture_output=True, text=True,
                       timeout=10)
    assert r.returncode == 2 and "mxlaunch-deadline" in r.stderr
    assert not [c for c in calls(tmp_path) if c.startswith("shutdown")]


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
def test_the_timer_and_service_units_are_valid_and_rearm_at_every_boot(tmp_path):
    text = render_user_data(spec(max_hours=1), None, DEADLINE)
    service, timer = heredoc(text, "MXLAUNCH_UNIT_EOF")
    assert "OnBootSec=" in timer and "OnUnitActiveSec=1min" in timer and "WantedBy=timers.target" in timer
    program = deadline_script(tmp_path)
    (tmp_path / "mxlaunch-deadline.service").write_text(
        service.replace("/usr/local/sbin/mxlaunch-deadline", str(program)) + "\n")
    (tmp_path / "mxlaunch-deadline.timer").write_text(timer + "\n")
    r = subprocess.run(["systemd-analyze", "verify", str(tmp_path / "mxlaunch-deadline.timer")],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and "mxlaunch-deadline" not in r.stderr, r.stderr


def run_steps(tmp_path: Path, start: str, body: str = "", **programs) -> tuple:
    """The user data's `fail` and trap, then its steps from `STEP=start` to its end (or `body` instead), run
    with fake commands first on PATH; its markers in tmp_path. -> (the run, the failed marker or None)."""
    text = render("cluster_userdata.sh.j2", name="ud", efs_dns=None, efs_root="/efs/mxlaunch", venv="/v",
                  ssh_user="ubuntu", marks=str(tmp_path), ready=str(tmp_path / "ready"),
                  failed=str(tmp_path / "failed"), log=str(tmp_path / "log"), python_too_new="3.12",
                  python_too_new_tuple="3, 12", deadline_iso=None, deadline_epoch=None)
    prologue = text[text.index("fail() {"):text.index("trap ")] + text[text.index("trap "):].split("\n", 1)[0]
    body = body or text[text.index(f"STEP={start}"):]
    r = subprocess.run(["bash", "-c", "set -uo pipefail\n" + prologue + "\n" + body], capture_output=True, text=True,
                       env=fake_bin(tmp_path, **programs), timeout=30)
    marker = tmp_path / "failed"
    return r, marker.read_text().strip() if marker.exists() else None


def test_a_python3_too_new_for_numpy_fails_the_python_step_naming_the_way_on(tmp_path):
    r, failed = run_steps(tmp_path, "python",
                          python3='case "$*" in *version_info*) exit 1;; -V) echo "Python 3.12.3";; esac; exit 0')
    assert r.returncode == 1 and failed is not None, r.stdout + r.stderr
    assert failed.startswith("python: Python 3.12.3 cannot install MXNet 1.9.1's numpy 1.23.5 (no wheels for Python "
                             "3.12 or later): use the Ubuntu 22.04 Deep Learning AMI (leave out --ami)"), failed
    assert "mxlaunch: step python failed: Python 3.12.3" in r.stdout


def test_a_python3_that_fits_passes_the_python_step_and_the_script_ends_ready(tmp_path):
    r, failed = run_steps(tmp_path, "python", python3='exec /usr/bin/python3 "$@"')
    assert r.returncode == 0 and failed is None and (tmp_path / "ready").exists(), r.stdout + r.stderr


def test_an_unexpected_end_of_a_step_still_leaves_a_failed_marker_naming_it(tmp_path):
    """Not every way out goes through `fail` (an unset variable under `set -u`, a command's own exit): the trap
    names the step it was in."""
    r, failed = run_steps(tmp_path, "efs", body="STEP=efs\necho \"$NOT_SET\"\n")
    assert r.returncode != 0 and failed == f"efs: ended with status {r.returncode}", (failed, r.stderr)


def test_the_user_data_writes_a_failed_marker_beside_ready_and_waits_for_the_mount_target(tmp_path):
    text = render_user_data(spec(), EFS_DNS)
    assert 'echo "$STEP: $1" > /var/lib/mxlaunch/failed' in text and "date -u +%FT%TZ > /var/lib/mxlaunch/ready" in text
    assert text.index("STEP=efs") < text.index("mount -t nfs4") < text.index("STEP=python") < text.index("STEP=ready")
    assert 'fail "EFS fs-1.efs.us-east-1.amazonaws.com could not be mounted at /efs within 10 minutes' in text
    assert "chmod 0644 /var/log/mxlaunch-userdata.log" in text  # the login user reads its tail over SSH


def run_install(tmp_path: Path, busy: int, tries: int = 120) -> subprocess.CompletedProcess:
    """`install_pkg nfs-common nfs-utils` from the rendered user data's apt helpers, with a fake fuser that
    reports the apt locks held `busy` times, and fake sleep/apt-get."""
    text = render_user_data(spec(), EFS_DNS)
    lib = render("cluster_apt.sh.j2")
    assert lib in text
    (tmp_path / "lib.sh").write_text(lib)
    (tmp_path / "busy").write_text(str(busy))
    env = fake_bin(tmp_path, sleep="exit 0", **{"apt-get": "exit 0"},
                   fuser=f'n=$(cat {tmp_path}/busy); [ "$n" -gt 0 ] || exit 1; echo $((n - 1)) > {tmp_path}/busy')
    env["APT_WAIT_TRIES"] = str(tries)
    return subprocess.run(["bash", "-c", f"source {tmp_path}/lib.sh && install_pkg nfs-common nfs-utils"],
                          env=env, capture_output=True, text=True, timeout=30)


def test_apt_waits_for_first_boot_unattended_upgrades_to_release_the_lock(tmp_path):
    r = run_install(tmp_path, busy=3)
    assert r.returncode == 0, r.stderr
    log = calls(tmp_path)
    assert [c.split()[0] for c in log] == ["fuser", "sleep", "fuser", "sleep", "fuser", "sleep", "fuser", "apt-get"]
    assert log[-1].startswith("apt-get -o DPkg::Lock::Timeout=") and log[-1].endswith("install nfs-common")
    assert "waiting for its lock" in r.stdout


def test_apt_wait_is_bounded(tmp_path):
    r = run_install(tmp_path, busy=1000, tries=4)
    assert r.returncode == 0, r.stderr
    log = [c.split()[0] for c in calls(tmp_path)]
    assert log.count("fuser") == 4 and log[-1] == "apt-get" and "still locked" in r.stdout


@pytest.mark.aws
def test_status_shows_the_deadline_the_instances_carry_and_what_bills_after_it(moto_aws, aws_env, monkeypatch):
    import mxlaunch.infra.cloud.provision as provision
    start = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) - dt.timedelta(hours=3)
    monkeypatch.setattr(provision, "CLOCK", lambda: start)  # `up` ran 3 hours ago with --max-hours 2
    args = up_args("dl", 2, "--max-hours", "2")
    args[args.index(AMI)] = "ami-12c6146b"  # an image moto knows (`up` checks the image exists)
    assert launch(*args).code == 0
    ec2 = plain_client("ec2")
    flt = [{"Name": f"tag:{TAG}", "Values": ["dl"]}]
    ids = [i["InstanceId"] for r in ec2.describe_instances(Filters=flt)["Reservations"] for i in r["Instances"]]
    iso = specs.deadline_text(start + dt.timedelta(hours=2))
    for iid in ids:  # tag, timer file and status: one deadline
        data = base64.b64decode(ec2.describe_instance_attribute(InstanceId=iid, Attribute="userData")[
            "UserData"]["Value"]).decode()
        assert f'echo "{int((start + dt.timedelta(hours=2)).timestamp())} {iso}" > /etc/mxlaunch/deadline' in data
        tags = {t["Key"]: t["Value"] for t in ec2.describe_tags(
            Filters=[{"Name": "resource-id", "Values": [iid]}])["Tags"]}
        assert tags["launch:deadline"] == iso
    s = launch("cluster", "status", "dl")
    assert s.code == 0 and f"deadline: 2 instance(s) terminate themselves at {iso} (passed" in s.out, s.out
    ec2.terminate_instances(InstanceIds=ids)  # what the timer's power-off does (shutdown behaviour terminate)
    s = launch("cluster", "status", "dl")
    assert s.code == 0, s.err
    (line,) = [x for x in s.out.splitlines() if x.startswith("no instances")]
    assert f"deadline {iso} passed" in line and "EFS fs-" in line and "still bills" in line
    assert "launch cluster down dl" in line
    assert launch("cluster", "down", "dl", "--yes").code == 0
