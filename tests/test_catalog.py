"""GPU facts of the instance catalog: the CUDA binary-compatibility rule (mxlaunch.cuda), each type's GPU against
AWS's own description of it (moto's copy of DescribeInstanceTypes), `launch cluster up` refusing types whose GPUs
the installed MXNet wheel cannot run (before any AWS call), `launch cluster types`, and the roles' environment."""
from __future__ import annotations

import pytest

from aws_fixtures import AMI, CIDR, launch, nothing_tagged, tagged_everything
from mxlaunch import cuda
from mxlaunch.errors import UsageError
from mxlaunch.exits import Exit
from mxlaunch.infra.cloud import catalog, spec as specs
from testkit.pins import project
pytestmark = pytest.mark.timeout(60)

WHEEL = cuda.MXNET_CU112
REFUSED = {"p5.4xlarge": "g5.xlarge", "p5.48xlarge": "p4d.24xlarge", "p5e.48xlarge": "p4d.24xlarge",
           "p5en.48xlarge": "p4d.24xlarge"}


# --- the rule --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("cc, kernel", [
    ((5, 0), "sm_50"), ((5, 2), "sm_50"), ((6, 1), "sm_60"), ((7, 0), "sm_70"), ((7, 5), "sm_70"),  # T4
    ((8, 0), "sm_80"), ((8, 6), "sm_86"), ((8, 7), "sm_86"), ((8, 9), "sm_86"),  # A100, A10G, Orin, L4/L40S
    ((3, 0), None), ((3, 7), None), ((9, 0), None), ((10, 0), None), ((12, 0), None)])  # K520, K80, H100, B200
def test_a_cubin_runs_only_on_its_major_with_an_equal_or_higher_minor(cc, kernel):
    verdict = cuda.runs(WHEEL, cc)
    assert verdict.runs == (kernel is not None) and verdict.kernel == kernel
    if kernel:
        assert f"runs the {kernel} kernels of mxnet-cu112 1.9.1" in verdict.reason
    else:
        assert verdict.reason == (f"compute capability {cc[0]}.{cc[1]} (sm_{cc[0]}{cc[1]}): mxnet-cu112 1.9.1 has "
                                  f"kernels for sm_50..sm_86 and no PTX")


def test_ptx_is_compiled_forward_by_the_driver_and_a_matching_cubin_wins():
    wheel = cuda.Wheel("w", "1", sass=((8, 0),), ptx=((8, 0),))
    assert cuda.runs(wheel, (9, 0)).kernel == "compute_80 (JIT)"  # no sm_9x cubin: the PTX is compiled forward
    assert cuda.runs(wheel, (8, 6)).kernel == "sm_80"  # a compatible cubin is used as is
    assert not cuda.runs(wheel, (7, 5)).runs  # PTX never runs backwards, cubins never across majors
    assert cuda.runs(cuda.Wheel("w", "1", sass=(), ptx=((7, 0),)), (8, 6)).kernel == "compute_70 (JIT)"
    assert wheel.kernels == "sm_80 and PTX for compute_80"


def test_capabilities_parse_as_nvidia_smi_prints_them():
    assert cuda.parse_capability("8.6") == (8, 6) and cuda.parse_capability(" 9.0\n") == (9, 0)
    for bad in ("86", "8.x", ""):
        with pytest.raises(ValueError):
            cuda.parse_capability(bad)


def test_fusion_is_off_only_beyond_what_the_wheels_nvrtc_compiles():
    assert cuda.environment(WHEEL, (8, 9)) == {"MXNET_USE_FUSION": "0"}
    assert cuda.environment(WHEEL, (8, 6)) == {} and cuda.environment(WHEEL, (7, 5)) == {}


def test_the_catalogs_wheel_is_the_one_the_gpu_extra_installs():
    assert f"{catalog.WHEEL.name}=={catalog.WHEEL.version}" in project()["optional-dependencies"]["gpu"]


# --- the catalog -------------------------------------------------------------------------------------------------

FAMILY_CC = {"g4dn": (7, 5), "g5": (8, 6), "g6": (8, 9), "g6e": (8, 9), "p4d": (8, 0), "p4de": (8, 0),
             "p5": (9, 0), "p5e": (9, 0), "p5en": (9, 0)}  # NVIDIA's CUDA GPU list: T4, A10G, L4, L40S, A100, H100/H200


def test_every_type_has_its_gpus_compute_capability_and_verdict():
    assert {t.family for t in catalog.CATALOG.values()} == set(FAMILY_CC)
    for t in catalog.CATALOG.values():
        assert t.gpu.capability == FAMILY_CC[t.family], t.name
        assert t.verdict.runs == (t.name not in REFUSED), t.name
    assert {r.gpu.capability for r in catalog.RETIRED.values()} == {(3, 0), (3, 7), (7, 0)}  # K520, K80, V100


def test_catalog_gpus_are_what_aws_says(moto_aws):
    """GPU model, count and memory of every type against DescribeInstanceTypes (moto ships AWS's own answers).
    AWS reports usable memory: A10G/L4/L40S lose ~7% to ECC and reserved memory; never more than nominal."""
    from aws_fixtures import plain_client
    names = sorted(catalog.CATALOG)
    found = {d["InstanceType"]: d for d in plain_client("ec2").describe_instance_types(InstanceTypes=names)[
        "InstanceTypes"]}
    assert set(found) == set(names)
    for name, t in catalog.CATALOG.items():
        (gpu,) = found[name]["GpuInfo"]["Gpus"]
        assert (gpu["Manufacturer"], gpu["Count"]) == ("NVIDIA", t.gpus), name
        assert t.gpu.model == f"NVIDIA {gpu['Name']}", name
        assert 0.93 * t.gpu.memory_gb * 1024 <= gpu["MemoryInfo"]["SizeInMiB"] <= t.gpu.memory_gb * 1024, name
        assert ("cluster" in found[name]["PlacementGroupInfo"]["SupportedStrategies"]) == t.placement_group, name


def test_role_env_turns_fusion_off_on_l4_and_l40s_only():
    for name, t in catalog.CATALOG.items():
        wanted = {"MXNET_USE_FUSION": "0"} if t.family in ("g6", "g6e") else {}
        assert catalog.role_env(name) == wanted or name in REFUSED, name
    assert catalog.role_env(" G6E.12XLARGE ") == {"MXNET_USE_FUSION": "0"}
    assert catalog.role_env("m5.large") == {}  # outside the catalog: nothing to add


@pytest.mark.parametrize("name, instead", sorted(REFUSED.items()))
def test_a_refused_type_names_why_and_the_nearest_type_that_works(name, instead):
    itype = catalog.lookup(name)
    alt = catalog.nearest(itype)
    assert alt.name == instead and alt.gpus == itype.gpus and alt.verdict.runs and not alt.env
    with pytest.raises(UsageError) as info:
        specs.build("c", name, 1, CIDR)
    message = info.value.format_message()
    assert "\n" not in message
    assert "compute capability 9.0 (sm_90): mxnet-cu112 1.9.1 has kernels for sm_50..sm_86 and no PTX" in message
    assert f"--instance-type {instead} ({itype.gpus} x " in message


def test_every_type_the_wheel_runs_builds_a_spec():
    for name in catalog.CATALOG:
        if name not in REFUSED:
            assert specs.build("c", name, 1, CIDR).instance_type == name


# --- the CLI -----------------------------------------------------------------------------------------------------

def _aws_calls(monkeypatch) -> list:
    import mxlaunch.infra.cloud.aws
    calls = []
    original = mxlaunch.infra.cloud.aws.Aws.call

    def call(self, service, op, **params):
        calls.append(f"{service}.{op}")
        return original(self, service, op, **params)
    monkeypatch.setattr(mxlaunch.infra.cloud.aws.Aws, "call", call)
    return calls


def _up(name, itype, *extra):
    return launch("cluster", "up", name, "--instance-type", itype, "--count", 2, "--ssh-cidr", CIDR, "--ami", AMI,
                  "--wait", "none", "--no-efs", "--yes", *extra)


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_up_refuses_before_any_aws_call_and_creates_nothing(moto_aws, aws_env, monkeypatch, name):
    calls = _aws_calls(monkeypatch)
    cluster = name.replace(".", "-")
    r = _up(cluster, name)
    assert r.code == Exit.USAGE, r.err
    (line,) = r.err.strip().splitlines()
    assert line.startswith(f"launch: error: instance type {name} ") and "sm_90" in line
    assert f"--instance-type {REFUSED[name]} " in line and "Traceback" not in r.err
    assert calls == [] and r.out == ""
    assert nothing_tagged(cluster) and not (aws_env / "mxlaunch-home" / "clusters" / cluster).exists()


def test_the_suggested_type_is_created_where_the_refused_one_was_not(moto_aws, aws_env, monkeypatch):
    """The same command with the suggestion works (this is what the refusal tests are measured against)."""
    calls = _aws_calls(monkeypatch)
    refused = _up("suggest", "p5.48xlarge")
    assert refused.code == Exit.USAGE and calls == []
    alt = refused.err.split("--instance-type ")[1].split()[0]
    r = _up("suggest", alt)
    assert r.code == 0, r.err
    assert "ec2.run_instances" in calls
    assert {i["InstanceType"] for i in tagged_everything("suggest")["instances"]} == {"p4d.24xlarge"}
    assert launch("cluster", "down", "suggest", "--yes").code == 0


def test_up_refuses_even_without_credentials(aws_env, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    r = _up("nocreds", "p5.48xlarge", "--dry-run")
    assert r.code == Exit.USAGE and "compute capability 9.0" in r.err, r.err


def test_types_prints_the_catalog_without_aws(aws_env, monkeypatch):
    import boto3
    import botocore.session

    def no_aws(*args, **kwargs):
        raise AssertionError("`launch cluster types` must not touch AWS")
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(var)
    monkeypatch.setattr(boto3, "Session", no_aws)
    monkeypatch.setattr(botocore.session, "Session", no_aws)
    r = launch("cluster", "types")
    assert r.code == 0, r.err
    rows = {line.split()[0]: line.split() for line in r.out.splitlines() if line.split()}
    for name, t in catalog.CATALOG.items():
        row = rows[name]
        assert row[1] == str(t.gpus) and f"{t.gpu.memory_gb} GB" in " ".join(row), row
        assert f"{t.gpu.capability[0]}.{t.gpu.capability[1]}" in row, row
        assert ("no" if name in REFUSED else "yes") in row, row
        assert ("MXNET_USE_FUSION=0" in row) == (t.family in ("g6", "g6e")), row
        assert (f"{t.price_per_hour:.3f}" if t.price_per_hour else "n/a") in row, row
    assert rows["g5.xlarge"][2:4] == ["NVIDIA", "A10G"] and "yes (sm_86)" in " ".join(rows["g6.xlarge"])
    assert f"as of {catalog.PRICES_AS_OF}" in r.out and "sm_50..sm_86 and no PTX" in r.out
    for name, retired in catalog.RETIRED.items():
        assert retired.instead in " ".join(rows[name]), rows[name]
