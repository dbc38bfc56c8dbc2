"""What ``DCNNetwork.fit`` itself needs of callbacks: the protocol, the list that calls them,
``History`` (fit returns it) and ``ProgbarLogger`` (what ``verbose`` 1 and 2 show).

The Keras-named callbacks a user passes to fit (EarlyStopping, ModelCheckpoint, CSVLogger,
learning-rate schedules) build on ``Callback`` in ``dcnn.train.callbacks``.

Hooks get the epoch's metrics as plain floats (``loss``, ``accuracy``, ``val_loss``,
``val_accuracy``, and each compiled metric's logs, e.g. ``miou``, ``val_miou``, ``iou_3``);
``on_batch_end`` gets device arrays, read sparingly (each read syncs).
"""
from __future__ import annotations

import numbers
import sys


def is_scalar(value) -> bool:
    """A number the epoch logs can hold (History, the CSV log, the progress line); not an array."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


class Callback:
    def on_train_begin(self, net, epochs: int, steps: int): ...
    def on_epoch_begin(self, epoch: int): ...
    def on_batch_end(self, step: int, device_logs: dict):
        """``device_logs`` holds running sums as device arrays: reading them syncs, so read sparingly."""
    def on_epoch_end(self, epoch: int, logs: dict): ...
    def on_train_end(self): ...


class CallbackList:
    def __init__(self, callbacks):
        self.callbacks = callbacks

    def __getattr__(self, hook):
        def call(*args, **kwargs):
            for cb in self.callbacks:
                method = getattr(cb, hook, None)
                if method is not None:
                    method(*args, **kwargs)
        return call


class History(Callback):
    """Per-epoch metrics: ``history.history["loss"]``, ``["val_accuracy"]``..."""

    def __init__(self):
        self.history: dict[str, list[float]] = {}
        self.epochs: list[int] = []

    def on_epoch_end(self, epoch, logs):
        self.epochs.append(epoch)
        for key, value in logs.items():
            if is_scalar(value):
                self.history.setdefault(key, []).append(value)

    def __getitem__(self, key):
        return self.history[key]

    def __repr__(self):
        return f"History({self.history})"


# --- what fit shows ---------------------------------------------------------------------------------

def _tqdm():
    """tqdm's auto mode: a widget in a notebook (with ipywidgets), a text bar elsewhere."""
    try:
        from tqdm.auto import tqdm
        from tqdm.notebook import IProgress
        if tqdm.__module__.endswith("notebook") and IProgress is None:   # a notebook without ipywidgets
            raise ImportError
        return tqdm
    except ImportError:
        from tqdm.std import tqdm
        return tqdm


class ProgbarLogger(Callback):
    """``verbose=1``: a live bar per epoch, counting batches (no device read until the epoch ends,
    then its metrics); ``verbose=2``: one line per epoch."""

    def __init__(self, verbose: int = 1, file=None):
        self.verbose, self.file = verbose, file

    def on_train_begin(self, net, epochs, steps):
        self.epochs, self.steps, self.bar = epochs, steps, None

    def on_epoch_begin(self, epoch):
        if self.verbose == 1:
            self.bar = _tqdm()(total=self.steps, desc=f"epoch {epoch + 1}/{self.epochs}", unit="batch",
                               file=self.file or sys.stderr, leave=True)

    def on_batch_end(self, step, device_logs):
        if self.bar is not None:
            self.bar.update(1)

    def on_epoch_end(self, epoch, logs):
        logs = {k: v for k, v in logs.items() if is_scalar(v)}
        parts = "  ".join(f"{k}={v:.4f}" for k, v in logs.items())
        if self.bar is not None:
            self.bar.set_postfix_str(" ".join(f"{k}={v:.4f}" for k, v in logs.items()), refresh=True)
            self.bar.close()
            self.bar = None
        elif self.verbose:
            print(f"epoch {epoch + 1}/{self.epochs}  {parts}", file=self.file or sys.stdout, flush=True)
