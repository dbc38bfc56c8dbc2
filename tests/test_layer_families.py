"""The layer families of issue 20 against PyTorch, one test per layer (more random draws in
tests/test_random_oracle.py): forward, every gradient, buffers, three optimiser steps, in
float32 and float64; and their construction errors."""
import numpy as np
import pytest

pytest.importorskip("torch", reason="PyTorch is the oracle; install it with pip install -e '.[test]'")

from dcnn.layers.pooling import GlobalAvgPool2D  # noqa: E402
from torch_compare import compare_layers, compare_training  # noqa: E402

DTYPES = [np.float32, np.float64]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("keepdims", [False, True])
def test_global_avg_pool(dtype, keepdims):
    compare_layers([GlobalAvgPool2D(keepdims=keepdims)], (3, 5, 4), dtype)
    assert GlobalAvgPool2D(keepdims=keepdims).output_shape((3, 5, 4)) == ((3, 1, 1) if keepdims else (3,))
    compare_training([GlobalAvgPool2D(keepdims=keepdims)], (3, 5, 4), dtype)


def test_global_avg_pool_keepdims_must_be_a_bool():
    with pytest.raises(ValueError, match="GlobalAvgPool2D: keepdims must be True or False"):
        GlobalAvgPool2D(keepdims="yes")


# --- activations -------------------------------------------------------------------------------
from dcnn.layers.activations import (ELU, GELU, HardSigmoid, HardSwish, LeakyReLU, ReLU6, Sigmoid,  # noqa: E402
                                     SiLU, Tanh)
from dcnn.layers.normalization import BatchNorm1D, GroupNorm, LayerNorm  # noqa: E402
from dcnn.layers.conv import Conv2D  # noqa: E402
from dcnn.layers.core import Dense, Flatten  # noqa: E402

ACTIVATIONS = {
    "leaky_relu": lambda: LeakyReLU(), "leaky_relu_0.2": lambda: LeakyReLU(0.2), "elu": lambda: ELU(),
    "elu_0.5": lambda: ELU(0.5), "relu6": lambda: ReLU6(), "sigmoid": lambda: Sigmoid(), "tanh": lambda: Tanh(),
    "silu": lambda: SiLU(), "gelu": lambda: GELU(), "gelu_tanh": lambda: GELU("tanh"),
    "hardsigmoid": lambda: HardSigmoid(), "hardswish": lambda: HardSwish()}


def activation_input(rng, shape=(3, 2, 5, 6)):
    """Wide values, the kinks themselves (0, +-3, 6) and extremes (exp overflows there)."""
    x = rng.standard_normal(shape) * 4
    x.flat[:9] = [0.0, -3.0, 3.0, 6.0, -0.0, 60.0, -60.0, 100.0, -100.0]
    return x


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activation(name, dtype, rng):
    # torch's float64 Hardsigmoid takes its slope 1/6 as a float32 literal: 3e-8 off.
    tol = dict(rtol=1e-7, atol=1e-9) if name == "hardsigmoid" and dtype == np.float64 else None
    compare_layers([ACTIVATIONS[name]()], (2, 5, 6), dtype, x=activation_input(rng), tol=tol)
    compare_layers([Flatten(), ACTIVATIONS[name]()], (2, 5, 6), dtype, x=activation_input(rng), tol=tol)
    compare_training([Conv2D(3, 3, padding=1), ACTIVATIONS[name]()], (2, 5, 6), dtype, tol=tol)


@pytest.mark.parametrize("make,message", [
    (lambda: LeakyReLU("x"), "LeakyReLU: negative_slope must be a finite number"),
    (lambda: ELU(float("nan")), "ELU: alpha must be a finite number"),
    (lambda: GELU("erf"), "GELU: approximate must be 'none' or 'tanh'")])
def test_activation_errors(make, message):
    with pytest.raises(ValueError, match=message):
        make()


# --- norms ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(3, 4, 5), (6,)])
def test_layer_norm(shape, dtype):
    layers = [LayerNorm()] if len(shape) == 3 else [Dense(6), LayerNorm()]
    model = compare_layers(layers, shape, dtype)
    compare_training(layers if len(shape) == 1 else [Conv2D(4, 3, padding=1), LayerNorm()], shape, dtype)
    assert model.layers[-1].params["weight"].shape == (shape if len(shape) == 3 else (6,))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("groups,channels", [(1, 4), (2, 4), (4, 4), (3, 6)])
def test_group_norm(groups, channels, dtype):
    compare_layers([GroupNorm(groups)], (channels, 3, 5), dtype)
    compare_training([Conv2D(channels, 3, padding=1), GroupNorm(groups)], (2, 5, 4), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_1d(dtype, training):
    compare_layers([Dense(5), BatchNorm1D()], (7,), dtype, batch=6, training=training)
    compare_training([Dense(5), BatchNorm1D()], (7,), dtype)


@pytest.mark.parametrize("make,shape,message", [
    (lambda: GroupNorm(0), None, "GroupNorm: num_groups must be a positive int"),
    (lambda: GroupNorm(3), (4, 5, 5), r"GroupNorm\(3\): 3 groups do not divide 4 channels"),
    (lambda: LayerNorm(eps=0), None, "LayerNorm: eps must be a positive number"),
    (lambda: BatchNorm1D(), (3, 4, 4), r"BatchNorm1D\(\) expects flat \(features,\) inputs")])
def test_norm_errors(make, shape, message):
    with pytest.raises(ValueError, match=message):
        make().output_shape(shape) if shape else make()


# --- convolutions ----------------------------------------------------------------------------------
from dcnn.layers.conv import DepthwiseConv2D  # noqa: E402
from dcnn.layers.conv_variants import Conv2DTranspose, SeparableConv2D  # noqa: E402

CONVS = {   # name: (layer maker, input shape)
    "plain": (lambda: Conv2D(4, 3, padding=1), (2, 7, 6)),
    "rect_stride_dilation_groups": (lambda: Conv2D(4, (3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2),
                                                   groups=2), (6, 9, 8)),
    "same_dilated_grouped": (lambda: Conv2D(6, 4, padding="same", dilation=2, groups=3, use_bias=False), (3, 7, 8)),
    "same_even": (lambda: Conv2D(3, (2, 4), padding="same"), (2, 5, 7)),
    "valid_dilated": (lambda: Conv2D(3, 3, padding="valid", dilation=3), (2, 9, 8)),
    "grouped_1x1": (lambda: Conv2D(6, 1, groups=3), (3, 4, 4)),
    "groups_equal_channels_times_2": (lambda: Conv2D(8, 3, 1, 1, groups=4), (4, 5, 5)),
    "depthwise": (lambda: DepthwiseConv2D(3, 2, 1), (4, 7, 8)),
    "depthwise_multiplier": (lambda: DepthwiseConv2D((3, 5), (1, 2), (2, 1), depth_multiplier=3, dilation=(2, 1)),
                             (2, 9, 8)),
    "depthwise_7x7_same": (lambda: DepthwiseConv2D(7, padding="same", use_bias=False), (3, 8, 9)),
    "separable": (lambda: SeparableConv2D(5, 3, padding=1, depth_multiplier=2), (3, 6, 6)),
    "separable_strided": (lambda: SeparableConv2D(4, 3, stride=2, use_bias=False), (2, 7, 8)),
    "transpose": (lambda: Conv2DTranspose(4, 3), (2, 5, 4)),
    "transpose_upsampling": (lambda: Conv2DTranspose(4, 3, stride=2, padding=1, output_padding=1), (2, 5, 4)),
    "transpose_everything": (lambda: Conv2DTranspose(6, (3, 4), stride=(2, 3), padding=(2, 1), output_padding=(1, 2),
                                                     groups=2, dilation=(2, 1)), (4, 5, 4)),
    "transpose_output_padding_below_dilation": (lambda: Conv2DTranspose(4, 2, stride=3, output_padding=2,
                                                                        dilation=3, use_bias=False), (2, 3, 3)),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(CONVS))
def test_convolution(name, dtype):
    make, shape = CONVS[name]
    compare_layers([make()], shape, dtype)
    compare_training([make()], shape, dtype)


def test_depthwise_and_separable_state_keys():
    from dcnn.layers.container import Sequential
    import backends
    model = Sequential([SeparableConv2D(5, 3, depth_multiplier=2), DepthwiseConv2D(3)])
    model.build((3, 9, 9), np.random.default_rng(0), backends.resolve("numpy"))
    shapes = {k: tuple(v.shape) for k, v in model.state().items()}
    assert shapes == {"0.depthwise.weight": (6, 1, 3, 3), "0.pointwise.weight": (5, 6, 1, 1),
                      "0.pointwise.bias": (5,), "1.weight": (5, 1, 3, 3), "1.bias": (5,)}


@pytest.mark.parametrize("make,shape,message", [
    (lambda: Conv2D(4, 3, groups=3), None, r"Conv2D: groups=3 must divide filters=4"),
    (lambda: Conv2D(4, 3, groups=2), (3, 5, 5), r"groups=2 must divide the 3 input channels"),
    (lambda: Conv2D(4, 3, dilation=0), None, r"Conv2D: dilation must be an int >= 1"),
    (lambda: Conv2D(4, 3, dilation=-1), None, r"Conv2D: dilation must be an int >= 1"),
    (lambda: Conv2D(4, (3, 0)), None, r"Conv2D: kernel_size must be an int >= 1 or a pair"),
    (lambda: Conv2D(4, 3, stride=(1, 2, 3)), None, r"Conv2D: stride must be an int >= 1 or a pair"),
    (lambda: Conv2D(4, 3, stride=2, padding="same"), None, r"Conv2D: padding='same' needs stride 1"),
    (lambda: Conv2D(4, 3, padding="full"), None, r"Conv2D: padding must be 'same', 'valid'"),
    (lambda: Conv2D(4, 3, padding=-1), None, r"Conv2D: padding must be an int >= 0"),
    (lambda: Conv2D(4, 5, dilation=2), (1, 8, 8), r"is smaller than the kernel's reach 9x9"),
    (lambda: DepthwiseConv2D(3, depth_multiplier=0), None, "DepthwiseConv2D: depth_multiplier must be a positive"),
    (lambda: SeparableConv2D(0, 3), None, "SeparableConv2D: filters must be a positive int"),
    (lambda: Conv2DTranspose(4, 3, stride=2, output_padding=2), None,
     r"Conv2DTranspose: output_padding=2 must be smaller than the stride \(2\) or the dilation \(1\)"),
    (lambda: Conv2DTranspose(4, 3, output_padding=1), None, r"output_padding=1 must be smaller than the stride"),
    (lambda: Conv2DTranspose(3, 3, groups=2), None, r"Conv2DTranspose: groups=2 must divide filters=3"),
    (lambda: Conv2DTranspose(4, 3, groups=2), (3, 4, 4), r"groups=2 must divide the 3 input channels"),
    (lambda: Conv2DTranspose(4, 3, padding=3), (2, 2, 2), r"gives an empty output"),
    (lambda: Conv2DTranspose(4, 3, dilation=-2), None, r"Conv2DTranspose: dilation must be an int >= 1"),
])
def test_convolution_errors(make, shape, message):
    with pytest.raises(ValueError, match=message):
        make().output_shape(shape) if shape else make()


def test_wrong_channel_count_names_the_layer(rng):
    import backends
    layer = DepthwiseConv2D(3)
    layer.build((3, 6, 6), np.random.default_rng(0), backends.resolve("numpy"))
    with pytest.raises(ValueError, match=r"DepthwiseConv2D\(3x3.*was built for 3 input channels; got 4"):
        layer.forward(rng.standard_normal((2, 4, 6, 6)).astype(np.float32))


# --- resampling, pooling, shape ---------------------------------------------------------------------
from dcnn.layers.core import Dropout2D  # noqa: E402
from dcnn.layers.pooling import AvgPool2D, GlobalMaxPool2D, MaxPool2D  # noqa: E402
from dcnn.layers.resampling import Cropping2D, UpSampling2D, ZeroPadding2D  # noqa: E402
from dcnn.layers.shape import Identity, Reshape  # noqa: E402


def untied(rng, shape):
    return rng.permutation(int(np.prod(shape))).reshape(shape) / 7.0 - 3.0


RESAMPLING = {
    "upsample_nearest": (lambda: UpSampling2D(), (2, 3, 4)),
    "upsample_nearest_rect": (lambda: UpSampling2D((3, 2)), (2, 3, 5)),
    "upsample_bilinear": (lambda: UpSampling2D(2, "bilinear"), (2, 4, 5)),
    "upsample_bilinear_rect": (lambda: UpSampling2D((3, 4), "bilinear"), (1, 3, 2)),
    "upsample_bilinear_1x1": (lambda: UpSampling2D(3, "bilinear"), (2, 1, 1)),
    "maxpool_padded": (lambda: MaxPool2D(3, 2, 1), (2, 7, 6)),
    "maxpool_padded_overlap": (lambda: MaxPool2D(2, 1, 1), (2, 4, 5)),
    "avgpool_padded": (lambda: AvgPool2D(3, 2, 1), (2, 7, 6)),
    "avgpool_padded_k2": (lambda: AvgPool2D(2, 2, 1), (2, 5, 4)),
    "global_max": (lambda: GlobalMaxPool2D(), (3, 4, 5)),
    "global_max_keepdims": (lambda: GlobalMaxPool2D(keepdims=True), (3, 4, 5)),
    "zero_padding": (lambda: ZeroPadding2D(), (2, 3, 4)),
    "zero_padding_keras": (lambda: ZeroPadding2D(((1, 2), (0, 3))), (2, 3, 4)),
    "cropping": (lambda: Cropping2D((1, 2)), (2, 5, 6)),
    "cropping_keras": (lambda: Cropping2D(((0, 2), (1, 0))), (2, 5, 6)),
    "reshape": (lambda: Reshape((4, -1)), (2, 3, 4)),
    "reshape_flat": (lambda: Reshape(24), (2, 3, 4)),
    "identity": (lambda: Identity(), (2, 3, 4)),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(RESAMPLING))
def test_resampling_and_shape(name, dtype, rng):
    make, shape = RESAMPLING[name]
    compare_layers([make()], shape, dtype, x=untied(rng, (3,) + shape))
    compare_training([Conv2D(shape[0], 1), make()], shape, dtype)


def test_max_pool_padding_is_never_the_maximum():
    x = -np.ones((1, 1, 4, 4)) * 50        # every value far below 0: the padding must not win
    compare_layers([MaxPool2D(3, 1, 1)], (1, 4, 4), np.float64, x=x - np.arange(16).reshape(1, 1, 4, 4))


@pytest.mark.parametrize("dtype", DTYPES)
def test_dropout2d_drops_whole_channels(dtype):
    import backends
    be = backends.resolve("numpy")
    layer = Dropout2D(0.5)
    layer.build((8, 3, 3), np.random.default_rng(0), be)
    x = np.ones((20, 8, 3, 3), dtype)
    y = layer.forward(x)
    assert y.dtype == dtype and set(np.unique(y)) <= {0.0, 2.0}
    per_map = y.reshape(20, 8, 9)
    assert (per_map.min(axis=2) == per_map.max(axis=2)).all()            # a map is kept or dropped whole
    assert 0.35 < (per_map[:, :, 0] == 0).mean() < 0.65
    dy = np.arange(20 * 8 * 9, dtype=dtype).reshape(20, 8, 3, 3)
    np.testing.assert_array_equal(layer.backward(dy), dy * (y / 1.0))    # dy through the same mask
    layer.train(False)
    np.testing.assert_array_equal(layer.forward(x), x)
    compare_layers([Dropout2D(0.3)], (3, 4, 4), dtype, training=False)   # eval: torch's identity too


def test_dropout2d_stream_is_seeded_and_resumable():
    import backends
    be = backends.resolve("numpy")
    masks = []
    for _ in range(2):
        layer = Dropout2D(0.5)
        layer.build((6, 2, 2), np.random.default_rng(3), be)
        masks.append(layer.forward(np.ones((4, 6, 2, 2), np.float32)))
    np.testing.assert_array_equal(*masks)


@pytest.mark.parametrize("make,shape,message", [
    (lambda: UpSampling2D(0), None, "UpSampling2D: size must be an int >= 1"),
    (lambda: UpSampling2D(2, "bicubic"), None, "UpSampling2D: interpolation must be 'nearest' or 'bilinear'"),
    (lambda: MaxPool2D(2, padding=2), None, r"MaxPool2D: padding must be an int from 0 to pool_size // 2 = 1"),
    (lambda: AvgPool2D(3, padding=-1), None, r"AvgPool2D: padding must be an int from 0"),
    (lambda: ZeroPadding2D(-1), None, "ZeroPadding2D: padding must be an int >= 0"),
    (lambda: ZeroPadding2D(((1, 2), (3,))), None, "ZeroPadding2D: padding must be"),
    (lambda: Cropping2D((2, 1)), (1, 4, 4), r"Cropping2D\(\(2, 2, 1, 1\)\): crops all of an input 4x4"),
    (lambda: Reshape((2, -1, -1)), None, "Reshape: target_shape must be positive ints, at most one of them -1"),
    (lambda: Reshape((0, 3)), None, "Reshape: target_shape must be positive ints"),
    (lambda: Reshape((5, -1)), (2, 3, 4), r"Reshape\(\(5, -1\)\): cannot reshape samples of shape \(2, 3, 4\)"),
    (lambda: Reshape((5, 5)), (2, 3, 4), r"cannot reshape samples of shape \(2, 3, 4\) \(24 values\) to \(5, 5\)"),
    (lambda: Dropout2D(1.0), None, r"rate must be in \[0, 1\)"),
])
def test_resampling_errors(make, shape, message):
    with pytest.raises(ValueError, match=message):
        make().output_shape(shape) if shape else make()


# --- the blocks of modern CNNs, built from these layers, against their torch twins ---------------------
from dcnn.layers.blocks import inverted_residual  # noqa: E402
from dcnn.layers.container import Residual  # noqa: E402


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("stride,cin,cout,expansion", [(1, 8, 8, 6), (2, 8, 12, 4), (1, 6, 10, 1)])
def test_mobilenet_v2_block(dtype, stride, cin, cout, expansion):
    """Expansion 1x1, BatchNorm, ReLU6, depthwise 3x3, BatchNorm, ReLU6, linear 1x1 projection, BatchNorm,
    with the identity skip when the shape stays (a Residual)."""
    layers = inverted_residual(cin, cout, stride, expansion)
    assert isinstance(layers[0], Residual) == (stride == 1 and cin == cout)
    compare_layers(layers, (cin, 9, 8), dtype)
    compare_training(inverted_residual(cin, cout, stride, expansion), (cin, 9, 8), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("norm", ["layer", "group"])
def test_convnext_block(dtype, norm):
    """ConvNeXt's block: 7x7 depthwise, a norm, 1x1 to 4C, GELU, 1x1 back to C, plus the input."""
    def block():
        return [Residual([DepthwiseConv2D(7, padding=3), LayerNorm() if norm == "layer" else GroupNorm(1),
                          Conv2D(24, 1), GELU(), Conv2D(6, 1)])]
    compare_layers(block(), (6, 9, 9), dtype)
    compare_training(block(), (6, 9, 9), dtype)


def test_every_new_layer_saves_and_loads_through_the_json_spec(tmp_path):
    """Constructor arguments are plain values (tuples come back as lists): a whole model of the new
    layers is written with its spec and built again with the same predictions."""
    import dcnn
    from dcnn.layers.core import Dropout2D
    layers = [Conv2D(6, (3, 2), stride=(1, 2), padding="same" if False else (1, 0), dilation=(2, 1), groups=2),
              DepthwiseConv2D(3, 1, 1, depth_multiplier=2), SeparableConv2D(6, 3, padding=1), GroupNorm(3), SiLU(),
              Conv2DTranspose(4, 3, stride=2, padding=1, output_padding=1), LayerNorm(), GELU("tanh"),
              UpSampling2D((2, 1), "bilinear"), MaxPool2D(3, 2, 1), AvgPool2D(3, 1, 1), ZeroPadding2D(((1, 0), (2, 1))),
              Cropping2D(((0, 1), (1, 0))), Dropout2D(0.2), Identity(), LeakyReLU(0.2), ELU(0.5), ReLU6(),
              HardSwish(), HardSigmoid(), Sigmoid(), Tanh(), Conv2D(4, 2, padding="same"), Reshape((4, -1, 2)),
              GlobalMaxPool2D(keepdims=True), Flatten(), Dense(5), BatchNorm1D(), Dense(3)]
    net = dcnn.DCNNetwork(layers, input_shape=(2, 8, 6), seed=3).build()
    path = net.save(tmp_path / "m.safetensors", classes=["a", "b", "c"])
    loaded = dcnn.load(path)
    assert [l.describe() for l in loaded.layers] == [l.describe() for l in net.layers]
    x = np.random.default_rng(0).random((4, 2, 8, 6), np.float32)
    np.testing.assert_allclose(loaded.predict(x), net.predict(x), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_mobilenet_preset_matches_its_torch_twin(shape):
    from dcnn.model import presets
    preset = presets.get_preset("mobilenet")
    assert preset.augment and preset.optimizer == "adamw"
    layers = preset.layers(shape, 10)
    dropout = [l for l in layers if type(l).__name__ == "Dropout"]
    dropout[0].rate = 0.0                                 # torch draws other masks
    compare_layers(layers, shape, np.float64, batch=4)
    net = preset.build(shape, 10)
    assert net.model.output_shape(shape) == (10,) and 60_000 < net.model.param_count() < 120_000
