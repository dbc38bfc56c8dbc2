"""The streaming loader (issue 22): deterministic whatever the workers (3), resumable mid-epoch (4),
sharded (5), bad data skipped or refused (6), data-wait time (7).  Sources are in test_loader_sources,
worker failures in test_loader_workers, fit/evaluate in test_loader_fit.

``make_folder`` and ``index_images`` are shared with those files.
"""
import importlib.util
import json
import os

import numpy as np
import pytest

from dcnn.data.dataset import CorruptDataError
from dcnn.data.loader import Loader, SkippedImagesWarning
from dcnn.data.sources import ArrayImages, image_folder
from dcnn.data.transforms import Augment

Image = pytest.importorskip("PIL.Image")
# Loaders with workers run them on grain; without it, the tests of everything else still run.
needs_grain = pytest.mark.skipif(importlib.util.find_spec("grain") is None,
                                 reason="grain is not installed: pip install -e '.[stream]'")

AUG = Augment(flip=True, crop_padding=2, shift=1, brightness=0.2, contrast=0.2, saturation=0.2)


def make_folder(root, per_class=(7, 6, 5), size=16, test=2, seed=0, png_every=4):
    """root/train/<class>/*.jpg|png (and root/test/...): random colour blocks, a few as PNG."""
    rng = np.random.default_rng(seed)
    for split, counts in (("train", per_class), ("test", (test,) * len(per_class))):
        for c, n in enumerate(counts):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                a = rng.integers(0, 256, (size // 4, size // 4, 3), dtype=np.uint8).repeat(4, 0).repeat(4, 1)
                suffix = "png" if i % png_every == png_every - 1 else "jpg"
                Image.fromarray(a).save(folder / f"{i:03d}.{suffix}", quality=95)
    return root


def index_images(n=50, size=8):
    """An array source whose image i holds i in every pixel (so a batch says which images it holds)."""
    x = np.broadcast_to(np.arange(n, dtype=np.uint8)[:, None, None, None], (n, 3, size, size)).copy()
    return ArrayImages(x, np.arange(n) % 5)


def batches(loader, count=None):
    out = []
    for k, (x, y) in enumerate(loader):
        out.append((x.copy(), y.copy()))
        if count is not None and k + 1 == count:
            break
    return out


def same(a, b):
    return len(a) == len(b) and all(np.array_equal(x1, x2) and np.array_equal(y1, y2) and x1.dtype == x2.dtype
                                    for (x1, y1), (x2, y2) in zip(a, b))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_folder(tmp_path_factory.mktemp("loader") / "pics")


# --- 3. deterministic ------------------------------------------------------------------------------------

@needs_grain
def test_same_seed_same_batches_with_0_1_2_workers(folder):
    train, _ = image_folder(folder)
    runs = {}
    for workers in (0, 1, 2):
        with Loader(train, 4, seed=7, augment=AUG, workers=workers) as loader:
            runs[workers] = batches(loader) + batches(loader)       # two epochs
    assert len(runs[0]) == 2 * len(Loader(train, 4))
    assert runs[0][0][0].dtype == np.uint8 and runs[0][0][0].shape == (4, 3, 16, 16)
    assert same(runs[0], runs[1]) and same(runs[0], runs[2])
    # and the epochs differ (reshuffled, re-augmented), as does another seed
    assert not np.array_equal(runs[0][0][0], runs[0][len(runs[0]) // 2][0])
    assert not same(runs[0], batches(Loader(train, 4, seed=8, augment=AUG)) * 2)


def test_without_shuffle_an_epoch_is_the_source_in_order():
    source = index_images(23)
    got = batches(Loader(source, 5, shuffle=False))
    assert [len(y) for _, y in got] == [5, 5, 5, 5, 3]
    assert np.array_equal(np.concatenate([x[:, 0, 0, 0] for x, _ in got]), np.arange(23))
    assert len(batches(Loader(source, 5, shuffle=False, drop_last=True))) == 4


# --- 4. resume mid-epoch -----------------------------------------------------------------------------------

@pytest.mark.parametrize("workers_before, workers_after", [(0, 0), pytest.param(0, 2, marks=needs_grain),
                                                           pytest.param(2, 0, marks=needs_grain)])
def test_resumed_loader_yields_exactly_the_remaining_batches(folder, workers_before, workers_after):
    train, _ = image_folder(folder)
    make = lambda workers: Loader(train, 4, seed=3, augment=AUG, workers=workers)
    with make(0) as whole:
        reference = batches(whole) + batches(whole)                  # two uninterrupted epochs
    steps = len(whole)
    with make(workers_before) as first:
        done = batches(first, 2)                                    # stopped after 2 batches
        state = json.loads(json.dumps(first.state_dict()))          # as a checkpoint would keep it
    assert state["epoch"] == 0 and state["step"] == 2
    with make(workers_after) as resumed:
        resumed.load_state_dict(state)
        rest = batches(resumed) + batches(resumed)
    assert same(done + rest, reference) and len(rest) == 2 * steps - 2


def test_resume_refuses_a_state_from_a_different_loader():
    source = index_images(30)
    state = Loader(source, 4, seed=1).state_dict()
    for other in (Loader(source, 5, seed=1), Loader(source, 4, seed=2), Loader(source, 4, seed=1, augment=AUG),
                  Loader(index_images(31), 4, seed=1)):
        with pytest.raises(ValueError, match="built differently"):
            other.load_state_dict(state)
    with pytest.raises(ValueError, match="not a loader state"):
        Loader(source, 4).load_state_dict({"epoch": 1})


def test_set_epoch_keeps_a_restored_position_and_moves_otherwise():
    loader = Loader(index_images(30), 4, seed=1)
    loader.load_state_dict({**loader.state_dict(), "epoch": 3, "step": 5})
    loader.set_epoch(3)
    assert (loader.epoch, loader.step) == (3, 5)
    loader.set_epoch(4)
    assert (loader.epoch, loader.step) == (4, 0)
    walked = Loader(index_images(30), 4, seed=1)
    for _ in range(4):
        batches(walked)
    assert walked.epoch == 4 and same(batches(loader), batches(walked))


# --- 5. sharding -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("ranks", [2, 3])
def test_ranks_read_disjoint_parts_whose_union_is_the_epoch(ranks):
    source = index_images(50)
    single = batches(Loader(source, 8, seed=4, augment=Augment(flip=True)))
    parts = [batches(Loader(source, 8, seed=4, augment=Augment(flip=True), rank=r, ranks=ranks))
             for r in range(ranks)]
    seen = [np.concatenate([x[:, 0, 0, 0] for x, _ in part]) for part in parts]
    assert sum(len(s) for s in seen) == 50
    assert np.array_equal(np.sort(np.concatenate(seen)), np.arange(50))        # disjoint, and all of it
    for step, (x, y) in enumerate(single):
        # each rank holds its contiguous part of the global batch, augmented as the single process did
        joined = np.concatenate([part[step][0] for part in parts])
        assert np.array_equal(joined, x) and np.array_equal(np.concatenate([part[step][1] for part in parts]), y)


def test_sharding_arguments_are_checked():
    with pytest.raises(ValueError, match="rank must be in"):
        Loader(index_images(10), 2, rank=2, ranks=2)


# --- 6. bad data ------------------------------------------------------------------------------------------

def _damage(train_dir):
    """Four kinds of bad file among the good ones (the fifth, deleted after indexing, is ``gone.jpg``)."""
    data = sorted((train_dir / "class0").glob("*.jpg"))[0].read_bytes()
    (train_dir / "class0" / "truncated.jpg").write_bytes(data[:len(data) // 2])
    (train_dir / "class1" / "empty.jpg").write_bytes(b"")
    (train_dir / "class1" / "text.jpg").write_text("this is not a picture\n")
    (train_dir / "class2" / "gone.jpg").write_bytes(data)
    return [train_dir / "class0" / "truncated.jpg", train_dir / "class1" / "empty.jpg",
            train_dir / "class1" / "text.jpg", train_dir / "class2" / "gone.jpg"]


@pytest.mark.parametrize("workers", [0, pytest.param(1, marks=needs_grain)])
def test_bad_files_are_skipped_with_a_count_and_their_paths(tmp_path, workers):
    root = make_folder(tmp_path / "pics")
    bad = _damage(root / "train")
    train, _ = image_folder(root)                   # indexing opens nothing: all of them are listed
    bad[-1].unlink()                                # deleted after indexing
    with pytest.warns(SkippedImagesWarning) as record, Loader(train, 4, seed=0, workers=workers) as loader:
        got = batches(loader)
    assert sum(len(y) for _, y in got) == len(train) - 4
    message = str(record[0].message)
    assert message.startswith("4 images of pics/train could not be read in epoch 0") and "strict=True" in message
    for path in bad:
        assert str(path) in message
    assert "No such file" in message and "empty file" in message and "not a readable" in message
    with pytest.warns(SkippedImagesWarning, match="in epoch 1"):     # each epoch says it again
        batches(loader)


def test_an_unreadable_file_is_skipped(tmp_path):
    root = make_folder(tmp_path / "pics", per_class=(2, 2, 2))
    locked = root / "train" / "class1" / "000.jpg"
    os.chmod(locked, 0)
    try:
        if os.access(locked, os.R_OK):
            pytest.skip("running as root (or with CAP_DAC_OVERRIDE): chmod 000 does not stop reads here")
        with pytest.warns(SkippedImagesWarning, match=r"^1 image .*000\.jpg \(Permission denied\)"):
            got = batches(Loader(image_folder(root)[0], 4))
        assert sum(len(y) for _, y in got) == 5
    finally:
        os.chmod(locked, 0o644)


def test_a_read_refused_by_the_system_is_skipped(tmp_path, monkeypatch):
    """What an unreadable file raises (PermissionError), whoever runs the tests (root reads anything)."""
    from dcnn.data.sources import ImageFiles
    root = make_folder(tmp_path / "pics", per_class=(2, 2, 2))
    locked = str(root / "train" / "class1" / "000.jpg")
    real = ImageFiles.read

    def read(self, i):
        if self.describe(i) == locked:
            raise PermissionError(13, "Permission denied", locked)
        return real(self, i)
    monkeypatch.setattr(ImageFiles, "read", read)
    with pytest.warns(SkippedImagesWarning, match=r"^1 image .*000\.jpg \(Permission denied\)"):
        got = batches(Loader(image_folder(root)[0], 4))
    assert sum(len(y) for _, y in got) == 5


def test_more_than_five_bad_files_are_counted_and_five_named(tmp_path):
    root = make_folder(tmp_path / "pics", per_class=(8, 2, 2), png_every=100)
    for p in (root / "train" / "class0").glob("*.jpg"):
        p.write_bytes(b"")
    with pytest.warns(SkippedImagesWarning, match=r"^8 images .*; and 3 more\. Pass strict=True") as record:
        batches(Loader(image_folder(root)[0], 4))
    assert str(record[0].message).count("empty file") == 5


def test_strict_makes_a_bad_file_an_error(tmp_path):
    root = make_folder(tmp_path / "pics", per_class=(3, 3, 3))
    (root / "train" / "class1" / "000.jpg").write_bytes(b"GIF89a not really")
    train, _ = image_folder(root)
    with pytest.raises(CorruptDataError, match=r"000\.jpg cannot be read: .*strict=True"):
        batches(Loader(train, 4, strict=True))


def test_a_batch_of_only_bad_files_is_left_out(tmp_path):
    root = make_folder(tmp_path / "pics", per_class=(2, 2, 2), png_every=100)
    for p in (root / "train" / "class0").glob("*.jpg"):
        p.write_bytes(b"")
    train, _ = image_folder(root)
    with pytest.warns(SkippedImagesWarning, match="^2 images"):
        got = batches(Loader(train, 2, shuffle=False))
    assert [len(y) for _, y in got] == [2, 2] and len(Loader(train, 2)) == 3


# --- 7. data wait -------------------------------------------------------------------------------------------

def test_each_step_reports_how_long_it_waited_for_data():
    loader = Loader(index_images(30), 4)
    for k, _ in enumerate(loader):
        assert loader.last_wait >= 0 and len(loader.waits) == k + 1 and loader.last_step == k
    assert len(loader.waits) == len(loader) == 8 and loader.last_wait == loader.waits[-1]
    assert (loader.epoch, loader.step) == (1, 0)          # the position is the next batch's


@needs_grain
def test_prefetching_workers_hide_the_loading_behind_a_slow_consumer(tmp_path):
    import time
    root = make_folder(tmp_path / "pics", per_class=(20, 20, 20), size=64)
    with Loader(image_folder(root)[0], 6, workers=2, prefetch=2, augment=AUG) as loader:
        for _ in loader:
            time.sleep(0.15)                              # the "training step"
        waits = loader.waits
    in_process = Loader(image_folder(root)[0], 6, augment=AUG)
    batches(in_process)
    # after the first batch (worker start-up), the batches are ready before they are asked for
    assert np.median(waits[2:]) < 0.5 * np.median(in_process.waits) and np.median(waits[2:]) < 0.02


# --- arguments ---------------------------------------------------------------------------------------------

def test_bad_arguments_name_the_problem(folder):
    train, _ = image_folder(folder)
    with pytest.raises(ValueError, match="batch_size"):
        Loader(train, 0)
    with pytest.raises(ValueError, match="workers"):
        Loader(train, 4, workers=-1)
    with pytest.raises(ValueError, match="channels must be 1"):
        Loader(train, 4, channels=2)
    with pytest.raises(ValueError, match="image_size"):
        Loader(train, 4, image_size=(0, 4))
    with pytest.raises(ValueError, match="decoder"):
        Loader(train, 4, decoder="magic")
    with pytest.raises(TypeError, match="augment"):
        Loader(train, 4, augment=lambda x: x)
    with pytest.raises(ValueError, match="are not resized"):
        Loader(index_images(10), 4, image_size=16)
    with pytest.raises(ValueError, match="no whole batch"):
        Loader(index_images(3), 4, drop_last=True)


def test_resize_and_channels_come_from_the_first_image_or_the_arguments(folder):
    train, _ = image_folder(folder)
    assert Loader(train, 4).input_shape == (3, 16, 16)
    x, _ = next(iter(Loader(train, 4, image_size=(8, 12), channels=1)))
    assert x.shape == (4, 1, 8, 12) and x.dtype == np.uint8
