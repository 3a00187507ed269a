"""--network, --num-layers, --num-group, --bottleneck-width where they build nothing: a run from a checkpoint trains
the checkpoint's network, a resnet has no groups. MXNet's fine-tune.py took them silently; the trainer takes them
too (a resumed command still carries them) and says once when they describe another network."""
from __future__ import annotations

import os

import pytest

from conftest import run_trainer, run_trainers

SHAPE = (3, 28, 28)


def config(**given):
    """A FitConfig as the command line makes it: `given` typed by the user, the rest defaults."""
    from mxlaunch.trainer.config import FitConfig

    explicit = frozenset("--" + name.replace("_", "-") for name in given)
    return FitConfig(data_train="x.rec", image_shape=SHAPE, explicit=explicit, **given)


def checkpoint_symbol(network, depth, fine_tuned=False, **options):
    """The symbol a checkpoint of this network has (`fine_tuned`: with the classifier fine-tune puts on it)."""
    from mxlaunch.trainer import model, networks

    symbol = networks.get_symbol(network, depth, 10, SHAPE, **options)
    if fine_tuned:
        symbol = model.replace_classifier(model.Model(symbol, {}, {}), 12).symbol
    return symbol


@pytest.mark.parametrize("given", [{}, {"network": "resnet", "num_layers": 8},
                                   {"network": "resnet", "num_layers": 8, "num_classes": 12}])
@pytest.mark.parametrize("fine_tuned", [False, True])
def test_options_that_build_the_checkpoints_network_say_nothing(given, fine_tuned):
    from mxlaunch.trainer.architecture import checkpoint_ignores

    assert checkpoint_ignores(config(**given), checkpoint_symbol("resnet", 8, fine_tuned), "m-symbol.json") is None
    resnext = {"network": "resnext", "num_layers": 11, "num_group": 2, "bottleneck_width": 4}
    symbol = checkpoint_symbol("resnext", 11, fine_tuned, num_group=2, bottleneck_width=4)
    assert checkpoint_ignores(config(**resnext), symbol, "m-symbol.json") is None


@pytest.mark.parametrize("given, described", [
    ({"network": "resnext", "num_layers": 101}, "another one, resnext-101"),
    ({"num_layers": 20}, "another one, resnet-20"),
    # the same channels (4 x 2 = 2 x 4), other groups: another network
    ({"network": "resnext", "num_layers": 11, "num_group": 4, "bottleneck_width": 2}, "another one, resnext-11"),
    ({"num_layers": 9}, "none (--network resnet has no 9-layer form at 28 px"),
    ({"network": "vgg"}, "none (unknown --network 'vgg'"),
])
def test_options_that_describe_another_network_are_named_as_not_used(given, described):
    from mxlaunch.trainer.architecture import checkpoint_ignores

    symbol = checkpoint_symbol("resnext", 11, num_group=2, bottleneck_width=4)
    line = checkpoint_ignores(config(**given), symbol, "m-symbol.json")
    assert line is not None and line.startswith(" ".join(f"--{k.replace('_', '-')} {v}" for k, v in given.items()))
    assert f"not used: the network is the one in m-symbol.json; the options describe {described}" in line


def test_groups_given_to_a_resnet_are_named_as_not_used():
    from mxlaunch.trainer.architecture import resnet_ignores

    assert resnet_ignores(config(num_group=4, bottleneck_width=2)) == (
        "--num-group 4 --bottleneck-width 2 not used: only --network resnext has groups (this is a resnet)")
    assert resnet_ignores(config(network="resnext", num_group=4)) is None
    assert resnet_ignores(config(num_layers=8)) is None


@pytest.mark.timeout(120)
def test_fine_tune_says_once_that_the_network_is_the_pretrained_models(digits_dir, tmp_path):
    data = ["--data-train", os.path.join(digits_dir, "digits_train.rec"), "--num-examples", 32, "--batch-size", 32]
    prefix = tmp_path / "resnet8"
    result = run_trainer("fit", "--num-layers", 8, "--num-epochs", 1, "--model-prefix", prefix, *data)
    assert result.returncode == 0, result.stderr[-2000:]

    other, same = run_trainers(
        ["fine-tune", "--pretrained-model", prefix, "--load-epoch", 1, "--num-epochs", 1, *data,
         "--network", "resnext", "--num-layers", 101],
        # the command that made the checkpoint, resumed: its options are the checkpoint's network
        ["fit", "--num-layers", 8, "--num-epochs", 2, "--model-prefix", prefix, "--load-epoch", 1, *data])
    assert other.returncode == 0, other.stderr[-2000:]
    assert other.stderr.count("not used") == 1, other.stderr
    assert (f"--network resnext --num-layers 101 not used: the network is the one in {prefix}-symbol.json; "
            f"the options describe another one, resnext-101") in other.stderr
    assert same.returncode == 0 and "not used" not in same.stderr, same.stderr[-2000:]
