"""Networks: the depths users name have that many weighted layers, and ResNeXt's ImageNet form works at 28-32 px."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from conftest import run_trainer


def weighted_layers(symbol) -> int:
    """Convolutions on the main path plus the classifier: how papers count a network's depth."""
    nodes = json.loads(symbol.tojson())["nodes"]
    return sum(1 for n in nodes if n["op"] in ("Convolution", "FullyConnected") and not n["name"].endswith("_sc"))


@pytest.mark.parametrize("network, depth, side", [
    ("resnet", 8, 28), ("resnet", 20, 32), ("resnet", 110, 32), ("resnet", 18, 64), ("resnet", 50, 224),
    ("resnext", 29, 32), ("resnext", 50, 32), ("resnext", 101, 28), ("resnext", 101, 224),
])
def test_depth_is_the_number_of_weighted_layers(network, depth, side):
    from mxlaunch.trainer.networks import get_symbol

    symbol = get_symbol(network, depth, 10, (3, side, side), num_group=2, bottleneck_width=4)
    assert weighted_layers(symbol) == depth
    _, outputs, _ = symbol.infer_shape(data=(2, 3, side, side))
    assert outputs == [(2, 10)]


@pytest.mark.timeout(240)
def test_a_resnext101_checkpoint_fine_tunes_on_cifar_size_images(digits_dir, tmp_path):
    """MXNet's example refuses ResNeXt-101 at <= 32 px; here an ImageNet-form checkpoint fine-tunes at 28 px.
    With --lr 0 the body it loaded comes back unchanged: a network re-initialised instead would not."""
    import mxnet as mx

    from mxlaunch.trainer.networks import get_symbol

    symbol = get_symbol("resnext", 101, 1000, (3, 224, 224))
    module = mx.mod.Module(symbol, context=mx.cpu())
    module.bind(data_shapes=[("data", (1, 3, 32, 32))], label_shapes=[("softmax_label", (1,))], for_training=False)
    module.init_params(mx.init.Xavier())
    arg_params, aux_params = module.get_params()
    mx.model.save_checkpoint(str(tmp_path / "resnext101"), 0, symbol, arg_params, aux_params)

    result = run_trainer("fine-tune", "--pretrained-model", tmp_path / "resnext101", "--load-epoch", "0000",
                         "--network", "resnext", "--num-layers", 101, "--num-classes", 10,
                         "--data-train", os.path.join(digits_dir, "digits_train.rec"), "--image-shape", "3,28,28",
                         "--batch-size", 4, "--num-examples", 8, "--num-epochs", 1, "--lr", 0, "--mom", 0, "--wd", 0,
                         "--model-prefix", tmp_path / "tuned", timeout=200)
    assert result.returncode == 0, result.stderr[-2000:]
    _, tuned, _ = mx.model.load_checkpoint(str(tmp_path / "tuned"), 1)
    assert tuned["fc_finetune_weight"].shape == (10, 2048)
    body = sorted(set(tuned) & set(arg_params))
    assert "stage4_unit3_conv3_weight" in body and len(body) == len(arg_params) - 2  # all but the old fc1
    assert [n for n in body if not np.array_equal(tuned[n].asnumpy(), arg_params[n].asnumpy())] == []
