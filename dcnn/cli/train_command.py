"""``dcnn train``: options to a TrainConfig, then the library's ``dcnn.train.train`` (MPI relaunch included)."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from .common import UsageError, echo_to, expected, fmt_seconds, use_backend

# --- train --------------------------------------------------------------------------------------

def _default_out(dataset: str, model: str, resume: bool) -> Path:
    from ..io import runfolder
    base = Path("runs")
    stem = f"{dataset}-{model}"
    taken = sorted((p for p in base.glob(f"{stem}*") if p.name == stem or p.name[len(stem):].lstrip("-").isdigit()),
                   key=lambda p: (p / "checkpoint.safetensors").stat().st_mtime
                   if (p / "checkpoint.safetensors").exists() else 0)
    if resume:
        with_ckpt = [p for p in taken if (p / "checkpoint.safetensors").exists()]
        if not with_ckpt:
            raise FileNotFoundError(f"no run of {model} on {dataset} to resume under {base}/; pass --out FOLDER")
        return with_ckpt[-1]
    free = lambda p: not p.exists() or runfolder.is_unused(p)   # a run killed before its first epoch left it
    if free(base / stem):
        return base / stem
    n = 2
    while not free(base / f"{stem}-{n}"):
        n += 1
    return base / f"{stem}-{n}"


def _check_image_options(args) -> None:
    """--image-size and --channels shape the pictures of an image folder: refused where they would do nothing."""
    for option, value in (("--image-size", args.image_size), ("--channels", args.channels)):
        if value is None:
            continue
        if args.data is None:
            raise UsageError(f"{option} has no effect without --data: it applies to the pictures of your own image "
                             "folder (--data FOLDER) (see dcnn train --help)")
        if not Path(args.data).is_dir():
            raise UsageError(f"{option} has no effect with --data {args.data}: it applies to image folders only, "
                             "not to .npz files (see dcnn train --help)")


def _check_stream_options(args) -> None:
    """--workers streams an image folder; --strict-data and --checkpoint-every go with it."""
    if args.workers is None:
        for option, value in (("--strict-data", args.strict_data), ("--checkpoint-every", args.checkpoint_every)):
            if value and not args.resume:
                raise UsageError(f"{option} applies to a streamed image folder: add --workers N "
                                 "(see dcnn train --help)")
        return
    if not args.resume and (args.data is None or not Path(args.data).is_dir()):
        raise UsageError(f"--workers streams an image folder: give --data FOLDER"
                         + ("" if args.data is None else f" ({args.data} is not a folder)") + " (see dcnn train --help)")
    if args.val_split is not None:
        raise UsageError("--val-split cannot be used with --workers yet: give a folder with train/ and test/ "
                         "subfolders, or leave out --workers")


def _check_task_options(args) -> None:
    """A segmentation preset with a classification dataset (or the other way round), --augment or
    --workers: refused before anything is loaded, for the reason dcnn.train.config gives."""
    if args.resume:
        return                  # the checkpoint's own configuration, checked when it is resolved
    from ..model import presets
    from ..train.config import check_task
    preset = presets.get_preset(args.model or presets.DEFAULT)
    try:
        check_task(preset, args.data or args.dataset or preset.dataset or "fashion-mnist", augment=bool(args.augment),
                   stream=args.workers is not None)
    except ValueError as exc:
        raise UsageError(f"{exc} (see dcnn train --help)") from None


def cmd_train(args) -> int:
    from .. import distributed
    _check_task_options(args)
    _check_image_options(args)
    _check_stream_options(args)
    if args.ranks and args.ranks > 1 and distributed.launched_size() <= 1:
        return distributed.relaunch(args.ranks, _without_option(args.argv, "--ranks"))
    try:
        comm = distributed.init()           # under mpirun: join the job (a no-op in one process)
    except ImportError as exc:
        raise ValueError(str(exc)) from None
    if comm is None:
        return _train(args)
    from ..train.job import Diverged, Interrupted
    try:
        return _train(args, quiet=not distributed.is_lead())
    except BaseException as exc:
        if not isinstance(exc, (Diverged, Interrupted)):   # those two all ranks raise together
            distributed.fail_together(comm, exc, expected=expected(exc))   # one rank alone: end them all
        raise


def _without_option(argv, name):
    """``argv`` less ``name VALUE`` and ``name=VALUE``."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == name:
            skip = True
        elif not a.startswith(name + "="):
            out.append(a)
    return out


def _stream_if_too_big(args, echo) -> None:
    """An image folder that would not fit in memory once decoded streams, as with --workers 2."""
    if args.workers is not None or args.resume or not args.data or not Path(args.data).is_dir() or args.val_split:
        return
    from ..train.stream import decoded_bytes, memory_budget
    count, size = decoded_bytes(args.data, args.image_size, args.channels)
    if size > memory_budget():
        args.workers = min(2, os.cpu_count() or 1)
        echo(f"{args.data}: {count:,} pictures, {size / 2**30:.1f} GiB once decoded, more than fits in memory "
             f"beside training: streaming them with {args.workers} worker processes (choose with --workers N)")


def _done_line(result: dict) -> str:
    """'done: convnet on fashion-mnist: test accuracy 0.9212 (...) after 4 epochs', mIoU for a segmentation run."""
    epochs = f"{result['epochs']} epoch" + ("" if result["epochs"] == 1 else "s")
    if result.get("test_miou") is not None:
        score = f"test mIoU {result['test_miou']:.4f}, pixel accuracy {result['test_pixel_accuracy']:.4f}"
        val = result.get("val_miou")
        val = f", validation mIoU {val:.4f}" if val is not None else ""
    elif result.get("test_accuracy") is not None:
        score = f"test accuracy {result['test_accuracy']:.4f}"
        val = result.get("val_accuracy")
        val = f", validation accuracy {val:.4f}" if val is not None else ""
    else:
        return f"done: {epochs}"
    return (f"done: {result['model']} on {result['dataset']}: {score} (loss {result['test_loss']:.4f}, "
            f"{result['test_images']:,} images){val} after {epochs}")


def _train(args, quiet: bool = False) -> int:
    from .. import distributed
    from ..io.checkpoint import CHECKPOINT
    from ..model import presets
    from ..train.job import TrainConfig, train
    out_stream = sys.stderr if args.json else sys.stdout
    echo = (lambda text="": None) if quiet else echo_to(out_stream)

    model = args.model or presets.DEFAULT
    dataset = args.data or args.dataset or presets.get_preset(model).dataset or "fashion-mnist"
    out = args.out if args.out is not None else _default_out(Path(dataset).stem if args.data else dataset, model,
                                                             args.resume)
    if not args.resume and (out / CHECKPOINT).exists():
        raise ValueError(f"{out} already holds a run; pass --resume to continue it, or choose another --out")
    backend = use_backend(args.backend)
    if distributed.active() is not None:
        distributed.set_threads(backend, distributed.active().threads)
    _stream_if_too_big(args, echo)
    requested = {"dataset": args.data or args.dataset, "model": args.model, "val_split": args.val_split,
                 "image_size": args.image_size, "channels": args.channels, "epochs": args.epochs, "batch_size": args.batch_size,
                 "optimizer": args.optimizer, "lr": args.lr, "seed": args.seed, "limit": args.limit,
                 "augment": args.augment, "data_dir": None if args.data_dir is None else str(args.data_dir),
                 "stream": True if args.workers is not None else None}
    config = TrainConfig(**{k: v for k, v in requested.items() if v is not None})
    result = train(config, out, resume=args.resume, requested=requested, backend=backend,
                   progress=not args.no_progress, log_every=args.log_every, echo=echo, workers=args.workers or 0,
                   strict_data=args.strict_data, checkpoint_every=args.checkpoint_every)
    echo(_done_line(result))
    ips = result["images_per_second"]
    echo(f"      {fmt_seconds(result['seconds'])} in all"
         + (f", {ips:,.0f} training images/s" if ips else "") + f" on {result['backend']}")
    echo(f"      weights: {result['weights']}  (dcnn evaluate {result['out']})")
    if result.get("best_epoch") is not None and result["best_epoch"] != result["epochs"]:
        echo(f"      best: epoch {result['best_epoch']} by {result['monitor']}, in {result['best_weights']}")
    if args.json and not quiet:
        echo_to(sys.stdout)(json.dumps(result))
    return 0


