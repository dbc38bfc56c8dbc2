"""A graph model through checkpoints: written after an epoch, rebuilt from the checkpoint's own spec,
restored and trained on, it ends bit for bit where an uninterrupted run ends."""
import numpy as np

from dcnn import BatchNorm2D, Concatenate, Conv2D, DCNNetwork, Dense, Dropout, Flatten, Input, MaxPool2D, ReLU
from dcnn.io import checkpoint
from dcnn.model.spec import build_network


def graph_net(seed=2):
    x = Input((1, 8, 8))
    a = ReLU()(BatchNorm2D()(Conv2D(4, 3, padding=1, use_bias=False)(x)))
    shared = Conv2D(4, 1, name="shared")
    b = shared(Dropout(0.3)(shared(a)))
    y = Dense(3)(Dropout(0.2)(Flatten()(MaxPool2D(2)(Concatenate()([a, b])))))
    return DCNNetwork(inputs=x, outputs=y, seed=seed).compile("adam", lr=1e-2)


def test_a_graph_model_resumes_bit_exactly_from_its_checkpoint(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.random((40, 1, 8, 8), dtype=np.float32), rng.integers(0, 3, 40)
    whole = graph_net()
    whole.fit(x, y, epochs=3, batch_size=8, verbose=0)

    first = graph_net()
    history = first.fit(x, y, epochs=1, batch_size=8, verbose=0).history
    checkpoint.save(tmp_path, first, epoch=1, config={}, history=history)
    del first

    model, optim, meta = checkpoint.load(tmp_path)
    again = build_network(meta["spec"], seed=99)           # another seed: everything comes from the file
    again.compile("adam", lr=1e-2)
    checkpoint.restore(again, model, optim, meta)
    assert again.is_graph and [n for n, _ in again.model.children()] == [n for n, _ in whole.model.children()]
    again.fit(x, y, epochs=3, batch_size=8, verbose=0, initial_epoch=1)
    for (key, a), b in zip(whole.state_dict().items(), again.state_dict().values()):
        np.testing.assert_array_equal(a, b, err_msg=key)
