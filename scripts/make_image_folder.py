"""Write a folder of JPEG or PNG files from Fashion-MNIST, MNIST or CIFAR-10, for benchmarks and tests.

    python scripts/make_image_folder.py OUT [--dataset fashion-mnist] [--size 64] [--format jpg]
        [--count 60000] [--test-count 10000] [--color] [--layout split|flat] [--quality 90] [--jobs 2]

Layout ``split`` (default) writes ``OUT/train/<class>/NNNNNN.jpg`` and ``OUT/test/<class>/...``;
``flat`` writes ``OUT/<class>/...`` (dcnn then holds out a test share itself).  Images are resized
to ``--size`` (one int: square, or HxW) with Pillow's bilinear filter; ``--color`` tints each
grey picture with a random object colour over a random dark background (seeded), so the folder
is RGB.  ``--count`` larger than the dataset cycles through it again with other tints (use it to
make a folder of any size: at 224x224 RGB, 66,000 images are about 10 GB once decoded).

The decoded size of the folder (count x C x H x W bytes) is printed at the end.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import re
import sys
import time
from pathlib import Path

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def parse_size(text: str) -> tuple[int, int]:
    parts = [int(p) for p in re.split(r"[x,]", text)]
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or min(parts) < 1:
        raise argparse.ArgumentTypeError(f"size must be N or HxW with positive ints; got {text!r}")
    return parts[0], parts[1]


def folder_name(name: str) -> str:
    """A class name as a folder name ("T-shirt/top" -> "T-shirt_top")."""
    return re.sub(r"[^\w.-]+", "_", name).strip("._") or "class"


def tint(gray_u8: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(N, H, W) grey uint8 -> (N, H, W, 3) uint8: object colour where bright, background where dark."""
    n = len(gray_u8)
    fg = rng.uniform(0.35, 1.0, (n, 1, 1, 3)).astype(np.float32)
    bg = rng.uniform(0.0, 0.3, (n, 1, 1, 3)).astype(np.float32)
    g = gray_u8[..., None].astype(np.float32) / 255
    return np.clip(np.rint((bg * (1 - g) + fg * g) * 255), 0, 255).astype(np.uint8)


def to_hwc_u8(x: np.ndarray) -> np.ndarray:
    """float32 (N, C, H, W) in [0, 1] -> uint8 (N, H, W) for grey, (N, H, W, 3) for colour."""
    u8 = np.clip(np.rint(x * 255), 0, 255).astype(np.uint8)
    return u8[:, 0] if u8.shape[1] == 1 else np.ascontiguousarray(np.moveaxis(u8, 1, -1))


def write_chunk(job) -> int:
    """Encode one chunk of images (each one file; Pillow encodes one picture at a time)."""
    from PIL import Image
    images, paths, size, fmt, quality = job
    h, w = size
    for img, path in zip(images, paths):
        pic = Image.fromarray(img)
        if pic.size != (w, h):
            pic = pic.resize((w, h), Image.Resampling.BILINEAR)
        if fmt == "jpg":
            pic.save(path, "JPEG", quality=quality)
        else:
            pic.save(path, "PNG", compress_level=1)
    return len(paths)


def plan(out: Path, split: str | None, x: np.ndarray, y: np.ndarray, classes, count: int, color: bool,
         size, fmt: str, quality: int, seed: int, chunk: int = 512):
    """The chunks to write: images (grey or tinted), their paths; cycling through ``x`` up to ``count``."""
    base = out / split if split else out
    names = [folder_name(c) for c in classes]
    for name in names:
        (base / name).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0 if split != "test" else 1]))
    for start in range(0, count, chunk):
        idx = np.arange(start, min(start + chunk, count)) % len(x)
        imgs = x[idx]
        if color and imgs.ndim == 3:
            imgs = tint(imgs, rng)
        paths = [base / names[int(y[i])] / f"{start + k:07d}.{fmt}" for k, i in enumerate(idx)]
        yield imgs, paths, size, fmt, quality


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path)
    p.add_argument("--dataset", default="fashion-mnist", help="fashion-mnist, mnist or cifar10")
    p.add_argument("--size", type=parse_size, default=(64, 64), help="N or HxW (default 64)")
    p.add_argument("--format", choices=("jpg", "png"), default="jpg")
    p.add_argument("--count", type=int, default=None, help="training images (default: all of the dataset's)")
    p.add_argument("--test-count", type=int, default=None, help="test images (default: all; 0: none)")
    p.add_argument("--color", action=argparse.BooleanOptionalAction, default=True,
                   help="tint grey datasets into RGB (default on)")
    p.add_argument("--layout", choices=("split", "flat"), default="split")
    p.add_argument("--quality", type=int, default=90, help="JPEG quality (default 90)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jobs", type=int, default=1, help="encoding processes (default 1)")
    args = p.parse_args(argv)
    from dcnn.data.datasets import load
    data = load(args.dataset)
    x_train, x_test = to_hwc_u8(data.x_train), to_hwc_u8(data.x_test)
    count = len(x_train) if args.count is None else args.count
    test_count = len(x_test) if args.test_count is None else args.test_count
    if args.layout == "flat":
        x_all, y_all = np.concatenate([x_train, x_test]), np.concatenate([data.y_train, data.y_test])
        parts = [(None, x_all, y_all, count + test_count)]
    else:
        parts = [("train", x_train, data.y_train, count)] + ([("test", x_test, data.y_test, test_count)]
                                                            if test_count else [])
    t0 = time.perf_counter()
    written = 0
    channels = 3 if args.color or x_train.ndim == 4 else 1
    for split, x, y, n in parts:
        chunks = plan(args.out, split, x, y, data.classes, n, args.color, args.size, args.format, args.quality,
                      args.seed)
        if args.jobs > 1:
            with mp.get_context("forkserver").Pool(args.jobs) as pool:
                written += sum(pool.imap_unordered(write_chunk, chunks))
        else:
            written += sum(map(write_chunk, chunks))
    decoded = written * channels * args.size[0] * args.size[1]
    print(f"wrote {written:,} {args.format.upper()} files ({channels}x{args.size[0]}x{args.size[1]}) to {args.out} "
          f"in {time.perf_counter() - t0:.1f} s; {decoded / 1e9:.2f} GB once decoded as uint8 "
          f"({decoded * 4 / 1e9:.2f} GB as float32)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
