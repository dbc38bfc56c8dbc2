"""The divergence guard and progress display of ``dcnn train``: ``Monitor``.

It reads the device's running sums only every ``log_every`` batches (each read waits for the
GPU), drives the tqdm bar, times the epochs and keeps, on the device and without syncing,
the first step whose loss was not finite.
"""
from __future__ import annotations

import math
import os
import sys
import time

from ..model.callbacks import Callback


class Monitor(Callback):
    """Progress bar, epoch timing and the watch for a loss that is not finite or runs away,
    reading the device every ``log_every`` steps.

    Divergence rule (also in the README), judged on the *training* loss: with C classes, a
    logging interval's mean training loss is *runaway* when it is above
    ``limit = max(ln C, 3 * min(lowest, ln C))``, where ``lowest`` is the lowest interval mean of
    this run so far (on resume, also the checkpoint's last epoch loss).  So: worse than a uniform
    guess (ln C), and 3x worse than the loss the run had reached (at most ln C, so a run that
    blows up at its very start is caught too).  Training stops after ``patience`` runaway
    intervals in a row, or at the end of an epoch whose mean training loss is above the limit
    (checked before that epoch's checkpoint is written, so the run folder keeps the last good
    epoch) unless the epoch recovered by its end: its last interval, and its test loss, under the
    limit.  A NaN or infinite loss, training or test, stops at once.  The test loss never stops
    a run on its own: a test loss that rises while the training loss falls is overfitting, which
    best.safetensors (the best epoch by the preset's monitor) and early stopping handle.
    """

    FACTOR = 3.0

    def __init__(self, log_every: int = 10, progress: bool = True, file=None, echo=None, patience: int = 3,
                 reference_loss: float | None = None, held_out: str = "test"):
        self.held_out = held_out     # what the val_* metrics measure: "test" or "val" (a validation split)
        self.log_every, self.progress, self.file, self.echo = max(1, int(log_every)), progress, file, echo
        self.patience = max(1, int(patience))
        self.lowest = reference_loss if reference_loss is not None and math.isfinite(reference_loss) else None
        self.streak = 0
        self.bad_step = None
        self.failure = None          # (epoch, step) of the first non-finite or runaway loss, 1-based
        self.reason = None           # "nonfinite", "nonfinite-test", "runaway" or "epoch"
        self.runaway_loss = None
        self.epoch_seconds = []
        self.images = 0

    def on_train_begin(self, net, epochs, steps):
        self.net, self.epochs, self.steps = net, epochs, steps
        self.bad_step = self._device_int(-1)
        self.uniform_loss = math.log(max(net.num_classes, 2))
        # fit's running hit count is per output position: per pixel for a segmentation model
        self.positions = math.prod(net.output_shape[1:])

    @property
    def limit(self) -> float:
        """The loss above which an interval counts as runaway (see the class docstring)."""
        reached = self.uniform_loss if self.lowest is None else min(self.lowest, self.uniform_loss)
        return max(self.uniform_loss, self.FACTOR * reached)

    def _device_int(self, value):
        b = self.net.backend
        return b.xp.asarray(value, dtype=b.xp.int64, device=b.device)

    def on_epoch_begin(self, epoch):
        self.epoch, self.last_step, self.shown, self.seen = epoch, -1, 0, 0
        self.wait_sum, self.wait_steps = 0.0, 0     # seconds the steps waited for data (a loader's last_wait)
        self.interval_start = (0.0, 0)      # (loss sum, images) at the last read
        self.step_on_device = self._device_int(0)
        self.t0 = time.perf_counter()
        self.bar = None
        if self.progress:
            from tqdm.auto import tqdm
            file = self.file or sys.stderr
            self.bar = tqdm(total=self.steps, desc=f"epoch {epoch + 1}/{self.epochs}", unit="batch",
                            file=file, dynamic_ncols=_is_terminal(file), ncols=_columns(file), leave=True,
                            bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}{postfix}]")

    def on_batch_end(self, step, logs):
        b = self.net.backend
        xp = b.xp
        # On the device, no sync: remember the first step whose loss was NaN or Inf.
        self.bad_step = xp.where((self.bad_step < 0) & ~xp.isfinite(logs["loss"]), self.step_on_device,
                                 self.bad_step)
        self.step_on_device += 1
        self.last_step, self.seen = step, logs["seen"]
        if logs.get("data_wait") is not None:      # a host float: no device sync
            self.wait_sum += float(logs["data_wait"])
            self.wait_steps += 1
        last = step + 1 == self.steps
        if (step + 1) % self.log_every and not last and not self.net.stop_training:
            return
        # The one transfer per log interval: running loss sum, correct count, first bad step.
        loss_sum, correct, bad = (float(v) for v in b.to_numpy(xp.stack([
            xp.astype(logs["loss_sum"], xp.float64), xp.astype(logs["correct"], xp.float64),
            xp.astype(self.bad_step, xp.float64)])))
        bad = int(bad)
        if bad >= 0 and self.failure is None:
            self.failure, self.reason = (self.epoch + 1, bad + 1), "nonfinite"
            self.net.stop_training = True
        seen = logs["seen"]
        if self.failure is None and seen > self.interval_start[1]:
            self._judge_interval((loss_sum - self.interval_start[0]) / (seen - self.interval_start[1]), step)
        self.interval_start = (loss_sum, seen)
        if last or self.net.stop_training:
            b.synchronize()
            self.epoch_seconds.append(time.perf_counter() - self.t0)
            self.images += seen
        if self.bar is not None:
            elapsed = max(time.perf_counter() - self.t0, 1e-9)
            self.bar.update(step + 1 - self.shown)
            self.shown = step + 1
            self.bar.set_postfix_str(f"loss={loss_sum / seen:.3f} "
                                     f"{'acc' if self.positions == 1 else 'pix acc'}="
                                     f"{correct / (seen * self.positions):.4f} {seen / elapsed:,.0f} img/s"
                                     + self.wait_text() + (" testing..." if last else ""), refresh=last)

    def wait_text(self) -> str:
        """' data 12ms/step (30%)': the mean wait for data per step and its share of the epoch's time so far
        (high: training is data-bound; add --workers), or '' when the data is not streamed."""
        if not self.wait_steps:
            return ""
        share = self.wait_sum / max(time.perf_counter() - self.t0, 1e-9)
        return f" data {1000 * self.wait_sum / self.wait_steps:.0f}ms/step ({min(share, 1):.0%})"

    def _judge_interval(self, mean_loss: float, step: int) -> None:
        if mean_loss > self.limit:
            self.streak += 1
            if self.streak >= self.patience:
                self.failure, self.reason, self.runaway_loss = (self.epoch + 1, step + 1), "runaway", mean_loss
                self.net.stop_training = True
        else:
            self.streak = 0
            self.lowest = mean_loss if self.lowest is None else min(self.lowest, mean_loss)

    def _recovered(self, logs) -> bool:
        """An epoch whose mean training loss was runaway may still end well (a high start, since
        recovered): its last logging interval and, when there is one, its test loss under the limit.
        The test loss can only spare an epoch here, never stop one."""
        return not self.streak and logs.get("val_loss", -math.inf) <= self.limit

    def describe_failure(self) -> str:
        epoch, step = self.failure
        if self.reason == "nonfinite":
            return f"the loss became NaN or infinite at epoch {epoch}, step {step}"
        if self.reason == "nonfinite-test":
            return f"the {self.held_out} loss became NaN or infinite after epoch {epoch}"
        rule = (f"above {self.limit:.3g}, the divergence limit (the larger of ln({self.net.num_classes}) = "
                f"{self.uniform_loss:.3g}, a uniform guess, and {self.FACTOR:g}x the lowest loss reached)")
        if self.reason == "epoch":
            return (f"the loss diverged in epoch {epoch}: its mean training loss was {self.runaway_loss:.4g}, {rule}, "
                    "and it had not recovered by the epoch's end")
        return (f"the loss diverged at epoch {epoch}, step {step}: the mean training loss was "
                f"{self.runaway_loss:.4g} for {self.patience} logging intervals in a row, {rule}")

    def on_epoch_end(self, epoch, logs):
        if self.failure is None and not math.isfinite(logs["loss"]):
            bad = int(self.bad_step)
            self.failure, self.reason = (epoch + 1, bad + 1 if bad >= 0 else self.last_step + 1), "nonfinite"
            self.net.stop_training = True
        if self.failure is None and "val_loss" in logs and not math.isfinite(logs["val_loss"]):
            self.failure, self.reason = (epoch + 1, self.last_step + 1), "nonfinite-test"
            self.net.stop_training = True
        if self.failure is None and logs["loss"] > self.limit and not self._recovered(logs):
            # The epoch's training loss ran away: its weights are not checkpointed.
            self.failure, self.reason, self.runaway_loss = (epoch + 1, self.last_step + 1), "epoch", logs["loss"]
            self.net.stop_training = True
        if self.bar is not None:
            metrics = [k for k in logs if f"val_{k}" in logs and k != "loss"]    # the compiled ones
            if metrics:
                rate = f" {self.seen / self.epoch_seconds[-1]:,.0f} img/s" if self.epoch_seconds else ""
                # Short enough for an 80-column terminal: the held-out metrics come first.
                held = " ".join(f"{_SHORT.get(k, k)}={logs['val_' + k]:.4f}" for k in metrics)
                self.bar.set_postfix_str(f"{self.held_out} {held} loss={logs['val_loss']:.3f}; "
                                         f"train {_SHORT.get(metrics[0], metrics[0])}={logs[metrics[0]]:.3f}{rate}"
                                         f"{self.wait_text()}")
            self.bar.close()
        elif self.echo is not None and self.failure is None:   # no bar: one line per epoch
            self.echo(f"epoch {epoch + 1}/{self.epochs}  " + "  ".join(
                f"{k.replace('val_', self.held_out + '_')}={v:.4f}" for k, v in logs.items())
                + f"  ({self.epoch_seconds[-1] if self.epoch_seconds else 0:.1f}s{self.wait_text()})")

    @property
    def images_per_second(self) -> float:
        return self.images / max(sum(self.epoch_seconds), 1e-9)


_SHORT = {"accuracy": "acc", "pixel_accuracy": "pix acc"}     # names on the progress bar


def _columns(stream) -> int | None:
    """A terminal's width is read as it changes (dynamic_ncols); elsewhere $COLUMNS, when set, caps the bar."""
    text = os.environ.get("COLUMNS", "")
    return int(text) if not _is_terminal(stream) and text.isdigit() and int(text) > 0 else None


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
