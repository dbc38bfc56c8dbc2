"""argparse types for the ``dcnn`` commands: each refuses a bad value with a message that says what it wants."""
from __future__ import annotations

import argparse
import re
from pathlib import Path

import numpy as np

# -------------------------------------------------------------------------

def int_at_least(minimum: int, wording: str):
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


positive_int = int_at_least(1, "a positive integer")
non_negative_int = int_at_least(0, "an integer >= 0")


def learning_rate(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (np.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def dataset_name(text):
    from ..data import datasets
    try:
        return datasets.canonical(text)     # a built-in name, or the path of your own data
    except datasets.DatasetError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def data_path(text):
    path = Path(text).expanduser()
    if not path.exists():
        raise argparse.ArgumentTypeError(f"{text} does not exist (give a folder of images, one subfolder per "
                                         "class, or a .npz file)")
    return str(path)


def fraction(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fraction such as 0.1, got {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


_IMAGE_SIZE = re.compile(r"([0-9]+)(?:x([0-9]+))?")


def image_size(text):
    """Exactly ``HxW`` (28x28) or one number (64, for 64x64): no spaces, commas or other separators."""
    from ..utils.checks import MAX_IMAGE_SIDE
    match = _IMAGE_SIZE.fullmatch(text)
    if match is None:
        raise argparse.ArgumentTypeError(f"expected HxW or one number, such as 28x28 or 64; got {text!r}")
    size = [int(match.group(1)), int(match.group(2) or match.group(1))]
    if not all(1 <= side <= MAX_IMAGE_SIDE for side in size):
        raise argparse.ArgumentTypeError(f"expected HxW with each side from 1 to {MAX_IMAGE_SIDE}; got {text!r}")
    return size


def preset_name(text):
    from ..model import presets
    try:
        return presets.get_preset(text).name
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def backend_name(text):
    key = text.strip().lower()
    if key not in ("numpy", "cupy", "auto"):
        raise argparse.ArgumentTypeError(f"unknown backend {text!r}; valid ones are: numpy, cupy, auto")
    return key


def add_custom_layers(parser) -> None:
    """``--custom-layers FILE.py`` (repeatable): import the user's own Layer classes before loading a model."""
    parser.add_argument("--custom-layers", action="append", metavar="FILE.py", default=None,
                        help="a .py file (or module) defining your own Layer classes that the model uses; "
                             "it is imported first (repeat for several)")
