"""The ``dcnn`` command: train, evaluate, predict, info (and visualize, from dcnn.viz).

Mistakes (an unknown dataset or preset, a batch size of 0, a missing or unfitting
weights file) end with one ``dcnn: error: ...`` line and a non-zero status, never a traceback.
Exit status: 0 done, 1 failed, 2 bad arguments, 130 interrupted (a checkpoint was written),
141 output pipe closed (``dcnn evaluate | head -1``; ``dcnn train`` instead keeps training).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

import numpy as np

EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_BROKEN_PIPE = 1, 2, 130, 141   # 141 = 128 + SIGPIPE


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        # main() adds the one "dcnn: error:" prefix; the subcommand is named in the hint.
        raise UsageError(f"{message} (see {self.prog} --help)")


# --- argument types -------------------------------------------------------------------------

def _int_at_least(minimum: int, wording: str):
    """An argparse type: an integer >= ``minimum``, with a message that says so."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {wording}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be {wording}, got {value}")
        return value
    return parse


_positive_int = _int_at_least(1, "a positive integer")
_non_negative_int = _int_at_least(0, "an integer >= 0")


def _learning_rate(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (np.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _dataset_name(text):
    from . import datasets
    try:
        return datasets.canonical(text)     # a built-in name, or the path of your own data
    except datasets.DatasetError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _data_path(text):
    path = Path(text).expanduser()
    if not path.exists():
        raise argparse.ArgumentTypeError(f"{text} does not exist (give a folder of images, one subfolder per "
                                         "class, or a .npz file)")
    return str(path)


def _fraction(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fraction such as 0.1, got {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def _image_size(text):
    parts = text.lower().replace(",", "x").split("x")
    try:
        size = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW or one number, such as 28x28 or 64; got {text!r}") from None
    if len(size) == 1:
        size *= 2
    if len(size) != 2 or min(size) < 1:
        raise argparse.ArgumentTypeError(f"expected HxW of positive numbers; got {text!r}")
    return size


def _preset_name(text):
    from . import presets
    try:
        return presets.get_preset(text).name
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _backend_name(text):
    key = text.strip().lower()
    if key not in ("numpy", "cupy", "auto"):
        raise argparse.ArgumentTypeError(f"unknown backend {text!r}; valid ones are: numpy, cupy, auto")
    return key


# --- the parser -------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    from . import __version__, presets
    parser = _Parser(prog="dcnn", description="A CNN framework written once for NumPy (CPU) and CuPy (GPU).")
    parser.add_argument("--version", action="version", version=f"dcnn {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("train", help="train a model preset on a dataset (the main job)",
                       description="Train a model preset on a dataset, with a checkpoint after every epoch. "
                                   "With no options: the default preset on Fashion-MNIST.")
    data = p.add_mutually_exclusive_group()
    data.add_argument("--dataset", type=_dataset_name, metavar="NAME", help="fashion-mnist (default), mnist or cifar10")
    data.add_argument("--data", type=_data_path, metavar="PATH",
                      help="your own data: a folder of images with one subfolder per class (or train/ and test/ "
                           "folders of those), or a .npz file with x_train, y_train[, x_test, y_test, classes]")
    p.add_argument("--model", type=_preset_name, metavar="PRESET",
                   help=f"preset: {', '.join(presets.PRESETS)} (default {presets.DEFAULT})")
    p.add_argument("--epochs", type=_positive_int, metavar="N", help="number of epochs (default: the preset's)")
    p.add_argument("--batch-size", type=_positive_int, metavar="N",
                   help="images per step (default: the preset's); under mpirun it stays the global batch, "
                        "each of the N ranks taking 1/N of it")
    p.add_argument("--optimizer", choices=("sgd", "adam", "adamw"), type=str.lower, help="default: the preset's")
    p.add_argument("--lr", type=_learning_rate, help="peak learning rate (default: the preset's)")
    p.add_argument("--seed", type=_non_negative_int, metavar="N", help="seed for weights, shuffling, dropout (default 0)")
    p.add_argument("--backend", type=_backend_name, metavar="NAME",
                   help="numpy, cupy or auto (default: $DCNN_BACKEND or auto)")
    p.add_argument("--out", type=Path, metavar="DIR", help="output folder (default: runs/<dataset>-<model>, numbered if taken)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out (default: the latest run "
                                                         "of this dataset and model) from its last checkpoint")
    p.add_argument("--limit", type=_positive_int, metavar="N",
                   help="a quick run: the first N training images, and the first N test images for the test pass")
    p.add_argument("--val-split", type=_fraction, metavar="F",
                   help="hold out this share (e.g. 0.1) of the training images as a validation set, reported "
                        "each epoch as 'val'; the test set is then used once, at the end")
    p.add_argument("--image-size", type=_image_size, metavar="HxW",
                   help="with --data FOLDER: the size pictures are scaled to, aspect kept (default: the first's)")
    p.add_argument("--channels", type=int, choices=(1, 3), help="with --data FOLDER: 1 grayscale or 3 RGB "
                                                                 "(default: the first picture's)")
    p.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                   help="random shifts (up to 2 px) and left-right flips of training images")
    p.add_argument("--data-dir", type=Path, metavar="DIR", help="folder with the dataset files (else $DCNN_DATA, the cache, "
                                                 "the system copy, then a download)")
    p.add_argument("--log-every", type=_positive_int, default=10, metavar="N", help="update the progress bar every N batches "
                                                                       "(each update waits for the device)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true", help="print one JSON object with the results at the end")
    p.add_argument("--workers", type=_positive_int, metavar="N",
                   help="train data-parallel in N processes on this machine (runs mpiexec -n N; needs "
                        "pip install -e '.[dist]'); across machines use mpirun -n N dcnn train")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="accuracy, per-class accuracy and confusion matrix on a test set")
    p.add_argument("weights", type=Path, help="a weights file (.safetensors) or a run folder")
    p.add_argument("--dataset", type=_dataset_name, help="a built-in dataset or your data's folder or .npz file "
                                                         "(default: the one the weights were trained on)")
    p.add_argument("--model", type=_preset_name, help="default: the preset the weights were trained with")
    p.add_argument("--data-dir", type=Path)
    p.add_argument("--backend", type=_backend_name)
    p.add_argument("--batch-size", type=_positive_int, default=500)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="classify image files (PNG, JPEG) with trained weights")
    p.add_argument("weights", type=Path, help="a weights file (.safetensors) or a run folder")
    p.add_argument("images", nargs="+", metavar="IMAGE",
                   help="image files, folders of images or glob patterns ('photos/*.jpg'); a file that cannot be "
                        "read is reported and the others still classified (exit status 1)")
    p.add_argument("--model", type=_preset_name, help="default: the preset the weights were trained with")
    p.add_argument("--top", type=_positive_int, default=3, help="how many classes to show (default 3)")
    p.add_argument("--invert", choices=("auto", "yes", "no"), default="auto",
                   help="invert grey images to light-on-dark like (Fashion-)MNIST; auto: when the border is light")
    p.add_argument("--backend", type=_backend_name)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("export", help="write a trained model as an ONNX file (for ONNX Runtime and other tools)",
                       description="Export a run folder or .safetensors model to ONNX: float32 (N, C, H, W) images "
                                   "in, class probabilities out. Needs: pip install onnx onnxruntime.")
    p.add_argument("weights", type=Path, help="a weights file (.safetensors) or a run folder")
    p.add_argument("out", type=Path, help="the .onnx file to write")
    p.add_argument("--model", type=_preset_name, help="the preset, for older weights files without a model spec")
    p.add_argument("--logits", action="store_true", help="output the scores before the softmax")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("info", help="the backend chosen and why, the device, versions, datasets found")
    p.add_argument("--backend", type=_backend_name)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_info)

    try:  # written by the visualisation work; absent in older checkouts
        from .viz import command as viz_command
    except ImportError:
        viz_command = None
    if viz_command is not None and hasattr(viz_command, "register"):
        viz_command.register(sub)
    return parser


def main(argv=None) -> int:
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        args.argv = list(map(str, sys.argv[1:] if argv is None else argv))
        if getattr(args, "func", None) is None:
            parser.print_help()
            return EXIT_USAGE
        return args.func(args) or 0
    except UsageError as exc:
        _error(str(exc))
        return EXIT_USAGE
    except KeyboardInterrupt:
        _error("interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (dcnn evaluate | head -1): stop quietly, as Unix tools do.
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    except Exception as exc:
        from .training import Interrupted
        if isinstance(exc, Interrupted):
            _error(str(exc))
            return EXIT_INTERRUPTED
        if _expected(exc):
            _error(str(exc))
            return EXIT_FAILED
        raise


def _expected(exc) -> bool:
    """Errors that are the user's input or environment, reported in one line."""
    import backends
    from .checkpoint import CheckpointError
    from .datasets import DatasetError
    from .runfolder import RunFolderError
    from .training import TrainingError
    return isinstance(exc, (ValueError, TypeError, FileNotFoundError, IsADirectoryError, NotADirectoryError,
                            PermissionError, DatasetError, CheckpointError, TrainingError, RunFolderError,
                            backends.BackendError))


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that nothing (not even the flush at exit) writes to a closed pipe."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):   # stdout without a file descriptor (tests)
        pass


def _echo_to(stream):
    """print() to ``stream``; once its reader has gone (a closed pipe), the rest is dropped and training goes on."""
    state = {"open": True}

    def echo(text=""):
        if not state["open"]:
            return
        try:
            print(text, file=stream, flush=True)
        except BrokenPipeError:
            state["open"] = False
            if stream is sys.stdout:
                _silence_stdout()
    return echo


def _error(message: str) -> None:
    from . import distributed
    if not distributed.is_lead():     # the other ranks of a job: rank 0 says it once
        return
    text = " ".join(str(message).split())
    print(f"dcnn: error: {text}", file=sys.stderr)


def _use_backend(name):
    import backends
    if name is not None:
        return backends.use(name)
    return backends.get_backend()


def _fmt_seconds(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m}m{s:02d}s" if m else f"{seconds:.1f}s"


# --- train --------------------------------------------------------------------------------------

def _default_out(dataset: str, model: str, resume: bool) -> Path:
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
    if not (base / stem).exists():
        return base / stem
    n = 2
    while (base / f"{stem}-{n}").exists():
        n += 1
    return base / f"{stem}-{n}"


def cmd_train(args) -> int:
    from . import distributed
    if args.workers and args.workers > 1 and distributed.launched_size() <= 1:
        return distributed.relaunch(args.workers, _without_option(args.argv, "--workers"))
    try:
        comm = distributed.init()           # under mpirun: join the job (a no-op in one process)
    except ImportError as exc:
        raise ValueError(str(exc)) from None
    if comm is None:
        return _train(args)
    from .training import Diverged, Interrupted
    try:
        return _train(args, quiet=not distributed.is_lead())
    except BaseException as exc:
        if not isinstance(exc, (Diverged, Interrupted)):   # those two all ranks raise together
            distributed.fail_together(comm, exc, expected=_expected(exc))   # one rank alone: end them all
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


def _train(args, quiet: bool = False) -> int:
    from . import distributed, presets
    from .checkpoint import CHECKPOINT
    from .training import TrainConfig, train
    out_stream = sys.stderr if args.json else sys.stdout
    echo = (lambda text="": None) if quiet else _echo_to(out_stream)

    dataset = args.data or args.dataset or "fashion-mnist"
    model = args.model or presets.DEFAULT
    out = args.out if args.out is not None else _default_out(Path(dataset).stem if args.data else dataset, model,
                                                             args.resume)
    if not args.resume and (out / CHECKPOINT).exists():
        raise ValueError(f"{out} already holds a run; pass --resume to continue it, or choose another --out")
    backend = _use_backend(args.backend)
    if distributed.active() is not None:
        distributed.set_threads(backend, distributed.active().threads)
    requested = {"dataset": args.data or args.dataset, "model": args.model, "val_split": args.val_split,
                 "image_size": args.image_size, "channels": args.channels, "epochs": args.epochs, "batch_size": args.batch_size,
                 "optimizer": args.optimizer, "lr": args.lr, "seed": args.seed, "limit": args.limit,
                 "augment": args.augment, "data_dir": None if args.data_dir is None else str(args.data_dir)}
    config = TrainConfig(**{k: v for k, v in requested.items() if v is not None})
    result = train(config, out, resume=args.resume, requested=requested, backend=backend,
                   progress=not args.no_progress, log_every=args.log_every, echo=echo)
    acc = result["test_accuracy"]
    epochs = f"{result['epochs']} epoch" + ("" if result["epochs"] == 1 else "s")
    val = (f", validation accuracy {result['val_accuracy']:.4f}" if result.get("val_accuracy") is not None else "")
    echo(f"done: {result['model']} on {result['dataset']}: test accuracy {acc:.4f} (loss {result['test_loss']:.4f}, "
         f"{result['test_images']:,} images){val} after {epochs}" if acc is not None else f"done: {epochs}")
    ips = result["images_per_second"]
    echo(f"      {_fmt_seconds(result['seconds'])} in all"
         + (f", {ips:,.0f} training images/s" if ips else "") + f" on {result['backend']}")
    echo(f"      weights: {result['weights']}  (dcnn evaluate {result['out']})")
    if args.json and not quiet:
        _echo_to(sys.stdout)(json.dumps(result))
    return 0


# --- evaluate -------------------------------------------------------------------------------------

def cmd_evaluate(args) -> int:
    from . import datasets
    from .loading import load_trained, run_config
    from .metrics import confusion_matrix, per_class_accuracy
    backend = _use_backend(args.backend)
    net, meta, path = load_trained(args.weights, args.model, backend)
    name = args.dataset or meta.get("dataset")
    if name is None:
        raise ValueError(f"{path} does not say which dataset it was trained on; pass --dataset")
    data_dir = args.data_dir
    if data_dir is None and args.dataset is None:   # a run folder remembers where its data came from
        data_dir = run_config(path).get("data_dir")
    c, h, w = net.input_shape
    data = datasets.load(name, data_dir, image_size=(h, w), channels=c if c in (1, 3) else None)
    classes = list(meta["classes"])
    if data.input_shape != net.input_shape or data.num_classes != len(classes):
        raise ValueError(f"{path} was trained for inputs {net.input_shape} and {len(classes)} classes; "
                         f"{data.name} has {data.input_shape} and {data.num_classes}")
    probs = net.predict(data.x_test, batch_size=args.batch_size)
    predicted = np.argmax(probs, axis=1)
    cm = confusion_matrix(data.y_test, predicted, len(classes))
    per_class = per_class_accuracy(cm)
    accuracy = float(np.trace(cm) / cm.sum())
    if args.json:
        print(json.dumps({"weights": str(path), "dataset": data.name, "model": meta.get("preset"),
                          "images": int(cm.sum()), "accuracy": accuracy,
                          "per_class_accuracy": dict(zip(classes, map(float, per_class))),
                          "confusion_matrix": cm.tolist(), "classes": classes}))
        return 0
    print(f"{path}: {meta.get('preset')} on the {data.name} test set ({cm.sum():,} images)")
    print(f"accuracy: {accuracy:.4f}  ({int(np.trace(cm)):,}/{int(cm.sum()):,})")
    print()
    width = max(len(c) for c in classes)
    print("per-class accuracy:")
    for c, a in zip(classes, per_class):
        print(f"  {c:<{width}}  {a:.4f}")
    print()
    print("confusion matrix (rows: true class, columns: predicted):")
    cell = max(5, len(str(cm.max())) + 1)
    digits = len(str(len(classes) - 1))
    print(" " * (width + digits + 3) + "".join(f"{i:>{cell}}" for i in range(len(classes))))
    for i, (c, row) in enumerate(zip(classes, cm)):
        print(f"  {i:>{digits}} {c:<{width}}" + "".join(f"{v:>{cell}}" for v in row))
    return 0


# --- predict --------------------------------------------------------------------------------------

def cmd_predict(args) -> int:
    """Each image on its own: a file that cannot be read is reported and the rest go on (exit 1 at the end)."""
    from .imagefiles import expand_image_paths, model_image
    from .loading import load_trained
    backend = _use_backend(args.backend)
    net, meta, path = load_trained(args.weights, args.model, backend)
    classes = list(meta["classes"])
    paths = expand_image_paths(args.images)
    images, good, failures = [], [], []
    for image in paths:
        try:
            images.append(model_image(image, net.input_shape, args.invert))
            good.append(image)
        except ImportError as exc:          # Pillow missing: the same for every file
            raise ValueError(str(exc)) from None
        except (ValueError, OSError) as exc:
            failures.append({"image": str(image), "error": " ".join(str(exc).split())})
            if not args.json:
                _error(failures[-1]["error"])
    probs = net.predict(np.stack(images)) if images else np.zeros((0, len(classes)), np.float32)
    top = min(args.top, len(classes))
    results = []
    for image, p in zip(good, probs):
        order = np.argsort(-p)[:top]
        results.append({"image": str(image), "top": [{"class": classes[i], "index": int(i),
                                                      "probability": float(p[i])} for i in order]})
    if args.json:
        print(json.dumps({"weights": str(path), "predictions": results, "errors": failures}))
    else:
        for r in results:
            print(f"{r['image']}: " + ", ".join(f"{t['class']} {t['probability']:.1%}" for t in r["top"]))
        if failures:
            _error(f"{len(failures)} of {len(paths)} image(s) could not be read")
    return EXIT_FAILED if failures else 0


# --- export ---------------------------------------------------------------------------------------

def cmd_export(args) -> int:
    from .export import export_onnx
    from .loading import load_trained
    net, meta, path = load_trained(args.weights, args.model, _use_backend("numpy"))
    try:
        out = export_onnx(net, args.out, classes=meta["classes"], logits=args.logits)
    except ImportError as exc:
        raise ValueError(str(exc)) from None
    print(f"{out}: {meta.get('preset') or 'model'} from {path}, input (N, {', '.join(map(str, net.input_shape))}), "
          f"{'logits' if args.logits else 'probabilities'} for {len(meta['classes'])} classes")
    return 0


# --- info -----------------------------------------------------------------------------------------

def _version(module: str):
    try:
        from importlib.metadata import version
        return version(module)
    except Exception:
        return None


def cmd_info(args) -> int:
    import backends
    from . import __version__, datasets, presets
    backend = _use_backend(args.backend)
    versions = {"dcnn": __version__, "python": platform.python_version(), "numpy": np.__version__}
    for dist in ("numba", "cupy-cuda13x", "cupy-cuda12x", "cupy", "array-api-compat", "safetensors", "tqdm", "pooch",
                 "pillow", "matplotlib"):
        v = _version(dist)
        if v:
            versions[dist] = v
    found = {}
    problems = []
    for name in datasets.names():
        try:
            folder, _ = datasets.locate(datasets.get_spec(name))
        except datasets.DatasetError as exc:     # e.g. $DCNN_DATA names a folder that does not exist
            folder = None
            if str(exc) not in problems:
                problems.append(str(exc))
        found[name] = str(folder) if folder else None
    info = {"backend": backend.name, "device": backend.describe(), "reason": backend.reason,
            "DCNN_BACKEND": os.environ.get("DCNN_BACKEND"), "available_backends": backends.available(),
            "versions": versions, "platform": platform.platform(), "cpu_count": os.cpu_count(),
            "datasets": found, "cache": str(datasets.cache_dir()), "presets": list(presets.PRESETS),
            "data_problems": problems}
    if args.json:
        print(json.dumps(info))
        return 0
    print(f"backend:   {backend.name}  ({info['reason']})")
    print(f"device:    {info['device']}")
    print(f"available: {', '.join(info['available_backends'])}  (choose with --backend or DCNN_BACKEND="
          f"{info['DCNN_BACKEND'] or 'auto'})")
    print(f"platform:  {info['platform']}, {info['cpu_count']} CPUs")
    print("versions:  " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    print("datasets:  " + ", ".join(f"{k}: {v or 'not found (downloaded on first use)'}" for k, v in found.items()))
    print(f"presets:   {', '.join(f'{p} (default)' if p == presets.DEFAULT else p for p in presets.PRESETS)}")
    for problem in problems:
        print(f"note:      {problem}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
