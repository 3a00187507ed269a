"""The GPU preflight: which GPUs a job uses, how a host's report is judged (pure, no SSH),
the same check run through a local shell (testkit.fake_ssh's Connection) as `launch train` and `launch cluster
up --wait ssh` send it, and,
on the SSH bed, a GPU job refused on CPU hosts (exit 3, nothing started) while a CPU job passes."""
import errno
import json
import os
import shlex
import stat
import sys

import pytest

from mxlaunch.exits import Exit
from mxlaunch.infra.cloud import install as remote
from mxlaunch.infra.transport import gpu_check
from mxlaunch.launcher.jobs import preflight
from mxlaunch.infra.transport.hosts import Host, place
from mxlaunch.infra.transport.remote import host_check
from mxlaunch.launcher.jobs.plan import JobSpec
from mxlaunch.infra.transport.ssh import HostResults, SSHOptions, connect_all
from testkit import bed as testbed
from testkit.fake_ssh import FakeNetwork, run_here
from testkit.jobs import PY, run_launch, ssh_args

pytest_plugins = ["fixtures_ssh"]
pytestmark = pytest.mark.timeout(120)

A10G = ["NVIDIA A10G", "8.6", "23028 MiB", "535.54.03"]
H100 = ["NVIDIA H100 80GB HBM3", "9.0", "81559 MiB", "580.65.06"]
H100_SMI = "NVIDIA H100 80GB HBM3, 9.0, 81559 MiB, 580.65.06"


def reply(rows=None, smi_error=None, cuda=True, num_gpus=None, op="ok"):
    """A host_check "gpu" reply as a host with these facts sends it."""
    return {"smi": rows, "smi_error": smi_error, "cuda": cuda,
            "num_gpus": len(rows) if num_gpus is None and rows is not None else num_gpus, "op": op, "hung": False}


# ------------------------------------------------------------------------------------ judging (pure)
def test_a_host_that_runs_every_requested_gpu_passes_and_shows_its_gpus():
    gpu = reply([A10G] * 4)
    assert gpu_check.judge((0, 1, 2, 3), gpu, "/v/bin/python") == []
    assert gpu_check.column(gpu) == "4x NVIDIA A10G (8.6, 23028 MiB)"
    assert gpu_check.judge((0,), reply([A10G, ["Tesla T4", "7.5", "15360 MiB", "535.54.03"]]), "/p") == []


def test_a_gpu_without_kernels_in_the_wheel_is_named_with_its_capability():
    gpu = reply([H100] * 8, op="mx.gpu(0): MXNetError: CUDA: no kernel image is available for execution on "
                              "the device")
    problems = gpu_check.judge((0, 1), gpu, "/p")
    assert problems == ["GPUs 0,1 NVIDIA H100 80GB HBM3: compute capability 9.0 (sm_90): mxnet-cu112 1.9.1 has "
                        "kernels for sm_50..sm_86 and no PTX",
                        "GPU operation failed: mx.gpu(0): MXNetError: CUDA: no kernel image is available for "
                        "execution on the device"]
    old = reply([["Tesla K80", "3.7", "11441 MiB", "470.82.01"]])
    assert gpu_check.judge((0,), old, "/p")[0].startswith("GPU 0 Tesla K80: compute capability 3.7 (sm_37)")


def test_fewer_gpus_than_asked_by_nvidia_smi_or_else_by_mxnet():
    assert gpu_check.judge((0, 1, 2), reply([A10G]), "/p") == [
        "GPUs 1,2 requested but this host has 1 GPU(s) (nvidia-smi)"]
    no_smi = reply(None, smi_error="not found", num_gpus=2, op="mx.gpu(2): MXNetError: CUDA: invalid device ordinal")
    assert gpu_check.judge((2,), no_smi, "/p") == [
        "GPU 2 requested but this host has 2 GPU(s) (mxnet)",
        "GPU operation failed: mx.gpu(2): MXNetError: CUDA: invalid device ordinal",
        "no nvidia-smi on this host (is the NVIDIA driver installed?)"]
    assert gpu_check.column(no_smi) == "no nvidia-smi"


def test_the_cpu_wheel_is_one_reason_not_a_gpu_count():
    cpu = reply(None, smi_error="not found", cuda=False, num_gpus=0,
                op="mx.gpu(0): MXNetError: Operator _ones is not implemented for GPU.")
    assert gpu_check.judge((0,), cpu, "/v/bin/python") == [
        "the mxnet of /v/bin/python is the CPU build (no CUDA): install the gpu extra (mxnet-cu112) there",
        "no nvidia-smi on this host (is the NVIDIA driver installed?)"]
    with_gpus = dict(cpu, smi=[A10G], smi_error=None)  # GPUs there, the wrong wheel
    assert gpu_check.judge((0,), with_gpus, "/p") == [
        "the mxnet of /p is the CPU build (no CUDA): install the gpu extra (mxnet-cu112) there"]


def test_an_old_driver_a_failing_or_hung_nvidia_smi_and_a_hung_operation():
    old = reply([A10G[:3] + ["418.87.00"]], op="mx.gpu(0): MXNetError: CUDA: CUDA driver version is insufficient "
                                                "for CUDA runtime version")
    assert gpu_check.judge((0,), old, "/p") == [
        "NVIDIA driver 418.87.00 is too old for CUDA 11 (needs 450.80.02 or newer)",
        "GPU operation failed: mx.gpu(0): MXNetError: CUDA: CUDA driver version is insufficient for CUDA runtime "
        "version"]
    broken = reply(None, smi_error="/usr/bin/nvidia-smi did not answer within 15s (a hung driver?)", num_gpus=None,
                   op="did not finish within 60s (a hung driver?)")
    assert gpu_check.judge((0,), broken, "/p") == [
        "nvidia-smi failed: /usr/bin/nvidia-smi did not answer within 15s (a hung driver?)",
        "GPU operation failed: did not finish within 60s (a hung driver?)"]
    assert gpu_check.column(broken) == "nvidia-smi FAIL"


def test_nothing_to_judge_without_gpus_or_without_a_reply_and_unreadable_capabilities_are_left_to_the_op():
    assert gpu_check.judge((), reply([H100]), "/p") == []
    assert gpu_check.judge((0,), None, "/p") == []  # the interpreter's own failure is reported instead
    unknown = reply([["Some GPU", "[N/A]", "1 MiB", "550.1"]])
    assert gpu_check.judge((0,), unknown, "/p") == []
    no_mxnet = {"smi": [A10G], "smi_error": None}  # mxnet failed to import: reported by the mxnet check
    assert gpu_check.judge((0,), no_mxnet, "/p") == [] and gpu_check.column(no_mxnet).startswith("1x NVIDIA A10G")


# ---------------------------------------------------------------------------------- what is checked where
def spec_of(command, hosts, workdir="/w"):
    return JobSpec(command=tuple(command), num_workers=2, num_servers=1, hosts=hosts, local=False, workdir=workdir)


def test_the_workloads_gpus_win_over_the_targets_and_only_worker_hosts_are_checked():
    hosts = (Host("10.0.0.1", slots=0), Host("10.0.0.2"), Host("10.0.0.3"))
    placement = place(hosts, 2, 1)
    for command, per_host, gpus in [(("trainer", "fit", "--data-train", "t.rec", "--gpus", "0,2"), 8, (0, 2)),
                                    (("trainer", "fit", "--data-train", "t.rec", "--gpus=1"), 0, (1,)),
                                    (("python", "train.py"), 4, (0, 1, 2, 3)),
                                    (("trainer", "fit", "--data-train", "t.rec", "--gpus", ""), 4, ()),
                                    (("python", "train.py"), 0, ())]:
        checks = preflight.Checks.from_spec(spec_of(command, hosts), "/p", placement, gpus_per_host=per_host)
        assert checks.gpus == gpus, command
        assert checks.gpus_for(hosts[0]) == () and checks.gpus_for(hosts[1]) == gpus
        assert checks.timeout == preflight.CHECK_TIMEOUT + (gpu_check.SMI_TIMEOUT + gpu_check.OP_TIMEOUT
                                                            if gpus else 0)


def test_the_table_gets_a_gpus_column_only_for_a_gpu_job():
    cpu = preflight.HostCheck(Host("a"), ssh="ok")
    assert preflight.Report([cpu]).table().split()[:9] == ["HOST", "ROLES", "SSH", "PYTHON", "MXNET", "WORKDIR",
                                                          "FILES", "PORT", "PROBLEM"]
    gpu = preflight.HostCheck(Host("b"), ssh="ok", gpus="1x NVIDIA H100 80GB HBM3 (9.0, 81559 MiB)",
                              problems=["GPU 0 NVIDIA H100 80GB HBM3: compute capability 9.0 (sm_90): ...", "second"])
    lines = preflight.Report([cpu, gpu]).table().splitlines()
    assert lines[0].split() == ["HOST", "ROLES", "SSH", "PYTHON", "MXNET", "WORKDIR", "FILES", "PORT", "GPUS",
                                "PROBLEM"]
    assert lines[1].split()[-2:] == ["-", "-"]
    assert "1x NVIDIA H100 80GB HBM3 (9.0, 81559 MiB)  GPU 0 NVIDIA H100" in lines[2]
    assert lines[3].strip() == "second" and lines[3].index("second") == lines[2].index("GPU 0 NVIDIA")


# ------------------------------------------------ the real check, through a local shell (no SSH, no bed)
def fake_nvidia_smi(folder, rows: str) -> str:
    """A directory holding an `nvidia-smi` that prints `rows` (CSV, as the real one answers the query)."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "nvidia-smi")
    with open(path, "w") as fh:
        fh.write(f"#!/bin/sh\nprintf '%s\\n' {shlex.quote(rows)}\n")
    os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR)
    return str(folder)


def test_preflight_runs_the_gpu_check_with_the_jobs_interpreter_and_judges_each_host(tmp_path):
    """Real mxnet (the CPU wheel): the GPU operation fails on every worker host; the host whose PATH has an
    nvidia-smi listing an H100 is also told the wheel has no kernels for it. The scheduler's host is not asked."""
    base = os.environ.get("PATH", "/usr/bin:/bin")
    hosts = (Host("127.0.0.1", slots=0), Host("127.0.0.2"), Host("127.0.0.3"))  # bindable: DMLC_NODE_HOST passes
    paths = (base, fake_nvidia_smi(tmp_path / "smi", H100_SMI) + ":" + base, str(tmp_path / "empty"))
    net = FakeNetwork(answer=run_here({h.address: p for h, p in zip(hosts, paths)}))  # commands run here
    conns = HostResults({h: net.connect(h, SSHOptions(config_path=None)) for h in hosts})
    spec = spec_of((sys.executable, "-m", "mxlaunch.trainer", "fit", "--benchmark", "1", "--gpus", "0"), hosts, workdir=str(tmp_path))
    checks = preflight.Checks.from_spec(spec, sys.executable, place(hosts, 2, 1))
    report = preflight.run(conns, checks)
    sched, h100, plain = report.rows
    assert sched.ok and sched.gpus is None, report.table()
    assert h100.gpus == "1x NVIDIA H100 80GB HBM3 (9.0, 81559 MiB)" and plain.gpus == "no nvidia-smi"
    assert h100.problems[0].startswith("GPU 0 NVIDIA H100 80GB HBM3: compute capability 9.0 (sm_90)")
    assert f"the mxnet of {sys.executable} is the CPU build (no CUDA)" in h100.problems[1]
    assert plain.problems == [f"the mxnet of {sys.executable} is the CPU build (no CUDA): install the gpu extra "
                              f"(mxnet-cu112) there", "no nvidia-smi on this host (is the NVIDIA driver installed?)"]
    assert "GPUS" in report.table().splitlines()[0]


def test_cluster_up_ends_with_the_same_check_on_every_instance(tmp_path):
    """The check runs here (the venv's interpreter standing for this one), with a PATH per instance."""
    base = os.environ.get("PATH", "/usr/bin:/bin")
    paths = {"c-0": fake_nvidia_smi(tmp_path / "smi", H100_SMI) + ":" + base, "c-1": base}
    net = FakeNetwork(answer=run_here(paths, python=(f"{remote.VENV}/bin/python", sys.executable)))
    r = remote.Remote(SSHOptions(config_path=None), echo=lambda line: None, connect=net.connect)
    with pytest.raises(remote.GpuCheckFailed) as err:
        r.check_gpus([("c-0", "198.51.100.1"), ("c-1", "198.51.100.2")], gpus_per_host=1)
    message = err.value.format_message()
    assert err.value.exit_code == Exit.PREFLIGHT and "\n" not in message
    assert message.startswith("GPU check failed on 2 of 2 instance(s): c-0: GPU 0 NVIDIA H100 80GB HBM3: compute "
                              "capability 9.0 (sm_90)")
    assert "c-1: the mxnet of /efs/mxlaunch/venv/bin/python is the CPU build" in message
    assert all(c.argv[:2] == (f"{remote.VENV}/bin/python", "-c") for c in net.calls) and len(net.calls) == 2


def test_cluster_gpu_check_passes_on_good_gpus_and_reports_a_host_that_does_not_answer(tmp_path):
    good = {"python": "3.10.12", "workdir": True, "missing": [], "bind": [], "mxnet": "1.9.1",
            "gpu": reply([A10G] * 4)}
    net = FakeNetwork(answer=lambda call: (0, f"{host_check.MARKER} {json.dumps(good)}\n", ""))
    net.fail("c-bad", ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"))
    r = remote.Remote(SSHOptions(config_path=None), echo=lambda line: None, connect=net.connect)
    r.check_gpus([("c-0", None), ("c-1", None)], gpus_per_host=4)  # no exception: every GPU runs
    with pytest.raises(remote.GpuCheckFailed, match="c-bad: the GPU check did not answer .*connection refused"):
        r.check_gpus([("c-0", None), ("c-bad", None)], gpus_per_host=4)


# ----------------------------------------------------------------------------------------- on the SSH bed
bed = testbed.bed_fixture(3)


def gpu_python(bed, fake_on: int) -> str:
    """The job's interpreter, the same path on every host (a venv on EFS): the real one, with an nvidia-smi
    (listing an H100) first on PATH on host `fake_on` only. The check runs as `python -c SRC` over SSH, so
    the wrapper is what puts that host's PATH in front of it."""
    smi = fake_nvidia_smi(os.path.join(bed.shared, "fake-smi"), H100_SMI)
    wrapper = os.path.join(bed.shared, "gpu-python")
    address = bed.members[fake_on].address
    with open(wrapper, "w") as fh:
        fh.write(f"#!/bin/sh\nif ip -4 -o addr show dev eth0 | grep -q ' {address}/'; then PATH={smi}:$PATH; "
                 f"export PATH; fi\nexec {PY} \"$@\"\n")
    os.chmod(wrapper, os.stat(wrapper).st_mode | stat.S_IXUSR)
    return wrapper


def table_rows(err):
    """Each host's lines of the preflight table (its row and the extra problem lines under it)."""
    rows, current = {}, None
    for line in err.split("preflight failed; nothing was started:", 1)[-1].splitlines():
        if line.startswith("root@"):
            current = line.split()[0]
            rows[current] = [line]
        elif current and line.startswith(" "):
            rows[current].append(line.strip())
        else:
            current = None
    return rows


@pytest.mark.bed
@pytest.mark.usefixtures("no_agent")
def test_gpu_job_on_cpu_hosts_is_refused_naming_each_host_and_why(bed, tmp_path):
    python = gpu_python(bed, fake_on=1)
    rc, out, err = run_launch(*ssh_args(bed, "--run-dir", str(tmp_path / "run"), python=python),
                              "--", python, "-m", "mxlaunch.trainer", "fit", "--benchmark", "1", "--gpus", "0", timeout=100)
    assert rc == Exit.PREFLIGHT, err
    rows = table_rows(err)
    a0, a1, a2 = (f"root@{m.address}" for m in bed.members)
    assert "GPUS" in err.split("preflight failed; nothing was started:")[1].splitlines()[1]
    assert rows[a0][0].endswith("  -")  # scheduler and server only: no GPU check there
    assert "1x NVIDIA H100 80GB HBM3 (9.0, 81559 MiB)" in rows[a1][0]
    assert "GPU 0 NVIDIA H100 80GB HBM3: compute capability 9.0 (sm_90): mxnet-cu112 1.9.1 has kernels for " \
           "sm_50..sm_86 and no PTX" in rows[a1][0]
    assert f"the mxnet of {python} is the CPU build (no CUDA)" in " ".join(rows[a1])
    assert "no nvidia-smi" in rows[a2][0] and f"the mxnet of {python} is the CPU build" in rows[a2][0]
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"launch: error: preflight failed on 2 of 3 host(s), nothing started: {a1}: GPU 0 NVIDIA "
                           f"H100 80GB HBM3: compute capability 9.0"), last
    assert "Traceback" not in err
    assert not os.path.exists(tmp_path / "run")
    testbed.wait_for(lambda: not any(bed.job_pids(i) for i in range(3)), 5, what="nothing running on the bed")


@pytest.mark.bed
@pytest.mark.usefixtures("no_agent")
def test_a_job_without_gpus_passes_preflight_on_the_same_hosts(bed):
    python = gpu_python(bed, fake_on=1)
    hosts = bed.hosts
    spec = JobSpec(command=(python, "-c", "pass"), num_workers=2, num_servers=1, hosts=hosts, local=False,
                   workdir=bed.shared)
    placement = place(hosts, 2, 1)
    conns = connect_all(placement.hosts_used(), SSHOptions(key=bed.key, known_hosts=bed.known_hosts,
                                                            config_path=None))
    try:
        report = preflight.run(conns, preflight.Checks.from_spec(spec, python, placement))
    finally:
        conns.close()
    assert not report.failed, report.table()
    assert all(row.gpus is None for row in report.rows) and "GPUS" not in report.table()
