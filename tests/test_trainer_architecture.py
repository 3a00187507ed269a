"""--network, --num-layers, --num-group, --bottleneck-width where they build nothing: a run from a checkpoint trains
the checkpoint's network, a resnet has no groups. MXNet's fine-tune.py took them silently; the trainer takes them
too (a resumed command still carries them) and says once when they describe another network."""
from __future__ import annotations

import os

import pytest

from conftest import run_trainer, run_trainers

SHAPE = (3, 28, 28)


def config(image_shape=SHAPE, **given):
    """A FitConfig as the command line makes it: `given` typed by the user, the rest defaults."""
    from mxlaunch.trainer.config import FitConfig

    explicit = frozenset("--" + name.replace("_", "-") for name in given)
    return FitConfig(data_train="x.rec", image_shape=image_shape, explicit=explicit, **given)


def checkpoint_symbol(network, depth, fine_tuned=False, shape=SHAPE, **options):
    """The symbol a checkpoint of this network has, trained on images of `shape` (`fine_tuned`: with the
    classifier fine-tune puts on it)."""
    from mxlaunch.trainer import model, networks

    symbol = networks.get_symbol(network, depth, 10, shape, **options)
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


@pytest.mark.parametrize("fine_tuned", [False, True])
@pytest.mark.parametrize("depth, trained_on, run_on", [
    (50, (3, 224, 224), SHAPE),  # an ImageNet resnet-50 fine-tuned on 28 px, where 50 = 6n+2 builds the CIFAR form
    (50, SHAPE, SHAPE),  # the CIFAR form those options build at 28 px
    (20, (3, 32, 32), (3, 64, 64)),  # a CIFAR-form resnet-20 fine-tuned on larger images, where 20 has no form
])
def test_options_naming_a_form_of_the_checkpoints_depth_other_than_this_image_size_builds_say_nothing(
        depth, trained_on, run_on, fine_tuned):
    from mxlaunch.trainer.architecture import checkpoint_ignores

    symbol = checkpoint_symbol("resnet", depth, fine_tuned, shape=trained_on)
    assert checkpoint_ignores(config(run_on, network="resnet", num_layers=depth), symbol, "m-symbol.json") is None


def test_another_depth_than_an_imagenet_checkpoints_is_still_named():
    from mxlaunch.trainer.architecture import checkpoint_ignores

    symbol = checkpoint_symbol("resnet", 50, shape=(3, 224, 224))
    line = checkpoint_ignores(config(network="resnet", num_layers=152), symbol, "m-symbol.json")
    assert line == ("--network resnet --num-layers 152 not used: the network is the one in m-symbol.json; "
                    "the options describe another one, resnet-152")


def test_a_checkpoint_without_flatten0_says_nothing_for_options_that_build_a_network():
    import mxnet as mx

    from mxlaunch.trainer.architecture import checkpoint_ignores

    foreign = mx.sym.SoftmaxOutput(mx.sym.FullyConnected(mx.sym.Variable("data"), num_hidden=10, name="fc"),
                                   name="softmax")  # no flatten0: nothing to compare the options' network with
    assert checkpoint_ignores(config(network="resnext", num_layers=11), foreign, "m-symbol.json") is None
    line = checkpoint_ignores(config(network="vgg"), foreign, "m-symbol.json")  # builds nothing: still certain
    assert line is not None and "the options describe none (unknown --network 'vgg'" in line


def test_groups_given_to_a_resnet_are_named_as_not_used():
    from mxlaunch.trainer.architecture import resnet_ignores

    assert resnet_ignores(config(num_group=4, bottleneck_width=2)) == (
        "--num-group 4 --bottleneck-width 2 not used: only --network resnext has groups (this is a resnet)")
    assert resnet_ignores(config(network="resnext", num_group=4)) is None
    assert resnet_ignores(config(num_layers=8)) is None


@pytest.mark.timeout(120)
def test_fine_tune_says_once_that_the_network_is_the_pretrained_models(digits_dir, tmp_path):
    data = ["--data-train", os.path.join(digits_dir, "digits_train.rec"), "--num-examples", 32, "--batch-size", 32,
            "--image-shape", "3,28,28"]
    prefix = tmp_path / "resnet8"
    result = run_trainer("fit", "--num-layers", 8, "--num-epochs", 1, "--model-prefix", prefix, *data)
    assert result.returncode == 0, result.stderr[-2000:]

    other, same = run_trainers(
        ["fine-tune", "--pretrained-model", prefix, "--load-epoch", 1, "--num-classes", 10, "--num-epochs", 1, *data,
         "--network", "resnext", "--num-layers", 101],
        # the command that made the checkpoint, resumed: its options are the checkpoint's network
        ["fit", "--num-layers", 8, "--num-epochs", 2, "--model-prefix", prefix, "--load-epoch", 1, *data])
    assert other.returncode == 0, other.stderr[-2000:]
    assert other.stderr.count("not used") == 1, other.stderr
    assert (f"--network resnext --num-layers 101 not used: the network is the one in {prefix}-symbol.json; "
            f"the options describe another one, resnext-101") in other.stderr
    assert same.returncode == 0 and "not used" not in same.stderr, same.stderr[-2000:]
