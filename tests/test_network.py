"""DCNNetwork end to end: fit on a task only convolution solves, summary, weights files."""
import numpy as np
import pytest

from dcnn import (BatchNorm2D, Conv2D, ConvBlock, DCNNetwork, Dense, Dropout, FeatureMapNorm, Flatten, MaxPool2D,
                  ReLU, Softmax)


def edge_orientation_task(n, rng, size=16, length=5):
    """Images with one short horizontal (label 0) or vertical (label 1) bar at a random place, in noise."""
    labels = rng.integers(0, 2, n)
    rows = rng.integers(0, size - length + 1, n)
    cols = rng.integers(0, size - length + 1, n)
    step = np.arange(length)
    r = np.where(labels[:, None] == 1, rows[:, None] + step, rows[:, None])
    c = np.where(labels[:, None] == 0, cols[:, None] + step, cols[:, None])
    x = rng.random((n, 1, size, size), dtype=np.float32) * 0.3
    x[np.arange(n)[:, None], 0, r, c] = 1.0
    return x, labels


def seed_network(**kwargs):
    """The notebook's network: conv blocks with a firing cap, per-map normalisation, dense 128, dense 2."""
    net = DCNNetwork(input_shape=(1, 16, 16), **kwargs)
    net.add_layer(Conv2D(8, 3, padding=1))
    net.add_layer(ReLU(max_activation=6.0))
    net.add_layer(MaxPool2D(2))
    net.add_layer(FeatureMapNorm())
    net.add_layer(Conv2D(16, 3, padding=1))
    net.add_layer(ReLU())
    net.add_layer(MaxPool2D(2))
    net.add_layer(Flatten())
    net.add_layer(Dense(128, init="he"))
    net.add_layer(ReLU())
    net.add_layer(Dense(2))
    return net


def test_fit_learns_edge_orientation_at_random_positions(backend, rng):
    x, y = edge_orientation_task(1200, rng)
    xv, yv = edge_orientation_task(400, rng)
    net = seed_network(seed=1, backend=backend).compile("sgd", lr=0.05, momentum=0.9)
    history = net.fit(x, y, epochs=4, batch_size=32, validation_data=(xv, yv), verbose=0)
    assert set(history.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert len(history["loss"]) == 4 and history["loss"][-1] < history["loss"][0]
    assert net.evaluate(xv, yv)["accuracy"] >= 0.95


def test_trailing_softmax_is_fused_into_the_loss(rng):
    x, y = edge_orientation_task(64, rng)
    plain = seed_network(seed=2).compile("sgd", lr=0.05)
    with_softmax = seed_network(seed=2).add_layer(Softmax()).compile("sgd", lr=0.05)
    plain.fit(x, y, epochs=1, batch_size=16, verbose=0)
    with_softmax.fit(x, y, epochs=1, batch_size=16, verbose=0)
    np.testing.assert_allclose(with_softmax.predict(x), plain.predict(x), rtol=1e-6)


def test_summary_shows_shapes_and_parameter_counts():
    text = seed_network().summary(print_fn=None)
    assert "(N, 8, 16, 16)" in text and "(N, 16, 8, 8)" in text and "(N, 256)" in text
    total = (8 * 9 + 8) + (16 * 8 * 9 + 16) + (256 * 128 + 128) + (128 * 2 + 2)
    assert f"total parameters: {total:,}" in text


def test_seed_conv_block_and_fixed_edge_filters(rng):
    vertical = np.array([[1, 0, -1]] * 3, np.float32)
    net = DCNNetwork([ConvBlock(2, kernel=np.stack([vertical, vertical.T]), trainable=False, max_activation=2.0),
                      Flatten(), Dense(2)], input_shape=(1, 16, 16))
    x, y = edge_orientation_task(32, rng)
    before = net.state_dict()["0.0.weight"].copy()
    net.compile("sgd", lr=0.1).fit(x, y, epochs=1, batch_size=8, verbose=0)
    np.testing.assert_array_equal(net.state_dict()["0.0.weight"], before)   # frozen
    assert not np.array_equal(net.state_dict()["2.weight"], DCNNetwork(
        [ConvBlock(2, kernel=np.stack([vertical, vertical.T])), Flatten(), Dense(2)],
        input_shape=(1, 16, 16)).build().state_dict()["2.weight"])  # the dense layer trained


def test_same_seed_same_training_on_cpu(rng):
    x, y = edge_orientation_task(128, rng)
    runs = []
    for _ in range(2):
        net = DCNNetwork([Conv2D(4, 3), BatchNorm2D(), ReLU(), Flatten(), Dropout(0.3), Dense(2)],
                         input_shape=(1, 16, 16), seed=5).compile("adam", lr=1e-3)
        net.fit(x, y, epochs=2, batch_size=16, verbose=0)
        runs.append(net.state_dict())
    for key in runs[0]:
        np.testing.assert_array_equal(runs[0][key], runs[1][key])


def test_save_and_load_weights_round_trip(tmp_path, rng):
    x, y = edge_orientation_task(64, rng)
    net = DCNNetwork([Conv2D(4, 3), BatchNorm2D(), ReLU(), MaxPool2D(2), Flatten(), Dense(2)],
                     input_shape=(1, 16, 16)).compile("sgd", lr=0.1)
    net.fit(x, y, epochs=1, batch_size=16, verbose=0)
    net.save_weights(tmp_path / "w.safetensors")
    assert [p.name for p in tmp_path.iterdir()] == ["w.safetensors"]   # no temporary left behind
    other = DCNNetwork([Conv2D(4, 3), BatchNorm2D(), ReLU(), MaxPool2D(2), Flatten(), Dense(2)],
                       input_shape=(1, 16, 16), seed=9)
    meta = other.load_weights(tmp_path / "w.safetensors")
    assert meta["format"] == "dcnn"
    np.testing.assert_array_equal(other.predict(x), net.predict(x))


def test_weights_of_another_shape_are_refused_naming_the_key(tmp_path):
    DCNNetwork([Conv2D(4, 3), Flatten(), Dense(2)], input_shape=(1, 8, 8)).build().save_weights(tmp_path / "a")
    other = DCNNetwork([Conv2D(5, 3), Flatten(), Dense(2)], input_shape=(1, 8, 8))
    with pytest.raises(ValueError, match=r"'0.weight' has shape \(4, 1, 3, 3\), the model expects \(5, 1, 3, 3\)"):
        other.load_weights(tmp_path / "a")
    fewer = DCNNetwork([Conv2D(4, 3), Flatten()], input_shape=(1, 8, 8))
    with pytest.raises(ValueError, match=r"unexpected keys \['2.bias', '2.weight'\]"):
        fewer.load_weights(tmp_path / "a")


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupt_weights_file_is_refused_naming_it(tmp_path, damage):
    path = tmp_path / "w.safetensors"
    net = DCNNetwork([Conv2D(2, 3), Flatten(), Dense(2)], input_shape=(1, 6, 6)).build()
    net.save_weights(path)
    data = path.read_bytes()
    path.write_bytes({"truncate": data[:len(data) // 2], "garbage": b"\x80\x04pickle" * 20, "empty": b""}[damage])
    with pytest.raises(ValueError, match="w.safetensors is not a readable safetensors file"):
        net.load_weights(path)


def test_missing_weights_file():
    net = DCNNetwork([Conv2D(2, 3), Flatten(), Dense(2)], input_shape=(1, 6, 6))
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        net.load_weights("nope.safetensors")


def test_validation_split_holds_out_the_tail(rng):
    x, y = edge_orientation_task(100, rng)
    net = seed_network().compile("sgd", lr=0.05)
    history = net.fit(x, y, epochs=1, batch_size=10, validation_split=0.2, verbose=0)
    expected = net.evaluate(x[80:], y[80:])
    assert history["val_accuracy"][0] == pytest.approx(expected["accuracy"])
    with pytest.raises(ValueError, match="validation_split must be in"):
        net.fit(x, y, validation_split=1.5, verbose=0)


def test_a_stopped_fit_records_no_partial_epoch_and_the_next_fit_runs_whole(rng):
    from dcnn import Callback

    class StopAtSecondBatch(Callback):
        def on_train_begin(self, net, epochs, steps):
            self.net = net

        def on_batch_end(self, step, device_logs):
            self.net.stop_training = step == 1

    x, y = edge_orientation_task(64, rng)
    net = seed_network().compile("sgd", lr=0.05)
    history = net.fit(x, y, epochs=3, batch_size=16, validation_data=(x, y), callbacks=[StopAtSecondBatch()],
                      verbose=0)
    assert history.history == {}          # the interrupted epoch is not reported as one
    history = net.fit(x, y, epochs=2, batch_size=16, verbose=0)
    assert len(history["loss"]) == 2
