"""The fit loop behind ``DCNNetwork.fit``: shuffling, batches, callbacks, validation.

Metrics are summed on the device and read once per epoch (each read waits for a GPU).
"""
from __future__ import annotations

import numpy as np

from .callbacks import CallbackList, History, ProgbarLogger


def check_batch_size(batch_size) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int; got {batch_size!r}")


def spans(n: int, batch_size: int):
    """(start, stop) of each batch; stops never pass n (the array API forbids it)."""
    return [(start, min(start + batch_size, n)) for start in range(0, n, batch_size)]


def fit(net, x, y, epochs: int = 1, batch_size: int = 32, validation_data=None, shuffle: bool = True,
            verbose: int = 1, callbacks=(), initial_epoch: int = 0, augment=None,
            validation_split: float = 0.0) -> History:
        """Train; returns the History (per-epoch loss, accuracy and validation metrics).

        ``validation_split`` holds out that fraction of the data (its tail, as Keras does)
        when no ``validation_data`` is given.  ``augment`` is an optional callable ``(device_batch) -> device_batch`` applied
        to each training batch (e.g. random crops); ``initial_epoch`` resumes a run.
        ``verbose``: 0 silent, 1 a live progress bar per epoch (tqdm.auto: a widget in notebooks), 2 one line
        per epoch, as in Keras.
        Metrics are summed on the device and read once per epoch.
        """
        check_batch_size(batch_size)
        if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 0:
            raise ValueError(f"epochs must be a non-negative int; got {epochs!r}")
        if isinstance(initial_epoch, bool) or not isinstance(initial_epoch, (int, np.integer)) or initial_epoch < 0:
            raise ValueError(f"initial_epoch must be an int >= 0 (the number of epochs already done); "
                             f"got {initial_epoch!r}")
        net._require_compiled()
        xd, yd = net._prepare(x, y)
        val = None
        if not 0 <= validation_split < 1:
            raise ValueError(f"validation_split must be in [0, 1); got {validation_split!r}")
        if validation_split and validation_data is None:
            keep = int(round(xd.shape[0] * (1 - validation_split)))
            if not 0 < keep < xd.shape[0]:
                raise ValueError(f"validation_split={validation_split} leaves no training or no validation samples")
            val = (xd[keep:, ...], yd[keep:, ...])
            xd, yd = xd[:keep, ...], yd[:keep, ...]
        if validation_data is not None:
            if len(validation_data) != 2:
                raise ValueError("validation_data must be a pair (x_val, y_val)")
            val = net._prepare(*validation_data)
        xp = net.backend.xp
        n = xd.shape[0]
        steps = -(-n // batch_size)
        net.stop_training = False
        if verbose not in (0, 1, 2, True, False):
            raise ValueError(f"verbose must be 0 (silent), 1 (a progress bar) or 2 (one line per epoch); got {verbose!r}")
        cbs = CallbackList(list(callbacks) + ([ProgbarLogger(int(verbose))] if verbose else []))
        cbs.on_train_begin(net, epochs=epochs, steps=steps)
        for epoch in range(initial_epoch, epochs):
            order = net.shuffle_rng.permutation(n) if shuffle else np.arange(n)
            order = net.backend.from_numpy(order)
            loss_sum = xp.zeros((), dtype=xp.float32, device=net.backend.device)
            correct = xp.zeros((), dtype=xp.int64, device=net.backend.device)
            cbs.on_epoch_begin(epoch)
            for step, (start, stop) in enumerate(spans(n, batch_size)):
                idx = order[start:stop]
                if net.data_parallel is not None:      # this rank's part of the global batch
                    idx = net.data_parallel.shard(idx)
                xb, yb = xp.take(xd, idx, axis=0), xp.take(yd, idx, axis=0)
                if augment is not None:
                    xb = augment(xb)
                loss, hits = net.train_on_batch(xb, yb)
                loss_sum += loss * (stop - start)
                correct += hits
                seen = stop
                cbs.on_batch_end(step, {"loss": loss, "loss_sum": loss_sum, "correct": correct, "seen": seen})
                if net.stop_training:
                    break
            logs = {"loss": float(loss_sum) / seen, "accuracy": int(correct) / seen}  # one sync per epoch
            complete = seen == n
            if val is not None and complete:   # a mid-epoch stop (Ctrl-C) skips the test pass
                logs.update({f"val_{k}": v for k, v in net._evaluate_device(*val, batch_size=256).items()})
            if complete:
                net.history.on_epoch_end(epoch, logs)   # first, so callbacks see this epoch in it
            cbs.on_epoch_end(epoch, logs)
            if net.stop_training:
                break
        cbs.on_train_end()
        return net.history

