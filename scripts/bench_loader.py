"""The streaming loader's throughput: decoders, and the worker pool under it, side by side in one run.

    python scripts/make_image_folder.py /tmp/fm64 --count 20000 --test-count 0      # 64x64 RGB JPEGs
    python scripts/bench_loader.py /tmp/fm64 [--workers 2] [--batch 128] [--batches 60] [--rounds 3]
        [--decoders] [--pools grain,torch,torch-per-image,pool] [--augment flip,crop] [--json out.json]

``--decoders``: decode only, one process, the same files through Pillow, simplejpeg and PyTurboJPEG.

Pools: every contender makes the same batches (over several epochs when --batches asks for more) (decode + resize + augment + batch, handing over
uint8 (B, C, H, W) NumPy arrays to the main process) with the same number of worker processes:

- ``dcnn``: ``dcnn.data.loader.Loader(workers=N)``, the loader itself (grain, as below, and its bookkeeping);
- ``grain``: ``grain.MapDataset.range(steps).map(plan).to_iter_dataset(ReadOptions(num_threads=0)).mp_prefetch(workers)``
  (grain's processes and shared memory, one element = one batch made by dcnn's ``BatchPlan``);
- ``torch``: ``torch.utils.data.DataLoader`` over the same batch function (``batch_size=None``);
- ``torch-per-image``: the idiomatic PyTorch way: a Dataset of images, DataLoader batching and
  collating them (``batch_size=B``, ``persistent_workers``); the images then come back as tensors
  (turned into NumPy); the same decoder and augmentation, one image at a time;
- ``pool``: a small hand-written pool, ``scripts/handmade_pool.py`` (forkserver processes, a ring of
  shared-memory slots, results in order).

Each run times its first batch (from the iterator's creation: worker start-up included) apart from
the others (steady throughput, the figure that matters when workers live as long as the run); the contenders take turns in each round, the order rotating, so others' load on the machine
falls on all alike.  Reported: images per second (best and median over rounds), and the ratio to
PyTorch's DataLoader.
"""
from __future__ import annotations

import argparse
import glob
import io
import json
import os
import statistics
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from dcnn.data.batches import BatchPlan  # noqa: E402
from dcnn.data.decode import resolve_decoder  # noqa: E402
from dcnn.data.sources import image_folder  # noqa: E402
from dcnn.data.transforms import Augment  # noqa: E402


def bench_decoders(root: str, count: int, rounds: int) -> dict:
    from PIL import Image
    files = sorted(glob.glob(os.path.join(root, "**", "*.jpg"), recursive=True))[:count]
    blobs = [open(f, "rb").read() for f in files]
    contenders = {"pillow": lambda b: np.asarray(Image.open(io.BytesIO(b)).convert("RGB"))}
    try:
        import simplejpeg
        contenders["simplejpeg"] = lambda b: simplejpeg.decode_jpeg(b, colorspace="RGB")
    except ImportError:
        print("simplejpeg is not installed: skipped")
    try:
        from turbojpeg import TJPF_RGB, TurboJPEG
        tj = TurboJPEG()
        contenders["turbojpeg"] = lambda b: tj.decode(b, pixel_format=TJPF_RGB)
    except (ImportError, RuntimeError, OSError) as exc:
        print(f"PyTurboJPEG is unusable here ({exc}): skipped")
    times = {name: [] for name in contenders}
    for r in range(rounds):
        for name, fn in contenders.items():
            t = time.perf_counter()
            for b in blobs:
                fn(b)
            times[name].append(time.perf_counter() - t)
    out = {name: {"images_per_s": len(blobs) / min(ts), "us_per_image": min(ts) / len(blobs) * 1e6}
           for name, ts in times.items()}
    for name, v in out.items():
        print(f"  decode {name:11s} {v['images_per_s']:8.0f} images/s  ({v['us_per_image']:.1f} us each)")
    return out


def _cpu_seconds() -> dict:
    """CPU seconds (user + system) of this process and each of its descendants, by pid."""
    import psutil
    me = psutil.Process()
    out = {}
    for proc in [me] + me.children(recursive=True):
        try:
            t = proc.cpu_times()
            out[proc.pid] = t.user + t.system
        except psutil.Error:
            pass
    return out


def _consume(get, batches):
    """(seconds to the first batch, seconds for the others, CPU seconds of all processes for the others),
    touching each batch as a consumer would.  The CPU time is what a busy machine cannot hide."""
    t0 = time.perf_counter()
    get().sum(dtype=np.uint64)
    t1 = time.perf_counter()
    cpu0 = _cpu_seconds()
    for _ in range(batches - 1):
        get().sum(dtype=np.uint64)
    t2 = time.perf_counter()
    cpu1 = _cpu_seconds()
    return t1 - t0, t2 - t1, sum(v - cpu0.get(pid, 0.0) for pid, v in cpu1.items()), _rss_mib()


def _rss_mib() -> tuple[float, float]:
    """(RSS of this process, summed RSS of its descendants) in MiB, while the workers run."""
    import psutil
    me = psutil.Process()
    kids = 0
    for proc in me.children(recursive=True):
        try:
            kids += proc.memory_info().rss
        except psutil.Error:
            pass
    return me.memory_info().rss / 2**20, kids / 2**20


# --- contenders --------------------------------------------------------------------------------------

def run_dcnn(plan, workers, batches, prefetch):
    """dcnn's Loader (grain underneath, as run_grain, plus its own bookkeeping), over as many epochs as needed."""
    from dcnn.data.loader import Loader
    p = plan
    loader = Loader(p.source, p.batch_size, seed=p.seed, augment=p.augment, decoder=p.decoder, workers=workers,
                    prefetch=prefetch, image_size=p.size, channels=p.channels)
    state = {"it": iter(loader)}

    def get():
        try:
            return next(state["it"])[0]
        except StopIteration:
            state["it"] = iter(loader)
            return next(state["it"])[0]
    try:
        return _consume(get, batches)
    finally:
        loader.close()


def run_grain(plan, workers, batches, prefetch):
    import grain
    # Grain's default ReadOptions run 16 threads per worker and buffer 500 elements (batches, here):
    # about 400 MB per worker at batch 128 and a head start the others do not get.  One thread
    # per worker, and the same depth as the others (``prefetch`` per worker), make it a fair race.
    ds = grain.MapDataset.range(batches).map(plan).to_iter_dataset(
        grain.ReadOptions(num_threads=0, prefetch_buffer_size=prefetch))
    if workers:
        ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers, per_worker_buffer_size=prefetch))
    it = iter(ds)
    try:
        return _consume(lambda: next(it).x, batches)
    finally:
        getattr(it, "close", lambda: None)()


class _TorchBatches:
    def __init__(self, plan, batches):
        self.plan, self.batches = plan, batches

    def __len__(self):
        return self.batches

    def __getitem__(self, g):
        b = self.plan(g)
        return b.x, b.y


class _TorchImages:
    """One image per item, the idiomatic Dataset: decoded, resized and augmented alone."""

    def __init__(self, plan):
        self.plan = plan

    def __len__(self):
        return len(self.plan.source)

    def __getitem__(self, i):
        p = self.plan
        x, _ = p.source.load([i], p.channels, p.size, p.decoder)
        if p.augment is not None:
            x = p.augment(x, np.random.default_rng(i).random((1, 8)))
        return np.ascontiguousarray(x[0].transpose(2, 0, 1)), int(p.source.labels[i])


def run_torch(plan, workers, batches, prefetch, per_image=False):
    import torch
    from torch.utils.data import DataLoader
    if per_image:
        dl = DataLoader(_TorchImages(plan), batch_size=plan.batch_size, shuffle=True, num_workers=workers,
                        prefetch_factor=prefetch if workers else None, generator=torch.Generator().manual_seed(0),
                        persistent_workers=workers > 0, drop_last=True)
    else:
        dl = DataLoader(_TorchBatches(plan, batches), batch_size=None, shuffle=False, num_workers=workers,
                        prefetch_factor=prefetch if workers else None)
    state = {"it": iter(dl)}

    def get():
        try:
            return next(state["it"])[0].numpy()
        except StopIteration:                   # the next epoch (the workers persist)
            state["it"] = iter(dl)
            return next(state["it"])[0].numpy()
    try:
        return _consume(get, batches)
    finally:
        del state["it"], dl


def run_pool(plan, workers, batches, prefetch):
    from handmade_pool import BatchPool
    pool = BatchPool(plan, workers, prefetch)
    try:
        return _consume(lambda: next(pool).x, batches)
    finally:
        pool.close()


CONTENDERS = {"dcnn": run_dcnn, "grain": run_grain, "torch": run_torch,
              "torch-per-image": lambda *a: run_torch(*a, per_image=True), "pool": run_pool}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folder")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--batches", type=int, default=150, help="batches per timed run")
    p.add_argument("--prefetch", type=int, default=2, help="batches in flight per worker")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--decoder", default="auto")
    p.add_argument("--decoders", action="store_true", help="also time the decoders alone")
    p.add_argument("--pools", default="dcnn,grain,torch,torch-per-image,pool")
    p.add_argument("--augment", default="flip,crop", help="flip,crop,shift,jitter or none")
    p.add_argument("--json")
    args = p.parse_args(argv)
    report = {"workers": args.workers, "batch": args.batch, "batches": args.batches, "cpus": os.cpu_count(),
              "load_average_start": os.getloadavg()[0]}
    if args.decoders:
        print("decoders (one process, decode only):")
        report["decoders"] = bench_decoders(args.folder, 3000, args.rounds)
    train, _ = image_folder(args.folder)
    channels, size = train.probe()
    kinds = set(args.augment.split(",")) - {"none", ""}
    augment = Augment(flip="flip" in kinds, crop_padding=4 if "crop" in kinds else 0,
                      shift=2 if "shift" in kinds else 0,
                      **({"brightness": 0.2, "contrast": 0.2, "saturation": 0.2} if "jitter" in kinds else {}))
    plan = BatchPlan(train, args.batch, channels, size, seed=0, augment=augment,
                     decoder=resolve_decoder(args.decoder))
    names = args.pools.split(",")
    times = {name: [] for name in names}
    starts = {name: [] for name in names}
    cpus = {name: [] for name in names}
    rss = {name: [] for name in names}
    print(f"{len(train)} images {channels}x{size[0]}x{size[1]}, decoder {plan.decoder}, augment {augment}, "
          f"{args.workers} workers, {args.batches} batches of {args.batch} per run")
    for r in range(args.rounds):
        for k in range(len(names)):
            name = names[(k + r) % len(names)]
            start, rest, cpu, memory = CONTENDERS[name](plan, args.workers, args.batches, args.prefetch)
            rss[name].append(memory)
            starts[name].append(start)
            times[name].append(rest)
            cpus[name].append(cpu)
            print(f"  round {r + 1} {name:16s} first batch after {start:5.2f} s, then "
                  f"{(args.batches - 1) * args.batch / rest:8.0f} images/s, {cpu / ((args.batches - 1) * args.batch) * 1e6:6.1f} "
                  f"CPU-us per image; RSS main {memory[0]:.0f} MiB, workers {memory[1]:.0f} MiB", flush=True)
    images = (args.batches - 1) * args.batch
    report["pools"] = {name: {"images_per_s_best": images / min(ts), "images_per_s_median": images / statistics.median(ts),
                              "first_batch_s_median": statistics.median(starts[name]), "seconds": ts,
                              "cpu_us_per_image_median": statistics.median(cpus[name]) / images * 1e6,
                              "rss_main_mib_max": max(m[0] for m in rss[name]),
                              "rss_workers_mib_max": max(m[1] for m in rss[name]),
                              "first_batch_s": starts[name]} for name, ts in times.items()}
    ref = report["pools"].get("torch", {}).get("images_per_s_best")
    print("after the first batch: best (median) images/s" + (", ratio of the best to torch's DataLoader on the same "
                                                            "batch function" if ref else "")
          + "; CPU-us per image, all processes (median); first batch after (median); workers' RSS, summed (max)")
    for name, v in report["pools"].items():
        ratio = f"  {v['images_per_s_best'] / ref:5.2f}x" if ref else ""
        ratio_median = (f" (median {v['images_per_s_median'] / report['pools']['torch']['images_per_s_median']:4.2f}x)"
                        if ref else "")
        print(f"  {name:16s} {v['images_per_s_best']:8.0f} ({v['images_per_s_median']:6.0f}){ratio}{ratio_median}   "
              f"{v['cpu_us_per_image_median']:6.1f} us   {v['first_batch_s_median']:.2f} s   "
              f"{v['rss_workers_mib_max']:.0f} MiB")
    report["load_average_end"] = os.getloadavg()[0]
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
