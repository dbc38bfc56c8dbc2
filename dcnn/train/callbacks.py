"""Training callbacks with Keras's names and behaviour, for ``DCNNetwork.fit(callbacks=[...])``.

- ``EarlyStopping``, ``ModelCheckpoint``, ``ReduceLROnPlateau``, ``CSVLogger``, ``LearningRateScheduler``
  (``monitor`` may name any logged metric, e.g. 'val_miou'; mode 'auto' follows its direction);
- per-step learning-rate schedules: ``OneCycleLR``, ``CosineDecay``, ``StepDecay``
  (the one-cycle maths is the one ``dcnn train`` uses: ``dcnn.train.augment.LRSchedule`` builds on it).

The protocol, ``History`` and ``ProgbarLogger`` are in ``dcnn.model.callbacks`` (fit uses them).
"""
from __future__ import annotations

import math
import warnings
from pathlib import Path

from ..model.callbacks import Callback, CallbackList, History, ProgbarLogger, is_scalar  # noqa: F401
from ..model.metrics import METRICS

# --- stopping, saving, logging ------------------------------------------------------------------------

def auto_mode(monitor: str, net=None) -> str:
    """'max' or 'min' for a logged name: losses go down; a metric goes its ``higher_is_better`` way
    (a compiled one of ``net``'s, else dcnn's of that name; 'iou_3' is the iou of class 3); for other
    names, Keras's rule ('acc' in the name: up)."""
    name = monitor.removeprefix("val_")
    if name == "loss" or name.endswith("_loss"):
        return "min"
    known = {m.name: m for m in getattr(net, "metrics", None) or ()}
    for cut in range(name.count("_") + 1):
        base = name.rsplit("_", cut)[0]
        metric = known.get(base) or METRICS.get(base)
        if metric is not None:
            return "max" if getattr(metric, "higher_is_better", True) else "min"
    return "max" if "acc" in name else "min"


def _better(mode: str, monitor: str, net=None):
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"mode must be 'auto', 'min' or 'max'; got {mode!r}")
    if mode == "auto":
        mode = auto_mode(monitor, net)
    return (lambda a, b: a > b) if mode == "max" else (lambda a, b: a < b), mode


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by more than ``min_delta`` for ``patience`` epochs
    (Keras's EarlyStopping); ``restore_best_weights`` puts the best epoch's weights back at the end."""

    def __init__(self, monitor: str = "val_loss", min_delta: float = 0.0, patience: int = 0, verbose: int = 0,
                 mode: str = "auto", baseline: float | None = None, restore_best_weights: bool = False,
                 start_from_epoch: int = 0):
        self.monitor, self.patience, self.verbose = monitor, int(patience), verbose
        self.better, self.mode = _better(mode, monitor)
        self.given_mode, self.delta = mode, abs(float(min_delta))
        self.min_delta = self.delta * (1 if self.mode == "max" else -1)
        self.baseline, self.restore_best_weights, self.start_from_epoch = baseline, restore_best_weights, start_from_epoch

    def on_train_begin(self, net, epochs, steps):
        self.better, self.mode = _better(self.given_mode, self.monitor, net)    # 'auto': the net's metrics
        self.min_delta = self.delta * (1 if self.mode == "max" else -1)
        self.net, self.wait, self.stopped_epoch, self.best_epoch = net, 0, 0, None
        self.best = self.baseline if self.baseline is not None else (-math.inf if self.mode == "max" else math.inf)
        self.best_weights = None

    def on_epoch_end(self, epoch, logs):
        current = logs.get(self.monitor)
        if current is None:
            warnings.warn(f"EarlyStopping: {self.monitor!r} is not among the metrics ({', '.join(logs)}); "
                          "give fit validation data for val_* metrics", stacklevel=2)
            return
        if epoch < self.start_from_epoch:
            return
        self.wait += 1
        if self.better(current - self.min_delta, self.best):
            self.best, self.best_epoch, self.wait = current, epoch, 0
            if self.restore_best_weights:
                self.best_weights = self.net.state_dict()      # host copies, once per improving epoch
            return
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.net.stop_training = True
            if self.verbose:
                print(f"epoch {epoch + 1}: early stopping ({self.monitor} best {self.best:.4f} at epoch "
                      f"{self.best_epoch + 1 if self.best_epoch is not None else '-'})")

    def on_train_end(self):
        if self.restore_best_weights and self.best_weights is not None:
            self.net.load_state_dict(self.best_weights, source="EarlyStopping's best weights")


class ModelCheckpoint(Callback):
    """Save the model after each epoch to ``filepath`` (``"ckpt-{epoch:02d}-{val_loss:.3f}.safetensors"``
    is formatted with the epoch, 1-based, and the metrics); ``save_best_only`` keeps only improvements
    of ``monitor``.  The file is a full model (``dcnn.load`` reads it) unless ``save_weights_only``."""

    def __init__(self, filepath, monitor: str = "val_loss", verbose: int = 0, save_best_only: bool = False,
                 save_weights_only: bool = False, mode: str = "auto"):
        self.filepath, self.monitor, self.verbose = str(filepath), monitor, verbose
        self.save_best_only, self.save_weights_only = save_best_only, save_weights_only
        self.better, self.mode = _better(mode, monitor)
        self.given_mode, self.best = mode, None      # the best is kept over several fit calls, as in Keras

    def on_train_begin(self, net, epochs, steps):
        self.net = net
        self.better, self.mode = _better(self.given_mode, self.monitor, net)    # 'auto': the net's metrics
        if self.best is None:
            self.best = -math.inf if self.mode == "max" else math.inf

    def on_epoch_end(self, epoch, logs):
        path = Path(self.filepath.format(epoch=epoch + 1, **logs))
        if self.save_best_only:
            current = logs.get(self.monitor)
            if current is None:
                warnings.warn(f"ModelCheckpoint: {self.monitor!r} is not among the metrics ({', '.join(logs)})",
                              stacklevel=2)
                return
            if not self.better(current, self.best):
                return
            self.best = current
        if self.save_weights_only:
            self.net.save_weights(path, metadata={"epoch": epoch + 1})
        else:
            self.net.save(path, metadata={"epoch": epoch + 1})
        if self.verbose:
            print(f"epoch {epoch + 1}: saved {path}")


class ReduceLROnPlateau(Callback):
    """Multiply the learning rate by ``factor`` when ``monitor`` has not improved by more than
    ``min_delta`` for ``patience`` epochs, then wait ``cooldown`` epochs; never below ``min_lr``
    (Keras's ReduceLROnPlateau; mode 'auto' follows the metric's direction, as EarlyStopping's)."""

    def __init__(self, monitor: str = "val_loss", factor: float = 0.1, patience: int = 10, verbose: int = 0,
                 mode: str = "auto", min_delta: float = 1e-4, cooldown: int = 0, min_lr: float = 0.0):
        if not 0 < float(factor) < 1:
            raise ValueError(f"ReduceLROnPlateau: factor must be in (0, 1) (it multiplies the rate); got {factor!r}")
        self.monitor, self.factor, self.patience, self.verbose = monitor, float(factor), int(patience), verbose
        self.given_mode, self.min_delta, self.cooldown, self.min_lr = mode, abs(float(min_delta)), int(cooldown), \
            float(min_lr)
        self.better, self.mode = _better(mode, monitor)

    def on_train_begin(self, net, epochs, steps):
        self.better, self.mode = _better(self.given_mode, self.monitor, net)
        self.net, self.wait, self.cooldown_left = net, 0, 0
        self.best = -math.inf if self.mode == "max" else math.inf

    def on_epoch_end(self, epoch, logs):
        current = logs.get(self.monitor)
        if current is None:
            warnings.warn(f"ReduceLROnPlateau: {self.monitor!r} is not among the metrics ({', '.join(logs)})",
                          stacklevel=2)
            return
        if self.cooldown_left > 0:
            self.cooldown_left -= 1
            self.wait = 0
        shifted = current - self.min_delta if self.mode == "max" else current + self.min_delta
        if self.better(shifted, self.best):
            self.best, self.wait = current, 0
        elif self.cooldown_left == 0:
            self.wait += 1
            lr = float(self.net.optimizer.lr)
            if self.wait >= self.patience and lr > self.min_lr:
                self.net.optimizer.lr = max(lr * self.factor, self.min_lr)
                self.cooldown_left, self.wait = self.cooldown, 0
                if self.verbose:
                    print(f"epoch {epoch + 1}: {self.monitor} has not improved; "
                          f"learning rate {self.net.optimizer.lr:.3g}")


class CSVLogger(Callback):
    """One row per epoch (``epoch`` then every number in the logs) in ``filename``, rewritten atomically
    each epoch; the columns are the first epoch's."""

    def __init__(self, filename, separator: str = ",", append: bool = False):
        self.filename, self.sep, self.append = Path(filename), separator, append

    def on_train_begin(self, net, epochs, steps):
        self.lines = []
        if self.append and self.filename.is_file():
            self.lines = self.filename.read_text().splitlines()
        self.keys = self.lines[0].split(self.sep)[1:] if self.lines else None

    def on_epoch_end(self, epoch, logs):
        from ..utils.files import atomic_write_text
        if self.keys is None:
            self.keys = [k for k, v in logs.items() if is_scalar(v)]
            self.lines.append(self.sep.join(["epoch", *self.keys]))
        self.lines.append(self.sep.join([str(epoch)] + [repr(float(logs[k])) if k in logs else "" for k in self.keys]))
        atomic_write_text(self.filename, "\n".join(self.lines) + "\n")


# --- learning rates ---------------------------------------------------------------------------------------

def one_cycle(base_lr: float, t: float, warmup: float = 0.15) -> float:
    """The one-cycle rate at progress ``t`` in [0, 1]: linear warm-up from base_lr/10 to base_lr over
    the first ``warmup`` share, then cosine decay to base_lr/100."""
    t = min(max(t, 0.0), 1.0)
    if t < warmup:
        return base_lr * (0.1 + 0.9 * t / warmup)
    return base_lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * (t - warmup) / (1 - warmup))))


class StepwiseLR(Callback):
    """Sets ``net.optimizer.lr`` before every step from the global step alone (so resuming repeats it)."""

    def lr_at(self, global_step: int) -> float:
        raise NotImplementedError

    epochs = None     # the schedule's length in epochs; None: fit's

    def on_train_begin(self, net, epochs, steps):
        self.net, self.steps, self.total = net, steps, steps * (self.epochs or epochs)

    def on_epoch_begin(self, epoch):
        self.epoch = epoch
        self.net.optimizer.lr = self.lr_at(epoch * self.steps)

    def on_batch_end(self, step, device_logs):
        self.net.optimizer.lr = self.lr_at(self.epoch * self.steps + step + 1)


class OneCycleLR(StepwiseLR):
    """Warm up over the first 15% of all steps from max_lr/10 to ``max_lr``, then cosine decay to max_lr/100."""

    def __init__(self, max_lr: float, warmup: float = 0.15):
        self.max_lr, self.warmup = float(max_lr), float(warmup)

    def lr_at(self, global_step):
        return one_cycle(self.max_lr, global_step / max(self.total, 1), self.warmup)


class CosineDecay(StepwiseLR):
    """Cosine decay from ``initial_lr`` to ``alpha * initial_lr`` over all steps (Keras's CosineDecay)."""

    def __init__(self, initial_lr: float, alpha: float = 0.0):
        self.initial_lr, self.alpha = float(initial_lr), float(alpha)

    def lr_at(self, global_step):
        t = min(global_step / max(self.total, 1), 1.0)
        return self.initial_lr * (self.alpha + (1 - self.alpha) * 0.5 * (1 + math.cos(math.pi * t)))


class StepDecay(StepwiseLR):
    """``initial_lr * gamma ** (epoch // step_size)``: a drop every ``step_size`` epochs (torch's StepLR)."""

    def __init__(self, initial_lr: float, step_size: int = 10, gamma: float = 0.1):
        if int(step_size) < 1:
            raise ValueError(f"step_size must be a positive number of epochs; got {step_size!r}")
        self.initial_lr, self.step_size, self.gamma = float(initial_lr), int(step_size), float(gamma)

    def lr_at(self, global_step):
        return self.initial_lr * self.gamma ** ((global_step // max(self.steps, 1)) // self.step_size)


class LRSchedule(StepwiseLR):
    """``constant``, or ``onecycle`` (callbacks.one_cycle: linear warm-up over the first 15% of steps
    from lr/10 to lr, then cosine decay to lr/100).  The rate depends only on (epoch, step)."""

    def __init__(self, base_lr: float, kind: str, epochs: int):
        if kind not in ("constant", "onecycle"):
            raise ValueError(f"unknown schedule {kind!r}; valid ones are: constant, onecycle")
        self.base_lr, self.kind, self.epochs = base_lr, kind, epochs

    def lr_at(self, global_step: int) -> float:
        if self.kind == "constant":
            return self.base_lr
        return one_cycle(self.base_lr, global_step / max(self.total, 1))


class LearningRateScheduler(Callback):
    """Keras's: ``schedule(epoch, lr) -> new lr`` at the start of each epoch."""

    def __init__(self, schedule, verbose: int = 0):
        self.schedule, self.verbose = schedule, verbose

    def on_train_begin(self, net, epochs, steps):
        self.net = net

    def on_epoch_begin(self, epoch):
        lr = float(self.schedule(epoch, float(self.net.optimizer.lr)))
        if not (math.isfinite(lr) and lr > 0):
            raise ValueError(f"LearningRateScheduler: the schedule gave {lr!r} for epoch {epoch}; "
                             "a learning rate must be a positive number")
        self.net.optimizer.lr = lr
        if self.verbose:
            print(f"epoch {epoch + 1}: learning rate {lr:.3g}")
