"""The functional API: Input, layers called on tensors, merges, shared layers, and every feature of
DCNNetwork on a graph model."""
import json

import numpy as np
import pytest

import backends
import dcnn
from dcnn import (Add, Average, BatchNorm2D, Concatenate, Conv2D, DCNNetwork, Dense, Dropout, Flatten,
                  GlobalAvgPool2D, Input, MaxPool2D, Multiply, ReLU, Residual, Sequential, Softmax, Subtract)
from dcnn.layers.graph import Graph
from dcnn.model import spec
from dcnn.testing import GradientCheckError, check_layer


def untied(rng, shape, gap=0.01):
    values = (rng.permutation(int(np.prod(shape))) - np.prod(shape) / 2.3) * gap
    return values.reshape(shape)


def issue_graph():
    """The issue's example (keepdims pooling written as a Dense gate on the pooled vector)."""
    x = Input((3, 12, 12))
    a = ReLU()(BatchNorm2D()(Conv2D(8, 3, padding=1, name="stem")(x)))
    b = Conv2D(8, 1, name="branch")(a)
    c = Concatenate(name="cat")([a, b])
    y = Dense(10, name="head")(GlobalAvgPool2D()(Add()([Multiply()([c, c]), c])))
    return x, y


def data(n=32, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, 3, 12, 12), dtype=np.float32), rng.integers(0, 10, n)


# --- defining a graph -------------------------------------------------------------------------------

def test_the_issue_example_trains_evaluates_and_predicts():
    x, y = issue_graph()
    net = DCNNetwork(inputs=x, outputs=y, seed=0)
    net.compile(optimizer="adam", lr=1e-3)
    xs, ys = data()
    seen = []

    class Epochs(dcnn.Callback):
        def on_epoch_end(self, epoch, logs):
            seen.append(logs["loss"])

    history = net.fit(xs, ys, epochs=3, batch_size=8, verbose=0, callbacks=[Epochs()], validation_split=0.25)
    assert len(seen) == 3 and history.history["loss"][-1] < history.history["loss"][0]
    assert set(net.evaluate(xs, ys)) == {"loss", "accuracy"}
    assert net.predict(xs[:3]).shape == (3, 10)
    loss, hits = net.train_on_batch(net.backend.from_numpy(xs[:4]), net.backend.from_numpy(ys[:4]))
    assert np.isfinite(float(loss)) and 0 <= int(hits) <= 4


def test_symbolic_tensors_carry_shapes_and_misfits_fail_where_made():
    x = Input((3, 8, 8))
    h = Conv2D(4, 3)(x)
    assert h.shape == (4, 6, 6)
    with pytest.raises(ValueError, match=r"add cannot take input \[\(N, 4, 6, 6\), \(N, 3, 8, 8\)\].*broadcast"):
        Add(name="add")([h, x])
    with pytest.raises(ValueError, match=r"cat.*\(N, 4, 6, 6\), \(N, 3, 8, 8\).*differ off the joined axis"):
        Concatenate(name="cat")([h, x])
    with pytest.raises(ValueError, match="Dense.*flat"):
        Dense(3)(h)
    with pytest.raises(TypeError, match="takes a list of tensors"):
        Add()(h)
    with pytest.raises(ValueError, match="batch axis"):
        Concatenate(axis=0)


def test_default_names_are_unique_and_state_keys_use_them():
    x = Input((1, 6, 6))
    h = Conv2D(2, 3)(Conv2D(2, 3, name="first")(x))
    h = Conv2D(2, 1)(h)
    net = DCNNetwork(inputs=x, outputs=Dense(3)(Flatten()(h))).build()
    assert [name for name, _ in net.model.children()] == ["first", "conv2d", "conv2d_1", "flatten", "dense"]
    assert list(net.state_dict()) == ["first.weight", "first.bias", "conv2d.weight", "conv2d.bias",
                                      "conv2d_1.weight", "conv2d_1.bias", "dense.weight", "dense.bias"]
    x = Input((4,))
    with pytest.raises(ValueError, match="unique.*'twin'"):
        Graph(x, Add()([Dense(4, name="twin")(x), Dense(4, name="twin")(x)]))
    with pytest.raises(ValueError, match="no '.'"):
        Dense(3, name="a.b")


def test_the_list_form_keeps_its_keys():
    net = DCNNetwork([Conv2D(2, 3), Flatten(), Dense(3)], input_shape=(1, 5, 5)).build()
    assert list(net.state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias"]


def test_a_graph_that_reads_an_input_it_was_not_given_is_refused():
    x, other = Input((4,)), Input((4,))
    with pytest.raises(ValueError, match="not among the graph's inputs"):
        DCNNetwork(inputs=x, outputs=Add()([Dense(4)(x), other]))


# --- gradients ----------------------------------------------------------------------------------------

def dag():
    """Fan-out, concat of three branches, a broadcast multiply, a shared layer used twice, a nested
    Residual and Sequential, Subtract and Average."""
    x = Input((2, 6, 6))
    stem = Conv2D(3, 3, padding=1)(x)
    shared = Conv2D(3, 1, name="shared")
    a = shared(stem)
    b = shared(ReLU()(a))                                   # the same weights, a second call
    c = Residual([Conv2D(3, 3, padding=1, use_bias=False), BatchNorm2D()])(stem)   # (a bias before BN gets no gradient)
    cat = Concatenate()([a, b, c])                          # 9 channels
    gate = Conv2D(9, 6)(cat)                                # (N, 9, 1, 1): broadcast over H, W
    s = Multiply()([cat, gate])
    d = Sequential([Conv2D(9, 1), ReLU()])(s)
    e = Average()([Subtract()([s, d]), cat])
    return x, Dense(4)(Flatten()(MaxPool2D(2)(e)))


def test_a_dag_with_every_merge_and_a_shared_layer_passes_the_gradient_check(backend, rng):
    x, y = dag()
    check_layer(Graph(x, y), untied(rng, (3, 2, 6, 6)), backend=backend)


@pytest.mark.parametrize("merge", [Add, Subtract, Multiply, Average])
def test_broadcasting_merges_sum_the_gradient_over_broadcast_axes(backend, rng, merge):
    check_layer(merge(), [rng.standard_normal((2, 3, 4, 5)), rng.standard_normal((2, 3, 1, 5))], backend=backend)
    check_layer(merge(), [rng.standard_normal((2, 1, 4, 1)), rng.standard_normal((2, 3, 4, 5))], backend=backend)


@pytest.mark.parametrize("axis", [1, 2, -1])
def test_concatenate_on_any_axis_but_the_batch(backend, rng, axis):
    shapes = {1: [(2, 3, 4, 5), (2, 1, 4, 5)], 2: [(2, 3, 4, 5), (2, 3, 2, 5)], -1: [(2, 3, 4, 5), (2, 3, 4, 1)]}
    check_layer(Concatenate(axis=axis), [rng.standard_normal(s) for s in shapes[axis]], backend=backend)


def test_the_gradient_check_finds_a_wrong_backprop(rng):
    class Doubling(dcnn.Layer):
        def apply(self, x):
            return 2 * x, ()

        def backprop(self, dy, saved):
            return 3 * dy                       # wrong on purpose

    with pytest.raises(GradientCheckError, match="input 0"):
        check_layer(Doubling(), rng.standard_normal((2, 3)), backend="numpy")


def test_a_shared_layers_gradient_is_the_sum_over_its_calls():
    """One Dense called twice equals two Dense layers with the same weights, their gradients added."""
    x = Input((5,))
    dense = Dense(5, name="d")
    shared = DCNNetwork(inputs=x, outputs=Dense(3, name="out")(dense(ReLU()(dense(x)))), seed=1).build()
    x2 = Input((5,))
    one, two = Dense(5, name="d1"), Dense(5, name="d2")
    apart = DCNNetwork(inputs=x2, outputs=Dense(3, name="out")(two(ReLU()(one(x2)))), seed=1).build()
    w = shared.state_dict()
    apart.load_state_dict({"d1.weight": w["d.weight"], "d1.bias": w["d.bias"], "d2.weight": w["d.weight"],
                           "d2.bias": w["d.bias"], "out.weight": w["out.weight"], "out.bias": w["out.bias"]})
    rng = np.random.default_rng(3)
    xs, ys = rng.random((4, 5), dtype=np.float32), np.array([0, 1, 2, 0])
    grads = []
    for net in (shared, apart):
        net.compile("sgd", lr=0.1)
        net._forward_backward(net.backend.from_numpy(xs), net.backend.from_numpy(ys))
        grads.append({f"{name}.{p}": net.backend.to_numpy(g) for name, layer in net.model.children()
                      for p, g in layer.grads.items()})
    together, separate = grads
    for p in ("weight", "bias"):
        np.testing.assert_allclose(together[f"d.{p}"], separate[f"d1.{p}"] + separate[f"d2.{p}"], rtol=1e-5, atol=1e-7)
        assert np.abs(separate[f"d1.{p}"]).max() > 1e-4 and np.abs(separate[f"d2.{p}"]).max() > 1e-4


def test_numpy_and_the_strict_namespace_agree_on_a_graph(rng):
    strict = backends.resolve("array_api_strict")
    xs = untied(rng, (3, 2, 6, 6)).astype(np.float32)
    ys = np.array([0, 3, 1])
    results = []
    for backend in (backends.resolve("numpy"), strict):
        x, y = dag()                                     # fresh layers: each net builds its own weights
        net = DCNNetwork(inputs=x, outputs=y, seed=4, backend=backend).compile("adam", lr=1e-2)
        net.fit(xs, ys, epochs=2, batch_size=3, verbose=0, shuffle=False)
        results.append((net.state_dict(), net.predict(xs)))
    for key, value in results[0][0].items():
        np.testing.assert_allclose(results[1][0][key], value, rtol=2e-5, atol=2e-6, err_msg=key)
    np.testing.assert_allclose(results[1][1], results[0][1], rtol=2e-5, atol=2e-6)


# --- everything else on a graph -----------------------------------------------------------------------

def test_summary_has_a_connected_to_column_and_counts_a_shared_layer_once():
    x, y = dag()
    net = DCNNetwork(inputs=x, outputs=y).build()
    text = net.summary(print_fn=None)
    assert "connected to" in text.splitlines()[0]
    assert "shared#2" in text and "(shared)" in text
    row = next(line for line in text.splitlines() if line.startswith("concatenate "))
    assert row.rstrip().endswith("shared, shared#2, residual")
    trainable, _ = net.parameter_counts()
    assert trainable == net.flat_parameters().data.shape[0]
    assert "(shared): Conv2D" in repr(net)


def test_save_and_load_rebuild_the_graph_from_json(tmp_path):
    x, y = dag()
    net = DCNNetwork(inputs=x, outputs=y, seed=3).build()
    net.save(tmp_path / "g.safetensors")
    again = dcnn.load(tmp_path / "g.safetensors")
    assert again.is_graph and [n for n, _ in again.model.children()] == [n for n, _ in net.model.children()]
    xs = untied(np.random.default_rng(0), (2, 2, 6, 6)).astype(np.float32)
    np.testing.assert_array_equal(again.predict(xs), net.predict(xs))
    text = json.dumps(spec.model_spec(net))
    assert "__" not in text.replace("__array__", "").replace("__layer__", "") and "lambda" not in text


@pytest.mark.parametrize("damage,message", [
    (lambda g: g["nodes"][1]["inbound"].__setitem__(0, ["node", 99]), "does not come before it"),
    (lambda g: g["nodes"][0].__setitem__("layer", "nowhere"), r"nodes\[0\] must name one of"),
    (lambda g: g["layers"][0].__setitem__("layer", "os.system"), "unknown layer class"),
    (lambda g: g.pop("outputs"), "needs lists"),
])
def test_a_damaged_graph_spec_is_refused_by_name(damage, message):
    x, y = dag()
    stored = json.loads(json.dumps(spec.model_spec(DCNNetwork(inputs=x, outputs=y).build())))
    damage(stored["graph"])
    with pytest.raises(spec.SpecError, match=message):
        spec.build_network(stored)


def test_train_eval_release_and_moving_to_another_backend(rng):
    x = Input((1, 6, 6))
    h = Dropout(0.5)(ReLU()(Conv2D(2, 3)(x)))
    net = DCNNetwork(inputs=x, outputs=Softmax()(Dense(3)(Flatten()(h))), seed=0).compile("sgd", lr=0.1)
    xs, ys = rng.random((6, 1, 6, 6), dtype=np.float32), np.array([0, 1, 2, 0, 1, 2])
    net.fit(xs, ys, epochs=1, batch_size=3, verbose=0)
    assert all(layer._saved is None for _, layer in net.model.named_modules())
    first = net.predict(xs)
    np.testing.assert_array_equal(first, net.predict(xs))            # eval mode: dropout off
    np.testing.assert_allclose(first.sum(axis=1), 1, rtol=1e-6)      # the Softmax output is kept for predict
    moved = net.to(backends.resolve("array_api_strict"))
    np.testing.assert_allclose(moved.predict(xs), first, rtol=1e-5, atol=1e-6)
    moved.fit(xs, ys, epochs=1, batch_size=3, verbose=0)


def test_a_chain_written_as_a_graph_runs_the_list_forms_steps_and_numbers():
    """Same layers, same seed: the functional convnet computes exactly what the list form does."""
    def layers():
        return [Conv2D(4, 3, padding=1), MaxPool2D(2), BatchNorm2D(), ReLU(), Flatten(), Dense(3)]
    chain = DCNNetwork(layers(), input_shape=(1, 8, 8), seed=5).compile("adam", lr=1e-2)
    x = Input((1, 8, 8))
    h = x
    for layer in layers():
        h = layer(h)
    graph = DCNNetwork(inputs=x, outputs=h, seed=5).compile("adam", lr=1e-2)
    step = graph.model.plan[0]
    assert len(graph.model.plan) == 1 and [type(s).__name__ for s in step.steps] == \
        ["ConvMaxPool", "BatchNormReLU", "Flatten", "Dense"]
    xs, ys = np.random.default_rng(1).random((8, 1, 8, 8), dtype=np.float32), np.arange(8) % 3
    for net in (chain, graph):
        net.fit(xs, ys, epochs=2, batch_size=4, verbose=0, shuffle=False)
    for a, b in zip(chain.state_dict().values(), graph.state_dict().values()):
        np.testing.assert_array_equal(a, b)


def test_a_graph_file_claiming_absurd_shapes_is_refused_before_building(tmp_path):
    from dcnn.utils.files import load_arrays, save_arrays
    x = Input((1, 8, 8))
    net = DCNNetwork(inputs=x, outputs=Dense(3, name="head")(Flatten()(Conv2D(2, 3, name="c")(x)))).build()
    net.save(tmp_path / "g.safetensors")
    arrays, meta = load_arrays(tmp_path / "g.safetensors")
    meta["input_shape"] = [1, 3000, 3000]
    meta["spec"]["graph"]["inputs"][0]["shape"] = [1, 3000, 3000]
    save_arrays(tmp_path / "big.safetensors", arrays, meta)
    with pytest.raises(ValueError, match=r"metadata 'input_shape'.*'head.weight' of shape \(3, 17976008\)"):
        dcnn.load(tmp_path / "big.safetensors")


def test_the_issues_api_runs_as_written():
    """Issue 19's example, line for line (small data)."""
    from dcnn import Input, Conv2D, BatchNorm2D, ReLU, Add, Concatenate, Multiply, GlobalAvgPool2D, Dense
    x_train, y_train = data(16)
    x_train = np.pad(x_train, ((0, 0), (0, 0), (10, 10), (10, 10)))              # (16, 3, 32, 32)

    x = Input((3, 32, 32))                       # a symbolic tensor: .shape excludes the batch axis
    a = ReLU()(BatchNorm2D()(Conv2D(32, 3, padding=1, name="stem")(x)))
    b = Conv2D(32, 1, name="branch")(a)
    c = Concatenate(name="cat")([a, b])          # channel axis (axis=1), as torch.cat(dim=1)
    g = GlobalAvgPool2D(keepdims=True)(c)        # (N, 64, 1, 1)
    s = Multiply()([c, g])                       # broadcasting, as NumPy/PyTorch broadcast
    y = Dense(10, name="head")(GlobalAvgPool2D()(Add()([s, c])))
    net = dcnn.DCNNetwork(inputs=x, outputs=y, seed=0)
    net.compile(optimizer="adam", lr=1e-3)
    net.fit(x_train, y_train, epochs=2)

    assert x.shape == (3, 32, 32) and g.shape == (64, 1, 1) and s.shape == (64, 32, 32)
    assert list(net.state_dict())[:2] == ["stem.weight", "stem.bias"] and "head.bias" in net.state_dict()
