"""The training job behind ``dcnn train``: data, preset, schedule, progress, checkpoints, resume.

``train(config, out_dir)`` runs it and returns a summary dict.  The pieces are
callbacks on ``DCNNetwork.fit``:

- ``LRSchedule`` sets ``net.optimizer.lr`` before each step from (epoch, step) alone,
  so a resumed run follows the same schedule;
- ``Monitor`` reads the device's running sums only every ``log_every`` batches (each
  read waits for the GPU), drives the tqdm bar, times the epochs and keeps, on the
  device and without syncing, the first step whose loss was not finite;
- ``Checkpointer`` writes the checkpoint after each complete epoch (see ``dcnn.checkpoint``).

Ctrl-C finishes the current batch, writes a checkpoint and raises ``Interrupted``.
"""
from __future__ import annotations

import math
import os
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

import backends
from . import checkpoint, datasets, distributed, presets, runfolder
from .callbacks import Callback, StepwiseLR, one_cycle


class TrainingError(Exception):
    """Training stopped early; the message says why and what to do."""


class Diverged(TrainingError):
    pass


class Interrupted(TrainingError):
    pass


@dataclass
class TrainConfig:
    """What defines a run (saved in its checkpoint).  ``None`` means "the preset's choice".

    ``dataset`` is a built-in dataset's name or the path of your own data (an image folder with
    one subfolder per class, or a .npz file); ``image_size`` and ``channels`` apply to image
    folders; ``val_split`` holds that share of the training images out as a validation set.
    """
    dataset: str = "fashion-mnist"
    model: str = presets.DEFAULT
    epochs: int | None = None
    batch_size: int | None = None
    optimizer: str | None = None
    lr: float | None = None
    seed: int = 0
    limit: int | None = None
    augment: bool | None = None
    data_dir: str | None = None
    val_split: float | None = None
    image_size: list | None = None
    channels: int | None = None

    def resolve(self) -> "RunPlan":
        """The run's whole plan, resolved once: the configuration with the preset's defaults filled in
        and every value checked, the preset itself and the optimiser's options."""
        preset = presets.get_preset(self.model)
        c = TrainConfig(**asdict(self))
        c.model, c.dataset = preset.name, datasets.canonical(self.dataset)
        c.epochs = preset.epochs if c.epochs is None else c.epochs
        c.batch_size = preset.batch_size if c.batch_size is None else c.batch_size
        c.optimizer = (preset.optimizer if c.optimizer is None else c.optimizer).lower()
        c.lr = preset.lr if c.lr is None else c.lr
        c.augment = preset.augment if c.augment is None else bool(c.augment)
        _positive_int("epochs", c.epochs, minimum=1)
        _positive_int("batch size", c.batch_size, minimum=1)
        if c.limit is not None:
            _positive_int("limit", c.limit, minimum=1)
        _positive_int("seed", c.seed, minimum=0)
        if c.optimizer not in ("sgd", "adam", "adamw"):
            raise ValueError(f"unknown optimizer {c.optimizer!r}; valid ones are: sgd, adam, adamw")
        if not (isinstance(c.lr, (int, float)) and math.isfinite(c.lr) and c.lr > 0):
            raise ValueError(f"learning rate must be a positive number; got {c.lr!r}")
        c.lr = float(c.lr)
        if c.val_split is not None and not (isinstance(c.val_split, (int, float)) and 0 < c.val_split < 1):
            raise ValueError(f"the validation split must be a fraction between 0 and 1; got {c.val_split!r}")
        if c.optimizer == preset.optimizer:
            options = dict(preset.optimizer_options)
        else:
            options = {"momentum": 0.9} if c.optimizer == "sgd" else {}
        return RunPlan(c, preset, options)

    def resolved(self) -> "TrainConfig":
        """A copy with the preset's defaults filled in and every value checked."""
        return self.resolve().config

    def optimizer_options(self) -> dict:
        return self.resolve().optimizer_options


@dataclass(frozen=True)
class RunPlan:
    config: TrainConfig
    preset: presets.Preset
    optimizer_options: dict


def _positive_int(what, value, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{what} must be an integer >= {minimum}; got {value!r}")


# --- schedule, augmentation ---------------------------------------------------------------------

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


class RandomShiftFlip:
    """Augmentation on the device: a random shift of up to ``pad`` pixels (zero fill) and,
    optionally, a random left-right flip, per image.

    The Python loops run over the 2*pad+1 possible shifts, never over images or pixels.
    The random numbers are drawn on the device (no per-batch upload) from the backend's
    generator, whose state is checkpointed where the backend can save it (the CPU).
    """

    def __init__(self, backend, seed: int, pad: int = 2, flip: bool = True):
        self.backend, self.pad, self.flip = backend, int(pad), bool(flip)
        stream_seed = int(np.random.SeedSequence([int(seed), 0xA06]).generate_state(1, np.uint64)[0])
        self.generator = backend.random_generator(stream_seed)

    @property
    def state(self):
        return self.generator.state

    @state.setter
    def state(self, value):
        self.generator.state = value

    def __call__(self, x):
        b, xp = self.backend, self.backend.xp
        n, c, h, w = x.shape
        draws = self.generator.random((3, n, 1, 1, 1), x.dtype)    # flip, row shift, column shift
        if self.flip:
            x = xp.where(draws[0, ...] < 0.5, xp.flip(x, axis=3), x)
        p = self.pad
        if p:
            # Shift s in [-p, p] with equal chances: s = floor(u * (2p + 1)) - p.
            shifts = xp.astype(xp.floor(draws[1:, ...] * (2 * p + 1)), xp.int64) - p
            padded = xp.zeros((n, c, h + 2 * p, w + 2 * p), dtype=x.dtype, device=b.device)
            padded[:, :, p:p + h, p:p + w] = x
            rows = padded[:, :, p:p + h, :]
            for s in range(-p, p + 1):
                if s:
                    rows = xp.where(shifts[0, ...] == s, padded[:, :, p + s:p + s + h, :], rows)
            x = rows[:, :, :, p:p + w]
            for s in range(-p, p + 1):
                if s:
                    x = xp.where(shifts[1, ...] == s, rows[:, :, :, p + s:p + s + w], x)
        return x


# --- monitoring, checkpoints, interruption ------------------------------------------------------

class Monitor(Callback):
    """Progress bar, epoch timing and the watch for a loss that is not finite or runs away,
    reading the device every ``log_every`` steps.

    Divergence rule (also in the README): with C classes, a logging interval's mean training
    loss is *runaway* when it is above ``limit = max(ln C, 3 * min(lowest, ln C))``, where
    ``lowest`` is the lowest interval mean of this run so far (on resume, also the checkpoint's
    last epoch loss).  So: worse than a uniform guess (ln C), and 3x worse than the loss the
    run had reached (at most ln C, so a run that blows up at its very start is caught too).
    ``patience`` runaway intervals in a row stop training; so does a test loss above the limit
    at the end of an epoch, before that epoch's checkpoint is written.
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
        self.reason = None           # "nonfinite", "runaway" or "test"
        self.runaway_loss = None
        self.epoch_seconds = []
        self.images = 0

    def on_train_begin(self, net, epochs, steps):
        self.net, self.epochs, self.steps = net, epochs, steps
        self.bad_step = self._device_int(-1)
        self.uniform_loss = math.log(max(net.num_classes, 2))

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
                                     f"acc={correct / seen:.4f} {seen / elapsed:,.0f} img/s"
                                     + (" testing..." if last else ""), refresh=last)

    def _judge_interval(self, mean_loss: float, step: int) -> None:
        if mean_loss > self.limit:
            self.streak += 1
            if self.streak >= self.patience:
                self.failure, self.reason, self.runaway_loss = (self.epoch + 1, step + 1), "runaway", mean_loss
                self.net.stop_training = True
        else:
            self.streak = 0
            self.lowest = mean_loss if self.lowest is None else min(self.lowest, mean_loss)

    def describe_failure(self) -> str:
        epoch, step = self.failure
        if self.reason == "nonfinite":
            return f"the loss became NaN or infinite at epoch {epoch}, step {step}"
        rule = (f"above {self.limit:.3g}, the divergence limit (the larger of ln({self.net.num_classes}) = "
                f"{self.uniform_loss:.3g}, a uniform guess, and {self.FACTOR:g}x the lowest loss reached)")
        if self.reason == "test":
            return f"the loss diverged: after epoch {epoch} the test loss was {self.runaway_loss:.4g}, {rule}"
        return (f"the loss diverged at epoch {epoch}, step {step}: the mean training loss was "
                f"{self.runaway_loss:.4g} for {self.patience} logging intervals in a row, {rule}")

    def on_epoch_end(self, epoch, logs):
        if self.failure is None and not math.isfinite(logs["loss"]):
            bad = int(self.bad_step)
            self.failure, self.reason = (epoch + 1, bad + 1 if bad >= 0 else self.last_step + 1), "nonfinite"
            self.net.stop_training = True
        if self.failure is None and "val_loss" in logs:
            # The epoch's weights, judged on held-out data before the Checkpointer keeps them.
            if not math.isfinite(logs["val_loss"]) or logs["val_loss"] > self.limit:
                self.failure, self.reason, self.runaway_loss = (epoch + 1, self.last_step + 1), "test", logs["val_loss"]
                self.net.stop_training = True
        if self.bar is not None:
            if "val_accuracy" in logs:
                rate = f" {self.seen / self.epoch_seconds[-1]:,.0f} img/s" if self.epoch_seconds else ""
                # Short enough for an 80-column terminal: the held-out accuracy comes first.
                self.bar.set_postfix_str(f"{self.held_out} acc={logs['val_accuracy']:.4f} "
                                         f"loss={logs['val_loss']:.3f}; train acc={logs['accuracy']:.3f}{rate}")
            self.bar.close()
        elif self.echo is not None and self.failure is None:   # no bar: one line per epoch
            self.echo(f"epoch {epoch + 1}/{self.epochs}  " + "  ".join(
                f"{k.replace('val_', self.held_out + '_')}={v:.4f}" for k, v in logs.items())
                + f"  ({self.epoch_seconds[-1] if self.epoch_seconds else 0:.1f}s)")

    @property
    def images_per_second(self) -> float:
        return self.images / max(sum(self.epoch_seconds), 1e-9)


def _columns(stream) -> int | None:
    """A terminal's width is read as it changes (dynamic_ncols); elsewhere $COLUMNS, when set, caps the bar."""
    text = os.environ.get("COLUMNS", "")
    return int(text) if not _is_terminal(stream) and text.isdigit() and int(text) > 0 else None


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class Checkpointer(Callback):
    """After each complete epoch: append to the history and write the checkpoint."""

    def __init__(self, out_dir, config: dict, history: dict, monitor: Monitor, augment=None,
                 weights_metadata=None, interrupt=None, write=checkpoint.save):
        self.out_dir, self.config, self.history, self.write = Path(out_dir), config, history, write
        self.monitor, self.augment, self.weights_metadata = monitor, augment, weights_metadata
        self.interrupt = interrupt
        self.saved_epoch = None
        self.partial = None

    def on_train_begin(self, net, epochs, steps):
        self.net, self.steps = net, steps

    def on_epoch_end(self, epoch, logs):
        if self.monitor.failure is not None:
            return                                    # keep the last good checkpoint
        complete = self.monitor.last_step + 1 == self.steps
        if complete:
            for key, value in logs.items():
                self.history.setdefault(key, []).append(float(value))
            self.history.setdefault("seconds", []).append(round(self.monitor.epoch_seconds[-1], 3))
            self._save(epoch + 1)
            self.saved_epoch = epoch + 1
        elif self.interrupt is not None and self.interrupt.requested:
            # Ctrl-C mid-epoch: keep what was learnt; --resume restarts this epoch from its first batch.
            self.partial = (epoch + 1, self.monitor.last_step + 1)
            self._save(epoch, extra={"interrupted": {"epoch": epoch + 1, "step": self.monitor.last_step + 1}})

    def _save(self, epochs_done, extra=None):
        try:
            self.write(self.out_dir, self.net, epoch=epochs_done, config=self.config, history=self.history,
                       augment=self.augment, extra=extra, weights_metadata=self.weights_metadata)
        except OSError as exc:
            # Atomic writes: the previous checkpoint is still whole.
            kept = (f"the checkpoint of epoch {self.saved_epoch} is intact" if self.saved_epoch is not None
                    else "any earlier checkpoint there is intact")
            raise runfolder.RunFolderError(
                exc.errno, f"could not write the checkpoint of epoch {epochs_done} into {self.out_dir}: "
                           f"{runfolder.describe_os_error(exc)}. {kept}; continue with: dcnn train --resume "
                           f"--out {self.out_dir}") from None


class _SigintHandler:
    """The first Ctrl-C asks fit to stop after the current batch; a second one stops at once.

    With several ranks (``immediate=False``) it only raises the flag: the ranks agree on it at
    the next log interval (``distributed.StopSync``) and stop together."""

    def __init__(self, net, echo, immediate: bool = True):
        self.net, self.echo, self.requested, self.previous = net, echo, False, None
        self.immediate = immediate

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        self.requested = True
        if self.immediate:
            self.net.stop_training = True
        signal.signal(signal.SIGINT, self.previous or signal.default_int_handler)
        self.echo("\ninterrupted: finishing the current batch and writing a checkpoint (Ctrl-C again to quit now)")

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
        return False


# --- the job --------------------------------------------------------------------------------------

RESUMABLE_CHANGES = ("epochs", "lr", "data_dir")


def merge_resume_config(saved: dict, requested: dict) -> TrainConfig:
    """The saved configuration, with the options given again on the command line checked against it.

    Only ``epochs``, ``lr`` and ``data_dir`` may change on resume (``requested`` holds the
    options the user gave explicitly); anything else would make a different run.
    """
    known = {f.name for f in fields(TrainConfig)}
    config = TrainConfig(**{k: v for k, v in saved.items() if k in known})
    for key, value in requested.items():
        if value is None or key not in known:
            continue
        current = getattr(config, key)
        if key in ("model", "dataset"):
            same = (presets.get_preset(value).name if key == "model" else datasets.canonical(value)) == current
        else:
            same = value == current
        if same:
            continue
        if key not in RESUMABLE_CHANGES:
            raise ValueError(f"--{key.replace('_', '-')} {value} differs from the checkpoint's {current}; a resumed "
                             f"run keeps its {key.replace('_', ' ')} (start a new run with another --out instead)")
        setattr(config, key, value)
    return config


def train(config: TrainConfig, out_dir, *, resume: bool = False, requested: dict | None = None,
          backend=None, progress: bool = True, log_every: int = 10, dataset: datasets.Dataset | None = None,
          callbacks=(), echo=print) -> dict:
    """Run (or resume) a training job into ``out_dir``; returns the summary.

    Raises ``Diverged`` on a non-finite loss (the last good checkpoint is kept) and
    ``Interrupted`` after Ctrl-C (a checkpoint of the current state is written).
    ``dataset`` bypasses loading (tests pass small arrays).
    """
    out_dir = Path(out_dir)
    if resume and not (out_dir / checkpoint.CHECKPOINT).is_file():
        checkpoint.load(out_dir)                        # raises the error that says what is missing
    if not distributed.is_lead():   # under mpirun, rank 0 alone checks, locks and writes the run folder
        return _train(config, out_dir, resume=resume, requested=requested, backend=backend, progress=progress,
                      log_every=log_every, dataset=dataset, callbacks=callbacks, echo=echo)
    # Checked, locked and tidied before any data is loaded or any epoch is spent.
    with runfolder.open_run_folder(out_dir) as folder:
        if not resume and (out_dir / checkpoint.CHECKPOINT).exists():   # checked again under the lock
            raise ValueError(f"{out_dir} already holds a run; pass --resume to continue it, or choose another --out")
        if folder.removed_leftovers:
            echo(f"removed {len(folder.removed_leftovers)} temporary file(s) left in {out_dir} by an earlier, "
                 f"interrupted write: {', '.join(folder.removed_leftovers)}")
        return _train(config, out_dir, resume=resume, requested=requested, backend=backend, progress=progress,
                      log_every=log_every, dataset=dataset, callbacks=callbacks, echo=echo)


def _train(config, out_dir, *, resume, requested, backend, progress, log_every, dataset, callbacks, echo) -> dict:
    started = time.perf_counter()
    saved = None
    comm = distributed.active()     # several ranks under mpirun (dcnn.distributed), else None
    if not distributed.is_lead():   # rank 0 alone prints and writes
        echo, progress = (lambda *args, **kwargs: None), False
    if resume:
        model_arrays, optim_arrays, saved = checkpoint.load(out_dir)
        if requested is None:  # the fields of ``config`` that differ from the defaults
            requested = {k: v for k, v in asdict(config).items() if v != getattr(TrainConfig(), k)}
        config = merge_resume_config(saved["config"], requested)
    plan = config.resolve()
    config, preset = plan.config, plan.preset
    if backend is not None:
        backend = backends.use(backend) if isinstance(backend, str) else backend
    else:
        backend = backends.get_backend()

    compiling = time.perf_counter()
    backend.warm_up()                 # kernels compile here, not inside the first epoch's timing
    compiling = time.perf_counter() - compiling
    if compiling > 2:
        echo(f"  compiled the {backend.name} kernels in {compiling:.0f} s (cached for later runs)")
    if dataset is None:
        dataset = datasets.load(config.dataset, config.data_dir, progress=progress, image_size=config.image_size,
                                channels=config.channels)
    data = dataset.limit(config.limit)
    held_out = "test"
    validation = (data.x_test, data.y_test) if len(data.y_test) else None
    if config.val_split:                  # validation from the training images; the test set waits to the end
        data, validation = data.split_validation(config.val_split, config.seed)
        held_out = "val"

    net = preset.build(data.input_shape, data.num_classes, seed=config.seed, backend=backend)
    net.compile(config.optimizer, lr=config.lr, label_smoothing=preset.label_smoothing, **plan.optimizer_options)
    augment = RandomShiftFlip(backend, config.seed, pad=preset.augment_shift) if config.augment else None
    parallel = None if comm is None else distributed.DataParallel(net, comm, augment=augment)
    history: dict = {}
    initial_epoch = 0
    if saved is not None:
        distributed.check_ranks(saved, 1 if comm is None else comm.size, source=str(out_dir / checkpoint.CHECKPOINT))
        try:
            checkpoint.restore(net, model_arrays, optim_arrays, saved, augment, source=str(out_dir / checkpoint.CHECKPOINT))
        except ValueError as exc:
            raise checkpoint.CheckpointError(str(exc)) from None
        if parallel is not None:
            parallel.restore_streams(saved, augment)
        history = {k: list(v) for k, v in saved["history"].items()}
        initial_epoch = int(saved["epoch"])
        # The checkpoint is the single source: a kill between its write and the others' may have
        # left weights.safetensors, best.safetensors or history.json behind it.
        if distributed.is_lead():
            checkpoint.write_derived(out_dir, net, epoch=initial_epoch, config=saved["config"], history=history,
                                     weights_metadata=_weights_metadata(config, data))
        note = ""
        if saved.get("interrupted"):
            note = (f" (epoch {saved['interrupted']['epoch']} was interrupted at step {saved['interrupted']['step']};"
                    " it restarts from its first batch with the weights learnt so far)")
        echo(f"resuming {out_dir} after epoch {initial_epoch} of {config.epochs}{note}")
        if initial_epoch >= config.epochs:
            echo(f"nothing to do: {initial_epoch} epochs are done; pass --epochs N to train longer")

    if initial_epoch == 0:
        val_note = f", {len(validation[1]):,} validation" if held_out == "val" else ""
        echo(f"training {config.model} ({net.model.param_count():,} parameters) on {data.name}: "
             f"{len(data.y_train):,} training{val_note} and {len(data.y_test):,} test images")
        echo(f"  data from {data.source or 'memory'}; checkpoints to {out_dir}")
        echo(f"  {_count(config.epochs, 'epoch')}, batch {config.batch_size}, {config.optimizer} lr {config.lr:g} "
             f"({preset.schedule}){', augmented' if config.augment else ''}, seed {config.seed}, "
             f"on {backend.describe()}" + (f" x {comm.size} ranks" if comm is not None else ""))
    config_dict = asdict(config)
    weights_meta = _weights_metadata(config, data)
    previous_losses = history.get("loss") or []
    monitor = Monitor(log_every=log_every, progress=progress, echo=echo,
                      reference_loss=previous_losses[-1] if previous_losses else None, held_out=held_out)
    net.stop_training = False
    with _SigintHandler(net, echo, immediate=parallel is None) as sigint:
        saver = Checkpointer(out_dir, config_dict, history, monitor, augment, weights_meta, interrupt=sigint,
                             write=checkpoint.save if parallel is None else parallel.save_checkpoint)
        cbs = [LRSchedule(config.lr, preset.schedule, config.epochs),
               *(parallel.callbacks(sigint, log_every) if parallel is not None else ()), monitor, saver, *callbacks]
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # a NaN is reported below
            net.fit(data.x_train, data.y_train, epochs=config.epochs, batch_size=config.batch_size,
                    validation_data=validation, verbose=0, callbacks=cbs,
                    initial_epoch=initial_epoch, augment=augment)

    if monitor.failure is not None:
        lower = f"{config.lr / 3:.3g}"
        if (out_dir / checkpoint.CHECKPOINT).is_file():
            good = initial_epoch if saver.saved_epoch is None else saver.saved_epoch
            best = checkpoint.best_epoch(history)
            kept = f"the last good checkpoint (epoch {good}) is kept in {out_dir}"
            if best is not None:
                kept += (f", and the best weights (epoch {best}, test accuracy {history['val_accuracy'][best - 1]:.4f})"
                         f" in {out_dir / checkpoint.BEST}")
            kept += f". Try a lower learning rate: dcnn train --resume --out {out_dir} --lr {lower}"
        else:
            kept = f"no checkpoint was written. Try a lower learning rate, e.g. --lr {lower}, or a smaller --batch-size"
        raise Diverged(f"training stopped: {monitor.describe_failure()}; {kept}")
    if sigint.requested:
        where = (f"epoch {saver.partial[0]}, step {saver.partial[1]}" if saver.partial
                 else f"the end of epoch {saver.saved_epoch}")
        raise Interrupted(f"interrupted at {where}; checkpoint written to {out_dir}. "
                          f"Continue with: dcnn train --resume --out {out_dir}")

    if distributed.is_lead():
        _plot_curves(history, out_dir, echo)
    last = {k: v[-1] for k, v in history.items() if v}
    test = {"loss": last.get("val_loss"), "accuracy": last.get("val_accuracy")}
    if held_out == "val":
        test = net.evaluate(data.x_test, data.y_test) if len(data.y_test) else {"loss": None, "accuracy": None}
    seconds = time.perf_counter() - started
    return {
        "dataset": config.dataset, "model": config.model, "backend": backend.describe(),
        "epochs": len(history.get("loss", [])), "batch_size": config.batch_size, "optimizer": config.optimizer,
        "lr": config.lr, "seed": config.seed, "train_images": int(len(data.y_train)),
        "ranks": 1 if comm is None else comm.size,
        "seconds": round(seconds, 2), "train_seconds": round(sum(monitor.epoch_seconds), 2),
        "train_loss": last.get("loss"), "train_accuracy": last.get("accuracy"),
        "test_loss": test["loss"], "test_accuracy": test["accuracy"], "test_images": int(len(data.y_test)),
        **({"val_loss": last.get("val_loss"), "val_accuracy": last.get("val_accuracy"),
            "val_images": int(len(validation[1]))} if held_out == "val" else {}),
        "images_per_second": round(monitor.images_per_second, 1) if monitor.images else None,
        "out": str(out_dir), "weights": str(out_dir / checkpoint.WEIGHTS),
        "history": history,
    }


def _count(n: int, noun: str) -> str:
    """"1 epoch", "4 epochs"."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _weights_metadata(config: TrainConfig, data) -> dict:
    return {"preset": config.model, "dataset": config.dataset, "classes": list(data.classes)}


def _plot_curves(history, out_dir, echo):
    """curves.png via dcnn.viz when matplotlib is installed; without it, a note says how to get it."""
    if not history.get("loss"):
        return
    try:
        import matplotlib  # noqa: F401
        from .viz import plot_training_curves
    except ImportError:
        echo("note: curves.png was not drawn: matplotlib is not installed (pip install matplotlib; "
             "dcnn visualize draws it later)")
        return
    try:
        plot_training_curves(history, Path(out_dir) / "curves.png")
    except Exception as exc:  # a plot must never lose a finished run
        echo(f"note: could not draw the training curves ({type(exc).__name__}: {exc})")
