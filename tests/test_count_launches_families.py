"""scripts/count_launches.py on a MobileNet step and on the other new layer families: every hot
method a step calls has a CuPy launch count, and the fused path is far below the generic one."""
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import count_launches  # noqa: E402


def test_mobilenet_step_estimate():
    import backends
    from dcnn.layers.conv import DepthwiseConv2D
    from dcnn.layers.normalization import BatchNorm2D
    net, _ = count_launches.build_network("mobilenet", backends.resolve("numpy"))
    kinds = [type(layer) for _, layer in net.model.named_modules()]
    depthwise, norms = kinds.count(DepthwiseConv2D), kinds.count(BatchNorm2D)
    result = count_launches.estimate("mobilenet")
    methods = result["methods"]
    assert methods["depthwise_conv2d"]["calls"] == depthwise == methods["depthwise_conv2d_backward"]["calls"]
    assert methods["depthwise_conv2d"]["cupy_launches"] == depthwise
    assert methods["batch_norm"]["calls"] == norms and "relu" not in methods      # every ReLU6 fused into its norm
    assert result["cupy_launches"] == result["outside_launches"] + sum(m["cupy_launches"] for m in methods.values())
    assert result["cupy_launches"] <= 200 and result["generic_launches"] > 4 * result["cupy_launches"]
    assert result["reads"] == 0 and result["uploads"] == 0


def test_torch_twin_of_mobilenet_computes_what_dcnn_computes(rng):
    torch = pytest.importorskip("torch")
    import backends
    net, preset = count_launches.build_network("mobilenet", backends.resolve("numpy"))
    model, opt = count_launches.torch_twin(net, preset, torch, device="cpu")
    x = rng.random((4, 1, 28, 28), dtype="float32")
    model.eval()
    theirs = torch.softmax(model(torch.from_numpy(x)), 1).detach().numpy()
    assert np.abs(net.predict(x) - theirs).max() < 1e-5
    assert isinstance(opt, torch.optim.AdamW)


def test_every_family_method_has_a_launch_count():
    from backends.cupy_backend import LAUNCHES
    from backends.ops.activation import ActivationOps
    from backends.ops.conv_general import GeneralConvOps
    from backends.ops.norm import NormOps
    from backends.ops.resample import ResampleOps
    family = {"activation", "activation_backward", "dropout2d", "layer_norm", "layer_norm_backward", "group_norm",
              "group_norm_backward", "conv2d_grouped", "conv2d_grouped_backward", "depthwise_conv2d",
              "depthwise_conv2d_backward", "conv_transpose2d", "conv_transpose2d_backward", "upsample2d",
              "upsample2d_backward", "pad2d", "global_max_pool2d", "global_max_pool2d_backward"}
    defined = set().union(*(vars(cls) for cls in (ActivationOps, GeneralConvOps, NormOps, ResampleOps)))
    assert family <= defined and family <= set(LAUNCHES)
