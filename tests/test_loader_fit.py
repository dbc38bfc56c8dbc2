"""``fit`` and ``evaluate`` take a loader (issue 22, point 8): uint8 batches cast on the device, the same
training as from arrays, mid-epoch stops that continue, data-wait time in the callbacks."""
import numpy as np
import pytest

from dcnn import Conv2D, DCNNetwork, Dense, Flatten, MaxPool2D, ReLU
from dcnn.data.loader import Loader
from dcnn.data.sources import ArrayImages
from dcnn.model.callbacks import Callback
from test_loader import needs_grain


def data(n=40, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, 3, 8, 8), dtype=np.uint8)
    y = (x[:, 0, :4].mean(axis=(1, 2)) > 127).astype(np.int64) + 2 * (x[:, 1, 4:].mean(axis=(1, 2)) > 127)
    return x, y


def network(backend=None):
    net = DCNNetwork([Conv2D(4, 3), ReLU(), MaxPool2D(2), Flatten(), Dense(4)], input_shape=(3, 8, 8), seed=1,
                     backend=backend)
    net.compile("adam", lr=0.01)
    return net


def weights(net):
    return {k: v.copy() for k, v in net.state_dict().items()}


def same_weights(a, b):
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


class Stop(Callback):
    """Stop at a given step of a given epoch, and record every step's data wait."""

    def __init__(self, epoch=None, step=None):
        self.at, self.waits, self.steps = (epoch, step), [], []

    def on_epoch_begin(self, epoch):
        self.epoch = epoch

    def on_batch_end(self, step, logs):
        self.waits.append(logs["data_wait"])
        self.steps.append((self.epoch, step))
        if (self.epoch, step) == self.at:
            self.net.stop_training = True

    def on_train_begin(self, net, epochs, steps):
        self.net = net


def test_training_from_a_loader_is_training_from_the_arrays_scaled_on_the_device(backend):
    x, y = data()
    from_arrays = network(backend)
    from_arrays.fit(np.divide(x, np.float32(255), dtype=np.float32), y, epochs=2, batch_size=8, shuffle=False,
                    verbose=0)
    from_loader = network(backend)
    loader = Loader(ArrayImages(x, y), 8, shuffle=False)
    history = from_loader.fit(loader, epochs=2, verbose=0)
    assert same_weights(weights(from_arrays), weights(from_loader))              # bit for bit
    assert history.history["loss"] == from_arrays.history.history["loss"]
    assert from_loader.evaluate(Loader(ArrayImages(x, y), 16, shuffle=False)) == \
        from_arrays.evaluate(np.divide(x, np.float32(255), dtype=np.float32), y)


def test_a_stop_mid_epoch_continues_with_the_remaining_batches(numpy_active):
    x, y = data()
    make = lambda: Loader(ArrayImages(x, y), 8, seed=5, workers=0)
    whole = network()
    whole.fit(make(), epochs=2, verbose=0)
    net, loader, stop = network(), make(), Stop(epoch=0, step=2)
    net.fit(loader, epochs=2, verbose=0, callbacks=[stop])
    assert (loader.epoch, loader.step) == (0, 3) and net.history.epochs == []
    rest = Stop()
    net.fit(loader, epochs=2, verbose=0, callbacks=[rest])
    assert rest.steps[0] == (0, 3) and rest.steps[-1] == (1, 4)     # steps keep their numbers
    assert same_weights(weights(whole), weights(net))


@needs_grain
def test_validation_with_a_loader_and_the_data_wait_in_the_callbacks(numpy_active):
    x, y = data()
    stop = Stop()
    net = network()
    with Loader(ArrayImages(x, y), 8, workers=2) as train, Loader(ArrayImages(x[:16], y[:16]), 8, shuffle=False) as test:
        history = net.fit(train, epochs=2, validation_data=test, verbose=0, callbacks=[stop])
    assert len(history.history["val_accuracy"]) == 2 and len(stop.waits) == 10
    assert all(isinstance(w, float) and w >= 0 for w in stop.waits)


def test_a_loader_of_float_images_is_checked_as_arrays_are(numpy_active):
    x, y = data(16)
    good = np.divide(x, np.float32(255), dtype=np.float32)
    net = network()
    net.fit(Loader(ArrayImages(good, y), 8), epochs=1, verbose=0)
    bad = good.copy()
    bad[3, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        network().fit(Loader(ArrayImages(bad, y), 8, shuffle=False), epochs=1, verbose=0)


def test_a_pytorch_dataloader_works_too(numpy_active):
    torch = pytest.importorskip("torch")
    x, y = data(16)
    dataset = torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y))
    net = network()
    net.fit(torch.utils.data.DataLoader(dataset, batch_size=8), epochs=1, verbose=0)
    assert set(net.evaluate(torch.utils.data.DataLoader(dataset, batch_size=8))) == {"loss", "accuracy"}


def test_wrong_uses_say_what_to_pass(numpy_active):
    x, y = data(16)
    net = network()
    with pytest.raises(TypeError, match="or a loader"):
        net.fit(x)
    with pytest.raises(TypeError, match="or a loader"):
        net.evaluate(x)
    with pytest.raises(ValueError, match="validation_split cannot split a loader"):
        net.fit(Loader(ArrayImages(x, y), 8), validation_split=0.2)
    with pytest.raises(ValueError, match=r"the loader's batch has shape \(8, 3, 8, 8\); the model takes"):
        DCNNetwork([Flatten(), Dense(4)], input_shape=(1, 8, 8)).compile().fit(Loader(ArrayImages(x, y), 8),
                                                                               verbose=0)
    with pytest.raises(TypeError, match=r"\(images, labels\) pairs"):
        net.fit(_Odd(), verbose=0)


class _Odd:
    def __len__(self):
        return 1

    def __iter__(self):
        yield np.zeros((2, 3, 8, 8), np.uint8)


@needs_grain
def test_an_error_in_training_stops_the_loaders_workers(numpy_active):
    x, y = data()

    class Boom(Callback):
        def on_batch_end(self, step, logs):
            if step == 1:
                raise KeyboardInterrupt

    loader = Loader(ArrayImages(x, y), 8, workers=1)
    with pytest.raises(KeyboardInterrupt):
        network().fit(loader, epochs=1, verbose=0, callbacks=[Boom()])
    assert loader._engine is None                       # closed: its worker is gone
    assert loader.step == 2


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_an_empty_batch_is_passed_over(numpy_active, dtype):
    x, y = data(16)
    x = x if dtype == np.uint8 else np.divide(x, np.float32(255), dtype=np.float32)

    class WithEmpty:
        def __len__(self):
            return 3

        def __iter__(self):
            yield x[:8], y[:8]
            yield x[:0], y[:0]
            yield x[8:], y[8:]

    net = network()
    net.fit(WithEmpty(), epochs=1, verbose=0)
    assert len(net.history.epochs) == 1 and net.evaluate(WithEmpty())["accuracy"] >= 0
