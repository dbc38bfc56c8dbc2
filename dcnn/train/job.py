"""The training job behind ``dcnn train``: data, preset, schedule, progress, checkpoints, resume.

``train(config, out_dir)`` runs it and returns a summary dict.  The pieces are
callbacks on ``DCNNetwork.fit``:

- ``LRSchedule`` (dcnn.train.callbacks) sets ``net.optimizer.lr`` before each step from (epoch, step)
  alone, so a resumed run follows the same schedule;
- ``Monitor`` (dcnn.train.monitor), the divergence guard and progress bar;
- ``Checkpointer`` writes the checkpoint after each complete epoch (see ``dcnn.io.checkpoint``).
- with ``config.stream`` (``--workers N``) the image folder is streamed through ``dcnn.data.loader.Loader``
  (``dcnn.train.stream``), and ``MidEpochCheckpoints`` (``--checkpoint-every``) also writes the checkpoint
  inside an epoch, with the loader's position and the epoch's running sums, for an exact resume.
- a segmentation preset (unet) compiles its own loss and metrics, keeps best.safetensors by its monitor
  (val_miou), and its summary adds the test set's mIoU, per-class IoU and pixel confusion matrix.

Ctrl-C finishes the current batch, writes a checkpoint and raises ``Interrupted``.  A run that
stops (diverged, failed) keeps the run folder as it was after its last good epoch; one that never
wrote a checkpoint removes the folder it created, so that the next run takes its name again.
"""
from __future__ import annotations

import functools
import shlex
import signal
import threading
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

import backends

from .. import distributed
from ..data import datasets
from ..data.loader import WorkerError
from ..io import checkpoint, runfolder
from ..model import presets
from ..model import fitting
from ..model.callbacks import Callback
from .augment import RandomShiftFlip
from .callbacks import LRSchedule
from .config import TrainConfig, check_data_task, merge_resume_config
from .metrics import final_confusion_matrix, segmentation_scores
from .monitor import Monitor
from .stream import MidEpochCheckpoints, ResumeLR, StreamData


class TrainingError(Exception):
    """Training stopped early; the message says why and what to do."""


class Diverged(TrainingError):
    pass


class Interrupted(TrainingError):
    pass


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

def train(config: TrainConfig, out_dir, *, resume: bool = False, requested: dict | None = None,
          backend=None, progress: bool = True, log_every: int = 10, dataset: datasets.Dataset | None = None,
          callbacks=(), echo=print, workers: int = 0, strict_data: bool = False,
          checkpoint_every: int | None = None) -> dict:
    """Run (or resume) a training job into ``out_dir``; returns the summary.

    Raises ``Diverged`` on a non-finite or runaway training loss (see ``Monitor``; the last good
    checkpoint is kept, and the message ends with a learning rate to try, from ``suggest_lr``) and
    ``Interrupted`` after Ctrl-C (a checkpoint of the current state is written).
    ``dataset`` bypasses loading (tests pass small arrays).  A config with ``stream`` streams its image
    folder through ``workers`` worker processes (``dcnn.train.stream``); ``strict_data`` stops on an
    unreadable image; ``checkpoint_every`` also writes a checkpoint every that many steps inside an epoch.
    """
    options = {"workers": workers, "strict_data": strict_data, "checkpoint_every": checkpoint_every}
    out_dir = Path(out_dir)
    if resume and not (out_dir / checkpoint.CHECKPOINT).is_file():
        checkpoint.load(out_dir)                        # raises the error that says what is missing
    if not distributed.is_lead():   # under mpirun, rank 0 alone checks, locks and writes the run folder
        return _train(config, out_dir, resume=resume, requested=requested, backend=backend, progress=progress,
                      log_every=log_every, dataset=dataset, callbacks=callbacks, echo=echo, **options)
    # Checked, locked and tidied before any data is loaded or any epoch is spent.
    with runfolder.open_run_folder(out_dir) as folder:
        try:
            if not resume and (out_dir / checkpoint.CHECKPOINT).exists():   # checked again under the lock
                raise ValueError(f"{out_dir} already holds a run; pass --resume to continue it, or choose another "
                                 "--out")
            if folder.removed_leftovers:
                echo(f"removed {len(folder.removed_leftovers)} temporary file(s) left in {out_dir} by an earlier, "
                     f"interrupted write: {', '.join(folder.removed_leftovers)}")
            return _train(config, out_dir, resume=resume, requested=requested, backend=backend, progress=progress,
                          log_every=log_every, dataset=dataset, callbacks=callbacks, echo=echo, **options)
        except BaseException:
            # A run that never finished an epoch leaves no folder (holding only .lock) behind, so that
            # its name is free again; a folder that was there before is left as it was.
            if not (out_dir / checkpoint.CHECKPOINT).exists():
                folder.discard()
            raise


# The top of each optimiser's usual learning-rate range: a suggestion never goes above it.
USUAL_MAX_LR = {"adam": 1e-2, "adamw": 1e-2, "sgd": 0.1}


def suggest_lr(optimizer: str, failed_lr: float, preset: presets.Preset) -> float:
    """A learning rate to try after ``failed_lr`` diverged (see ``_suggestion``)."""
    return _suggestion(optimizer, failed_lr, preset)[0]


def _suggestion(optimizer: str, failed_lr: float, preset: presets.Preset) -> tuple[float, str]:
    """(lr, why): the preset's default if the run went above it with the preset's optimiser, else a
    tenth of ``failed_lr``; never above the optimiser's usual range."""
    if optimizer == preset.optimizer and failed_lr > preset.lr:
        lr, why = preset.lr, f"the {preset.name} preset's default"
    else:
        lr, why = failed_lr / 10, f"a tenth of {failed_lr:g}"
    top = USUAL_MAX_LR.get(optimizer, 1e-2)
    return (top, f"the top of {optimizer}'s usual range") if lr > top else (lr, why)


def _lr_text(lr: float) -> str:
    """A learning rate as a short decimal that parses back (0.002, 0.0003)."""
    return f"{float(f'{lr:.2g}'):g}" if lr >= 1e-4 else f"{lr:.2g}"


def _train(config, out_dir, *, resume, requested, backend, progress, log_every, dataset, callbacks, echo, workers,
           strict_data, checkpoint_every) -> dict:
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
    if config.stream:      # file names only; the pictures are decoded a batch at a time
        data = StreamData(config.dataset, batch_size=config.batch_size, seed=config.seed, workers=workers,
                          strict=strict_data, image_size=config.image_size, channels=config.channels,
                          limit=config.limit, rank=0 if comm is None else comm.rank,
                          ranks=1 if comm is None else comm.size)
        validation = data.test
    else:
        if dataset is None:
            dataset = datasets.load(config.dataset, config.data_dir, progress=progress, image_size=config.image_size,
                                    channels=config.channels)
        data = dataset.limit(config.limit)
        validation = (data.x_test, data.y_test) if len(data.y_test) else None
    held_out = "test"
    if config.val_split:                  # validation from the training images; the test set waits to the end
        data, validation = data.split_validation(config.val_split, config.seed)
        held_out = "val"

    check_data_task(preset, data)
    net = preset.build(data.input_shape, data.num_classes, seed=config.seed, backend=backend)
    net.compile(config.optimizer, loss=preset.loss, metrics=list(preset.metrics), lr=config.lr,
                label_smoothing=preset.label_smoothing, **plan.optimizer_options)
    augment = RandomShiftFlip(backend, config.seed, pad=preset.augment_shift) if config.augment else None
    parallel = None if comm is None else distributed.DataParallel(net, comm, augment=augment)
    history: dict = {}
    initial_epoch, mid = 0, None
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
                                     weights_metadata=_weights_metadata(config, data), monitor=preset.monitor)
        note, mid = "", saved.get("mid_epoch")
        if mid is not None:
            data.train.load_state_dict({**mid["loader"], "rank": data.train.rank})   # rank 0 wrote it
            note = f" (and {mid['step']} steps of epoch {mid['epoch'] + 1}: it continues at the next batch)"
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
        write = checkpoint.save if parallel is None else parallel.save_checkpoint
        saver = Checkpointer(out_dir, config_dict, history, monitor, augment, weights_meta, interrupt=sigint,
                             write=functools.partial(write, monitor=preset.monitor))
        schedule = LRSchedule(config.lr, preset.schedule, config.epochs)
        cbs = [schedule, *([ResumeLR(schedule, mid["step"])] if mid else []),
               *(parallel.callbacks(sigint, log_every) if parallel is not None else ()), monitor, saver, *callbacks]
        if config.stream and checkpoint_every:
            cbs.append(MidEpochCheckpoints(checkpoint_every, data.train, saver._save))
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # a NaN is reported below
            if config.stream:
                sums = None if mid is None else (mid["sums"]["loss"], mid["sums"]["correct"], mid["sums"]["seen"])
                try:
                    fitting.fit_loader(net, data.train, epochs=config.epochs, validation_data=validation, verbose=0,
                                       callbacks=cbs, initial_epoch=initial_epoch, augment=augment, initial_sums=sums)
                except WorkerError as exc:       # a worker died: one clear line, and how to go on
                    kept = (f"The last checkpoint is kept; continue with: dcnn train --resume --out "
                            f"{shlex.quote(str(out_dir))} --workers {workers}"
                            if (out_dir / checkpoint.CHECKPOINT).is_file() else "No checkpoint was written yet")
                    raise TrainingError(f"{exc}. {kept}") from None
                data.close()
            else:
                net.fit(data.x_train, data.y_train, epochs=config.epochs, batch_size=config.batch_size,
                        validation_data=validation, verbose=0, callbacks=cbs,
                        initial_epoch=initial_epoch, augment=augment)

    if monitor.failure is not None:
        lower, why = _suggestion(config.optimizer, config.lr, preset)
        if (out_dir / checkpoint.CHECKPOINT).is_file():
            good = initial_epoch if saver.saved_epoch is None else saver.saved_epoch
            best = checkpoint.best_epoch(history, preset.monitor)
            kept = f"the last good checkpoint (epoch {good}) is kept in {out_dir}"
            if best is not None:
                kept += (f", and the best weights (epoch {best}, {_logged_name(preset.monitor, held_out)} "
                         f"{history[preset.monitor][best - 1]:.4f}) in {out_dir / checkpoint.BEST}")
            # The whole command: it continues to the epochs asked for, at a rate that should not diverge.
            kept += (f". Continue at a lower learning rate ({why}): dcnn train --resume --out "
                     f"{shlex.quote(str(out_dir))} --epochs {config.epochs} --lr {_lr_text(lower)}")
        else:
            kept = (f"no checkpoint was written. Try a lower learning rate ({why}), e.g. --lr {_lr_text(lower)}, "
                    "or a smaller --batch-size")
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
    best = checkpoint.best_epoch(history, preset.monitor)
    dense = {}
    if preset.task == "segmentation" and len(data.y_test):   # the final weights, from one pixel confusion matrix
        # The latest pass was over the test set with these weights: the last epoch's, or evaluate's just above.
        tested = comm is None and (held_out == "val" or not net.stop_training)
        counts = final_confusion_matrix(net, data.x_test, data.y_test, config.batch_size, last_pass_was_this=tested)
        dense = {f"test_{k}": v for k, v in segmentation_scores(counts, data.classes).items() if k != "pixels"}
    seconds = time.perf_counter() - started
    return {
        "dataset": config.dataset, "model": config.model, "backend": backend.describe(),
        "epochs": len(history.get("loss", [])), "batch_size": config.batch_size, "optimizer": config.optimizer,
        "lr": config.lr, "seed": config.seed, "train_images": int(len(data.y_train)),
        "ranks": 1 if comm is None else comm.size,
        "seconds": round(seconds, 2), "train_seconds": round(sum(monitor.epoch_seconds), 2),
        "train_loss": last.get("loss"), "train_accuracy": last.get("accuracy"),
        "test_loss": test["loss"], "test_accuracy": test.get("accuracy"), "test_images": int(len(data.y_test)),
        "task": preset.task, **dense,
        **({"val_loss": last.get("val_loss"), "val_accuracy": last.get("val_accuracy"),
            **{k: v for k, v in last.items() if k.startswith("val_")},
            "val_images": int(len(validation[1]))} if held_out == "val" else {}),
        "images_per_second": round(monitor.images_per_second, 1) if monitor.images else None,
        "out": str(out_dir), "weights": str(out_dir / checkpoint.WEIGHTS),
        "monitor": preset.monitor, "best_epoch": best,
        "best_weights": str(out_dir / checkpoint.BEST) if best is not None else None,
        "history": history,
    }


def _count(n: int, noun: str) -> str:
    """"1 epoch", "4 epochs"."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _weights_metadata(config: TrainConfig, data) -> dict:
    return {"preset": config.model, "dataset": config.dataset, "task": getattr(data, "task", "classification"),
            "classes": list(data.classes)}


def _logged_name(key: str, held_out: str) -> str:
    """'val_miou' -> 'test miou' (or 'val miou' with a validation split)."""
    return key.replace("val_", held_out + " ", 1).replace("_", " ")


def _plot_curves(history, out_dir, echo):
    """curves.png via dcnn.viz when matplotlib is installed; without it, a note says how to get it."""
    if not history.get("loss"):
        return
    try:
        import matplotlib  # noqa: F401

        from ..viz import plot_training_curves
    except ImportError:
        echo("note: curves.png was not drawn: matplotlib is not installed (pip install matplotlib; "
             "dcnn visualize draws it later)")
        return
    try:
        plot_training_curves(history, Path(out_dir) / "curves.png")
    except Exception as exc:  # a plot must never lose a finished run
        echo(f"note: could not draw the training curves ({type(exc).__name__}: {exc})")
