"""What defines a ``dcnn train`` run: ``TrainConfig`` (saved in its checkpoint), resolved once
against its preset into a ``RunPlan``, and the rules for changing it on ``--resume``."""
from __future__ import annotations

import math
from pathlib import Path
from dataclasses import asdict, dataclass, fields

import numpy as np

from ..data import datasets
from ..model import presets


@dataclass
class TrainConfig:
    """What defines a run (saved in its checkpoint).  ``None`` means "the preset's choice".

    ``dataset`` is a built-in dataset's name or the path of your own data (an image folder with
    one subfolder per class, or a .npz file); None: the preset's own (fashion-mosaic for unet), else
    fashion-mnist; ``image_size`` and ``channels`` apply to image folders; ``stream``: the image
    folder is streamed (``dcnn train --workers N``), not decoded into memory; ``val_split`` holds
    that share of the training images out as a validation set.
    """
    dataset: str | None = None
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
    stream: bool = False

    def resolve(self) -> "RunPlan":
        """The run's whole plan, resolved once: the configuration with the preset's defaults filled in
        and every value checked, the preset itself and the optimiser's options."""
        preset = presets.get_preset(self.model)
        c = TrainConfig(**asdict(self))
        c.model, c.dataset = preset.name, datasets.canonical(self.dataset or preset.dataset or "fashion-mnist")
        c.epochs = preset.epochs if c.epochs is None else c.epochs
        c.batch_size = preset.batch_size if c.batch_size is None else c.batch_size
        c.optimizer = (preset.optimizer if c.optimizer is None else c.optimizer).lower()
        c.lr = preset.lr if c.lr is None else c.lr
        c.augment = preset.augment if c.augment is None else bool(c.augment)
        check_task(preset, c.dataset, augment=c.augment, stream=c.stream)
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
        if c.stream and not (datasets.is_path(c.dataset) and Path(c.dataset).expanduser().is_dir()):
            raise ValueError(f"streaming (--workers) reads an image folder (--data FOLDER); {c.dataset} is not one")
        if c.stream and c.val_split is not None:
            raise ValueError("--val-split is not supported with --workers yet: give a folder with train/ and test/")
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


def check_task(preset: presets.Preset, dataset: str, *, augment: bool = False, stream: bool = False) -> None:
    """Refuse a dataset of the other task (your own data is checked once loaded: ``check_data_task``)
    and the options that a per-pixel preset cannot use."""
    if preset.task == "segmentation" and stream:
        raise ValueError(f"--workers streams a folder of pictures with one label each; the {preset.name} preset "
                         "learns a label per pixel from masks held in memory: leave out --workers")
    if preset.task == "segmentation" and augment:
        raise ValueError(f"--augment shifts and flips each training image but not its mask, so the {preset.name} "
                         "preset's per-pixel labels would no longer match the pixels: leave out --augment")
    task = datasets.task(dataset)
    if task is not None and task != preset.task:
        raise ValueError(task_mismatch(preset, dataset, task))


def check_data_task(preset: presets.Preset, data) -> None:
    """A loaded dataset (your own data too) against the preset's task."""
    task = getattr(data, "task", "classification")      # a streamed folder: one label per picture
    if task != preset.task:
        raise ValueError(task_mismatch(preset, data.name, task))


def task_mismatch(preset: presets.Preset, dataset: str, task: str) -> str:
    """Why ``preset`` cannot train on ``dataset`` (of ``task``), and what would."""
    suited = [p.name for p in presets.all_presets().values() if p.task == task]
    if preset.task == "segmentation":
        return (f"the {preset.name} preset labels every pixel (segmentation) and needs a dataset of masks, such as "
                f"--dataset {preset.dataset or 'fashion-mosaic'}; {dataset} has one label per image "
                f"(classification): train it with a classifier ({', '.join(suited)})")
    return (f"the {preset.name} preset gives one label per image (classification); {dataset} labels every pixel "
            f"(segmentation): train it with --model {' or '.join(suited) or '...'}")


def _positive_int(what, value, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{what} must be an integer >= {minimum}; got {value!r}")


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
