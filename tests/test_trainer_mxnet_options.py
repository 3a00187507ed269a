"""`trainer fit` and `trainer fine-tune` take every option of MXNet 1.9's train_cifar10.py and fine-tune.py (over
common/fit.py and common/data.py) under its name, with MXNet's default unless docs/trainer.md's table of
deliberate differences lists it; what cannot train as asked is refused in one line (exit 2).

MXNet's values: tests/data/trainer_mxnet19_options.json, generated from apache/mxnet branch v1.9.x with the scripts'
own argparse setup; each value names the file and line it comes from."""
from __future__ import annotations

import json
import os
import re
import subprocess

import pytest

from conftest import run_trainers
from test_trainer_errors import assert_one_line_error

HERE = os.path.dirname(os.path.abspath(__file__))
REFERENCE = json.load(open(os.path.join(HERE, "data", "trainer_mxnet19_options.json")))
DOCS = os.path.join(HERE, os.pardir, "docs", "trainer.md")
COMMANDS = {"fit": "train_cifar10.py", "fine-tune": "fine-tune.py"}


def trainer_params(command: str) -> dict:
    from mxlaunch.trainer.cli import cli

    return {name: param for param in cli.commands[command].params for name in param.opts}


def mxnet_options(command: str):
    return [(name, entry, entry[command]) for name, entry in sorted(REFERENCE["options"].items()) if command in entry
            and entry[command]["source"] is not None]


def same(trainer_default, mxnet_default) -> bool:
    """argparse keeps a default as written (`'3,28,28'`, `0` for a float option); click does too, or converts."""
    if trainer_default is None or mxnet_default is None:
        return trainer_default is None and mxnet_default is None
    if isinstance(mxnet_default, (int, float)) and not isinstance(mxnet_default, bool):
        return isinstance(trainer_default, (int, float)) and float(trainer_default) == float(mxnet_default)
    return str(trainer_default) == str(mxnet_default)


def test_the_reference_is_mxnets_65_options_with_a_line_for_every_value():
    assert len(REFERENCE["options"]) == 65
    for name, entry in REFERENCE["options"].items():
        assert re.fullmatch(r"(common/fit|common/data|fine-tune)\.py:\d+", entry["defined"]), (name, entry)
        for command, script in COMMANDS.items():
            source = entry.get(command, {}).get("source")
            if source:
                assert re.fullmatch(rf"(common/fit\.py|common/data\.py|{re.escape(script)}):\d+", source), (name, entry)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_mxnet_option_exists_under_its_name(command):
    params = trainer_params(command)
    missing = [name for name, _, _ in mxnet_options(command) if name not in params]
    assert missing == []


@pytest.mark.parametrize("command", COMMANDS)
def test_defaults_are_mxnets_unless_the_table_of_differences_says_why(command):
    from mxlaunch.trainer.options import DIFFERENCES

    params = trainer_params(command)
    differ = {}
    for name, entry, mxnet in mxnet_options(command):
        param = params[name]
        trainer_default = None if param.required else param.default
        if not same(trainer_default, mxnet["default"]):
            differ[name] = (mxnet["default"], mxnet["source"], trainer_default)
    undocumented = {name: v for name, v in differ.items() if (command, name) not in DIFFERENCES}
    assert undocumented == {}
    # every listed difference is one (no stale entry), except where MXNet's default is "none, required"
    for (listed_command, name), (mxnet_text, _, _) in DIFFERENCES.items():
        if listed_command == command and not mxnet_text.startswith("none"):
            assert name in differ, (command, name)


def test_the_table_of_differences_is_in_the_docs():
    from mxlaunch.trainer.options import DIFFERENCES

    text = open(DOCS).read()
    rows = [line for line in text.splitlines() if line.startswith("|")]
    for (command, name), (_, _, why) in DIFFERENCES.items():
        assert any(f"`{name}`" in row and command in row and why[:40] in row for row in rows), (command, name)


@pytest.mark.parametrize("command, values", [
    ("fit", {"--lr": 0.05, "--num-epochs": 300, "--lr-step-epochs": "200,250", "--num-layers": 110,
             "--pad-size": 4, "--random-crop": 0, "--random-mirror": 0, "--mom": 0.9, "--wd": 0.0001,
             "--image-shape": "3,28,28", "--fill-value": 127, "--rgb-mean": "123.68,116.779,103.939"}),
    ("fine-tune", {"--lr": 0.01, "--num-epochs": 30, "--lr-step-epochs": "20", "--mom": 0, "--wd": 0,
                   "--pad-size": 0, "--random-crop": 0, "--random-mirror": 0, "--image-shape": "3,224,224",
                   "--layer-before-fullc": "flatten0"}),
])
def test_the_recipe_defaults_the_issue_names(command, values):
    """Spelled out: what the post's fine-tune command relies on without naming it."""
    params = trainer_params(command)
    for name, value in values.items():
        assert same(params[name].default, value), name
        assert same(REFERENCE["options"][name][command]["default"], value), name


def test_options_are_taken_by_a_unique_prefix_as_argparse_does():
    from mxlaunch.trainer.contract import describe

    command = describe(["fit", "--data-train", "x.rec", "--num-epoch", "7", "--lr-step", "3", "--model-pre=m"])
    assert command.num_epochs == 7 and command.model_prefix == "m"


def test_the_contract_names_every_file_the_roles_write_into_the_run_directory():
    """What `launch train` fetches from the hosts in SSH mode: rank 0's metrics and each role's profile."""
    from mxlaunch.trainer.contract import describe

    command = describe(["fit", "--benchmark", "1", "--kv-store", "dist_sync", "--profile-worker-suffix", "w.json",
                        "--profile-server-suffix", "s.json"])
    assert command.run_files(2, 2) == ("metrics.jsonl", "rank0_w.json", "rank1_w.json", "rank0_s.json",
                                       "rank1_s.json")
    assert command.run_files(1, 1) == ("metrics.jsonl", "w.json", "rank0_s.json")
    assert describe(["fit", "--benchmark", "1"]).run_files(3, 1) == ("metrics.jsonl",)
    assert describe(["data", "digits"]).run_files(1, 1) == ()


REFUSED = [
    (["--use-imagenet-data-augmentation", 1], ["never read"]),
    (["--dtype", "bfloat16"], ["unknown --dtype 'bfloat16'", "float32, float16"]),
    (["--dtype", "float16"], ["--dtype float16 needs --gpus", "FP16 gemm on cpu not implemented"]),
    (["--initializer", "he"], ["unknown --initializer 'he'", "msra"]),
    (["--gc-type", "1bit"], ["unknown --gc-type '1bit'", "2bit"]),
    (["--gc-type", "2bit"], ["--gc-type 2bit", "dist_*", "not local"]),
    (["--profile-server-suffix", "s.json"], ["--profile-server-suffix", "dist_*"]),
    (["--profile-worker-suffix", "a/b.json"], ["give a file name"]),
    (["--kv-store", "dist_sync", "--profile-worker-suffix", "p.json", "--profile-server-suffix", "p.json"],
     ["both 'p.json'", "rank0_p.json"]),
    (["--kv-store", "dist_sync", "--profile-worker-suffix", "rank0_p.json", "--profile-server-suffix", "p.json"],
     ["--profile-worker-suffix rank0_p.json: a server writes that file"]),
    (["--profile-worker-suffix", "metrics.jsonl"], ["rank 0 writes its metrics there"]),
    (["--warmup-strategy", "cosine"], ["unknown --warmup-strategy 'cosine'", "power2"]),
    (["--loss", "ce,hinge"], ["'hinge' is not a loss", "ce", "nll"]),
    (["--top-k", 1], ["--top-k 1 is the accuracy"]),
    (["--top-k", 11], ["--top-k 11 is more than the 10 classes"]),
    (["--lr-factor", 1.5], ["--lr-factor 1.5 with --lr-step-epochs", "below 1"]),
    (["--lr-step-epochs", "powx"], ["powN"]),
    (["--rgb-std", "1,0,1"], ["--rgb-std", "non-zero"]),
    (["--l", 3], ["ambiguous option --l", "--lr", "--loss"]),
    (["--network", "resnext", "--num-layers", 50, "--image-shape", "3,64,64", "--num-group", 7],
     ["--num-group 7", "resnext-50", "do not divide"]),
]


@pytest.mark.parametrize("options, fragments", REFUSED, ids=[" ".join(map(str, o)) for o, _ in REFUSED])
def test_what_cannot_train_as_asked_is_refused_in_one_line(options, fragments, capsys, monkeypatch):
    """Refused before MXNet is imported: run in this process (`trainer` is its main()), exit status and stderr."""
    from mxlaunch.trainer.cli import main

    monkeypatch.delenv("DMLC_ROLE", raising=False)
    with pytest.raises(SystemExit) as exit_:
        main(["fit", "--num-layers", "8", "--data-train", "x.rec", *map(str, options)])
    result = subprocess.CompletedProcess([], exit_.value.code, "", capsys.readouterr().err)
    assert_one_line_error(result, *fragments)


def test_model_zoo_names_and_missing_layers_are_refused_for_fine_tune(digits_model, digits_dir, tmp_path):
    common = ["--load-epoch", 0, "--num-classes", 10, "--image-shape", "3,28,28", "--num-epochs", 1,
              "--data-train", os.path.join(digits_dir, "digits_train.rec")]
    zoo, layer = run_trainers(
        ["fine-tune", "--pretrained-model", "imagenet1k-resnext-101", *common],
        ["fine-tune", "--pretrained-model", digits_model.prefix, *common[2:], "--load-epoch", 1,
         "--layer-before-fullc", "pool9"])
    assert_one_line_error(zoo, "imagenet1k-resnext-101 is a name of MXNet's model zoo", "data.mxnet.io")
    assert_one_line_error(layer, "--layer-before-fullc pool9", "no layer pool9", "flatten0")
