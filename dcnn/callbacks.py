"""Training callbacks (Keras-style hooks) and the History they fill."""


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
            self.history.setdefault(key, []).append(value)

    def __getitem__(self, key):
        return self.history[key]

    def __repr__(self):
        return f"History({self.history})"
