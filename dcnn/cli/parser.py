"""The ``dcnn`` argument parser: every subcommand, its options and the function that runs it."""
from __future__ import annotations

import argparse
from pathlib import Path

from . import visualize
from .args import (add_custom_layers, backend_name, data_path, dataset_name, fraction, image_size, learning_rate, non_negative_int,
                   positive_int, preset_name)
from .common import Parser
from .model_commands import cmd_evaluate, cmd_export, cmd_info, cmd_predict
from .train_command import cmd_train

# -------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    from .. import __version__
    from ..model import presets
    parser = Parser(prog="dcnn", description="A CNN framework written once for NumPy (CPU) and CuPy (GPU).")
    parser.add_argument("--version", action="version", version=f"dcnn {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)

    p = sub.add_parser("train", help="train a model preset on a dataset (the main job)",
                       description="Train a model preset on a dataset, with a checkpoint after every epoch. "
                                   "With no options: the default preset on Fashion-MNIST.")
    data = p.add_mutually_exclusive_group()
    data.add_argument("--dataset", type=dataset_name, metavar="NAME",
                      help="fashion-mnist (default), mnist, cifar10, or fashion-mosaic (segmentation masks: the "
                           "unet preset's, and its default)")
    data.add_argument("--data", type=data_path, metavar="PATH",
                      help="your own data: a folder of images with one subfolder per class (or train/ and test/ "
                           "folders of those), or a .npz file with x_train, y_train[, x_test, y_test, classes]")
    p.add_argument("--model", type=preset_name, metavar="PRESET",
                   help=f"preset: {', '.join(presets.all_presets())} (default {presets.DEFAULT}; unet labels every "
                        "pixel, and refuses --augment and --workers, which would not move its masks)")
    p.add_argument("--epochs", type=positive_int, metavar="N", help="number of epochs (default: the preset's)")
    p.add_argument("--batch-size", type=positive_int, metavar="N",
                   help="images per step (default: the preset's); under mpirun it stays the global batch, "
                        "each of the N ranks taking 1/N of it")
    p.add_argument("--optimizer", choices=("sgd", "adam", "adamw"), type=str.lower, help="default: the preset's")
    p.add_argument("--lr", type=learning_rate, help="peak learning rate (default: the preset's)")
    p.add_argument("--seed", type=non_negative_int, metavar="N", help="seed for weights, shuffling, dropout (default 0)")
    p.add_argument("--backend", type=backend_name, metavar="NAME",
                   help="numpy, cupy or auto (default: $DCNN_BACKEND or auto)")
    p.add_argument("--out", type=Path, metavar="DIR", help="output folder (default: runs/<dataset>-<model>, numbered if taken)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out (default: the latest run "
                                                         "of this dataset and model) from its last checkpoint")
    p.add_argument("--limit", type=positive_int, metavar="N",
                   help="a quick run: the first N training images, and the first N test images for the test pass")
    p.add_argument("--val-split", type=fraction, metavar="F",
                   help="hold out this share (e.g. 0.1) of the training images as a validation set, reported "
                        "each epoch as 'val'; the test set is then used once, at the end")
    p.add_argument("--image-size", type=image_size, metavar="HxW",
                   help="with --data FOLDER only: the size pictures are scaled to, aspect kept: HxW (28x28) or one "
                        "number (64 for 64x64) (default: the first picture's)")
    p.add_argument("--channels", type=int, choices=(1, 3), help="with --data FOLDER only: 1 grayscale or 3 RGB "
                                                                 "(default: the first picture's)")
    p.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                   help="random shifts (up to 2 px) and left-right flips of training images")
    p.add_argument("--data-dir", type=Path, metavar="DIR", help="folder with the dataset files (else $DCNN_DATA, the cache, "
                                                 "the system copy, then a download)")
    p.add_argument("--log-every", type=positive_int, default=10, metavar="N", help="update the progress bar every N batches "
                                                                       "(each update waits for the device)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true", help="print one JSON object with the results at the end")
    p.add_argument("--workers", type=non_negative_int, metavar="N",
                   help="with --data FOLDER: stream the pictures, decoded a batch at a time in N worker processes "
                        "(0: in this process), never the whole folder in memory (needs pip install -e '.[stream]' "
                        "for N > 0); without it the folder is decoded into memory first")
    p.add_argument("--strict-data", action="store_true",
                   help="with --workers: stop on an unreadable image (default: skip it, with a count and the first "
                        "paths in a warning)")
    p.add_argument("--checkpoint-every", type=positive_int, metavar="STEPS",
                   help="with --workers: also write a checkpoint every STEPS steps inside an epoch (--resume "
                        "continues at the next batch)")
    p.add_argument("--ranks", type=positive_int, metavar="N",
                   help="train data-parallel in N processes on this machine (runs mpiexec -n N; needs "
                        "pip install -e '.[dist]'); across machines use mpirun -n N dcnn train")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="accuracy, per-class accuracy and confusion matrix on a test set (mean IoU, "
                                        "pixel accuracy and per-class IoU for a segmentation model)")
    p.add_argument("weights", type=Path, help="a weights file (.safetensors) or a run folder")
    p.add_argument("--dataset", type=dataset_name, help="a built-in dataset or your data's folder or .npz file "
                                                         "(default: the one the weights were trained on)")
    p.add_argument("--model", type=preset_name, help="default: the preset the weights were trained with")
    p.add_argument("--data-dir", type=Path)
    p.add_argument("--backend", type=backend_name)
    p.add_argument("--batch-size", type=positive_int, default=500)
    p.add_argument("--json", action="store_true")
    add_custom_layers(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="classify image files (PNG, JPEG) with trained weights, or colour their "
                                       "pixels by class with a segmentation model (--out mask.png)")
    p.add_argument("weights", type=Path, help="a weights file (.safetensors) or a run folder")
    p.add_argument("images", nargs="+", metavar="IMAGE",
                   help="image files, folders of images or glob patterns ('photos/*.jpg'); a file that cannot be "
                        "read is reported and the others still classified (exit status 1)")
    p.add_argument("--model", type=preset_name, help="default: the preset the weights were trained with")
    p.add_argument("--top", type=positive_int, default=3, help="how many classes to show (default 3)")
    p.add_argument("--out", type=Path, metavar="PATH",
                   help="a segmentation model's coloured mask: a .png file for one image (with NAME-legend.png of "
                        "the class colours beside it), or a folder for several")
    p.add_argument("--invert", choices=("auto", "yes", "no"), default="auto",
                   help="invert grey images to light-on-dark like (Fashion-)MNIST; auto: when the border is light")
    p.add_argument("--backend", type=backend_name)
    p.add_argument("--json", action="store_true")
    add_custom_layers(p)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("export", help="write a trained model as an ONNX file (for ONNX Runtime and other tools)",
                       description="Export a run folder or .safetensors model to ONNX: float32 (N, C, H, W) images "
                                   "in, class probabilities out. Needs: pip install onnx onnxruntime.")
    p.add_argument("weights", type=Path, help="a weights file (.safetensors) or a run folder")
    p.add_argument("out", type=Path, help="the .onnx file to write")
    p.add_argument("--model", type=preset_name, help="the preset, for older weights files without a model spec")
    p.add_argument("--logits", action="store_true", help="output the scores before the softmax")
    add_custom_layers(p)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("info", help="the backend chosen and why, the device, versions, datasets found")
    p.add_argument("--backend", type=backend_name)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_info)

    visualize.register(sub)
    return parser


