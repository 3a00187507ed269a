"""Preflight over SSH against the bed: every failure is a per-host table and an exit before anything starts."""
import os
import stat
import time

import pytest

from mxlaunch.exits import Exit
from mxlaunch.launcher.jobs import preflight
from mxlaunch.infra.transport.hosts import place
from mxlaunch.launcher.jobs.plan import JobSpec, plan_job
from mxlaunch.infra.transport.ssh import SSHOptions, connect_all
from testkit import bed as testbed
from testkit.jobs import PY, run_launch, ssh_args

pytestmark = [pytest.mark.timeout(90), pytest.mark.bed, pytest.mark.usefixtures("no_agent")]

bed = testbed.bed_fixture(3)


def assert_nothing_started(bed):
    """Only the listening sshd remains in every namespace (sessions end once the launcher closed them)."""
    testbed.wait_for(lambda: not any(bed.job_pids(i) for i in range(len(bed.members))), 5,
                     what="no process but sshd on any bed host")


def table_rows(err):
    """Preflight table rows by host target."""
    rows = {}
    for line in err.splitlines():
        if line.startswith("root@"):
            rows[line.split()[0]] = line
    return rows


def test_all_checks_pass_on_every_host_with_the_plan(bed):
    hosts = tuple(h for h in bed.hosts)
    spec = JobSpec(command=(PY, "-c", "pass"), num_workers=2, num_servers=1, hosts=hosts, local=False,
                   workdir=bed.shared)
    plan = plan_job(spec, job_id="x", run_dir="/tmp/none", port=23456)
    placement = place(spec.hosts, 2, 1)
    conns = connect_all(placement.hosts_used(), SSHOptions(key=bed.key, known_hosts=bed.known_hosts,
                                                            config_path=None))
    try:
        started = time.monotonic()
        report = preflight.run(conns, preflight.Checks.from_spec(spec, PY, placement), plan=plan)
        elapsed = time.monotonic() - started
    finally:
        conns.close()
    assert not report.failed, report.table()
    import mxnet
    for row in report.rows:
        assert (row.ssh, row.mxnet, row.workdir, row.port) == ("ok", mxnet.__version__, "ok", "ok"), report.table()
    # workers on hosts 0 and 1, numbered in ps-lite's rank order (address descending, as text)
    first = "worker-0" if bed.members[0].address > bed.members[1].address else "worker-1"
    assert report.rows[0].roles == f"scheduler,server-0,{first}"
    assert elapsed < 30
    assert_nothing_started(bed)


def test_unknown_key_down_host_and_missing_interpreter_each_get_their_row(bed, tmp_path):
    known = tmp_path / "known_hosts"  # host 0's key missing
    known.write_text("".join(f"{m.address} {m.host_key_line}\n" for m in bed.members[1:]))
    bed.stop_sshd(2)
    try:
        rc, out, err = run_launch(*ssh_args(bed, "--run-dir", str(tmp_path / "run"), python="/nonexistent/bin/python",
                                            known_hosts=str(known)), "--", "/nonexistent/bin/python", "-c", "pass",
                                  timeout=60)
    finally:
        bed.start_sshd(2)
    assert rc == Exit.PREFLIGHT, err
    assert "preflight failed; nothing was started:" in err
    rows = table_rows(err)
    a0, a1, a2 = (f"root@{m.address}" for m in bed.members)
    assert "host key ssh-ed25519 SHA256:" in rows[a0] and "--accept-new-host-keys" in rows[a0]
    assert "interpreter /nonexistent/bin/python not found" in rows[a1]
    assert "connection refused (is sshd running on port 22?)" in rows[a2]
    assert err.strip().splitlines()[-1].startswith("launch: error: preflight failed on 3 of 3 host(s), nothing started")
    assert "Traceback" not in err
    assert not os.path.exists(tmp_path / "run")  # a refused preflight leaves no run directory
    assert_nothing_started(bed)


def test_wrong_key_fails_on_every_host(bed, tmp_path):
    wrong = str(tmp_path / "wrong")
    import subprocess
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", wrong], check=True, timeout=10,
                   stdin=subprocess.DEVNULL)
    args = ssh_args(bed, "--run-dir", str(tmp_path / "run"))
    args[args.index("--ssh-key") + 1] = wrong
    rc, out, err = run_launch(*args, "--", PY, "-c", "pass", timeout=60)
    assert rc == Exit.PREFLIGHT
    rows = table_rows(err)
    assert len(rows) == 3 and all(f"authentication failed as root (tried {wrong}" in r for r in rows.values())
    assert not os.path.exists(tmp_path / "run")
    assert_nothing_started(bed)


def test_relative_python_is_a_usage_error(bed, tmp_path):
    rc, out, err = run_launch(*ssh_args(bed, python="python3"), "--", "python3", "-c", "pass", timeout=30)
    assert rc == 2
    assert err.strip() == ("launch: error: --python must be an absolute path on the hosts, got 'python3' "
                           "(a relative interpreter resolves differently on every host)")


def fake_python(bed, old_on=None):
    """An interpreter wrapper whose `mxnet` is a stub (version 1.9.1, or 1.8.0 on host `old_on`): quick to
    import, and lets one host differ. The same path on every host, like a venv on EFS."""
    stub = os.path.join(bed.shared, "stub")
    for version in ("1.9.1", "1.8.0"):
        os.makedirs(os.path.join(stub, version, "mxnet"), exist_ok=True)
        with open(os.path.join(stub, version, "mxnet", "__init__.py"), "w") as fh:
            fh.write(f"__version__ = {version!r}\n")
    wrapper = os.path.join(bed.shared, "python")
    old = bed.members[old_on].address if old_on is not None else "none"
    with open(wrapper, "w") as fh:
        fh.write(f"#!/bin/sh\nif ip -4 -o addr show dev eth0 | grep -q ' {old}/'; then v=1.8.0; else v=1.9.1; fi\n"
                 f"PYTHONPATH={stub}/$v exec {PY} \"$@\"\n")
    os.chmod(wrapper, os.stat(wrapper).st_mode | stat.S_IXUSR)
    return wrapper


def test_missing_data_file_on_worker_hosts_and_mxnet_version_mismatch(bed, tmp_path):
    work = os.path.join(bed.shared, "work")
    os.makedirs(os.path.join(work, "data"), exist_ok=True)
    open(os.path.join(work, "train.py"), "w").close()
    open(os.path.join(work, "data", "train.rec"), "w").close()
    python = fake_python(bed, old_on=1)
    rc, out, err = run_launch(*ssh_args(bed, "--workdir", work, "--run-dir", str(tmp_path / "run"), python=python),
                              "--", python, "train.py", "--data-train", "data/train.rec",
                              "--data-val=data/val.rec", timeout=60)
    assert rc == Exit.PREFLIGHT, err
    rows = table_rows(err)
    a0, a1, a2 = (f"root@{m.address}" for m in bed.members)
    assert "not found" not in rows[a0] and "mxnet" not in rows[a0].split("  ")[-1]  # no worker there: no data check
    assert f"file data/val.rec not found (in {work})" in err.split(a1)[1].split("root@")[0]
    assert f"file data/val.rec not found (in {work})" in rows[a2]
    assert "mxnet 1.8.0 here, 1.9.1 on the other hosts" in err.split(a1)[1].split("root@")[0]
    assert "data/train.rec" not in err
    assert not os.path.exists(tmp_path / "run")
    assert_nothing_started(bed)


def test_missing_workdir(bed, tmp_path):
    python = fake_python(bed)
    missing = os.path.join(bed.shared, "no-such-dir")
    rc, out, err = run_launch(*ssh_args(bed, "--workdir", missing, "--run-dir", str(tmp_path / "run"), python=python),
                              "--", python, "-c", "pass", timeout=60)
    assert rc == Exit.PREFLIGHT
    assert not os.path.exists(tmp_path / "run")
    assert all(f"workdir {missing} does not exist" in r for r in table_rows(err).values())


def test_firewalled_scheduler_port_is_found_before_anything_runs(bed, tmp_path):
    python = fake_python(bed)
    bed.firewall(0)  # the scheduler's host drops what arrives for ports 20000-32767 (where ports are chosen)
    try:
        started = time.monotonic()
        rc, out, err = run_launch(*ssh_args(bed, "--run-dir", str(tmp_path / "run"), python=python),
                                  "--", python, "-c", "import time; time.sleep(60)", timeout=60)
        elapsed = time.monotonic() - started
    finally:
        bed.unfirewall(0)
    assert rc == Exit.PREFLIGHT, err
    rows = table_rows(err)
    a0, a1, a2 = (f"root@{m.address}" for m in bed.members)
    for a in (a1, a2):
        assert f"cannot reach the scheduler at {bed.members[0].address}:" in rows[a]
        assert "timed out after 3s" in rows[a]
    assert "cannot reach" not in rows[a0]  # the host itself reaches its own port
    assert elapsed < 30
    assert not os.path.exists(tmp_path / "run")
    assert_nothing_started(bed)
