"""dcnn.datasets on tiny files written in exactly the real formats, plus the real Fashion-MNIST when installed."""
import dataclasses
import gzip
import hashlib
import io
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest

from dcnn.data import builtin, datasets
from dcnn.data.datasets import CorruptDataError, DataNotFoundError

SYSTEM_FASHION = Path("/usr/share/datasets/fashion-mnist")


def idx_bytes(array: np.ndarray) -> bytes:
    array = np.asarray(array, dtype=np.uint8)
    return struct.pack(">4B", 0, 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def write_idx_dataset(folder: Path, n_train=12, n_test=5, seed=0) -> dict:
    """The four gzip IDX files of (Fashion-)MNIST, with random content; returns the arrays."""
    rng = np.random.default_rng(seed)
    arrays = {"train-images-idx3-ubyte.gz": rng.integers(0, 256, (n_train, 28, 28)),
              "train-labels-idx1-ubyte.gz": rng.integers(0, 10, n_train),
              "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (n_test, 28, 28)),
              "t10k-labels-idx1-ubyte.gz": rng.integers(0, 10, n_test)}
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        (folder / name).write_bytes(gzip.compress(idx_bytes(array)))
    return arrays


def cifar_archive(path: Path, per_batch=3, seed=0, truncate_member=None) -> dict:
    """cifar-10-binary.tar.gz: 5 training batches and a test batch of 1-label-byte + 3072-pixel-byte records."""
    rng = np.random.default_rng(seed)
    records = {}
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for member in builtin._CIFAR_MEMBERS:
            table = rng.integers(0, 256, (per_batch, 3073)).astype(np.uint8)
            table[:, 0] = rng.integers(0, 10, per_batch)
            records[member] = table
            data = table.tobytes()
            if member == truncate_member:
                data = data[:-100]
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buffer.getvalue())
    return records


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """No $DCNN_DATA, a private cache and no system copy, so only what a test writes is found."""
    monkeypatch.delenv("DCNN_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    for name, spec in list(datasets.SPECS.items()):
        monkeypatch.setitem(datasets.SPECS, name,
                            dataclasses.replace(spec, system_dirs=(str(tmp_path / "system" / name),)))
    return tmp_path


def test_idx_round_trip_shapes_dtype_range(isolated):
    arrays = write_idx_dataset(isolated / "data")
    ds = datasets.load("fashion-mnist", isolated / "data", download=False, verify=False)
    assert ds.x_train.shape == (12, 1, 28, 28) and ds.x_test.shape == (5, 1, 28, 28)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    np.testing.assert_array_equal(ds.x_train[:, 0], arrays["train-images-idx3-ubyte.gz"].astype(np.float32) / 255)
    np.testing.assert_array_equal(ds.y_test, arrays["t10k-labels-idx1-ubyte.gz"])
    assert 0.0 <= ds.x_train.min() and ds.x_train.max() <= 1.0
    assert ds.classes[0] == "T-shirt/top" and ds.num_classes == 10 and ds.input_shape == (1, 28, 28)
    assert ds.limit(4).x_train.shape[0] == 4 and ds.limit(4).x_test.shape[0] == 4   # --limit: a quick test pass too
    assert ds.limit(6).x_test.shape[0] == 5 and ds.limit(12) is ds


def test_search_order_explicit_then_env_then_cache_then_system(isolated, monkeypatch):
    system = isolated / "system" / "mnist"
    write_idx_dataset(system, n_train=3)
    assert datasets.load("mnist", download=False, verify=False).source == system
    cache = isolated / "cache" / "dcnn" / "mnist"
    write_idx_dataset(cache, n_train=4)
    assert datasets.load("mnist", download=False, verify=False).source == cache
    env = isolated / "env"
    write_idx_dataset(env / "mnist", n_train=5)          # $DCNN_DATA/<dataset>/ works...
    monkeypatch.setenv("DCNN_DATA", str(env))
    assert len(datasets.load("mnist", download=False, verify=False).y_train) == 5
    explicit = isolated / "explicit"
    write_idx_dataset(explicit, n_train=6)               # ...and so does the folder itself
    ds = datasets.load("mnist", explicit, download=False, verify=False)
    assert ds.source == explicit and len(ds.y_train) == 6


def test_not_found_lists_places_and_ways_to_get_it(isolated):
    (isolated / "nowhere").mkdir()          # empty (a folder that does not exist is an error of its own)
    with pytest.raises(DataNotFoundError) as err:
        datasets.load("fashion-mnist", isolated / "nowhere", download=False)
    message = str(err.value)
    assert str(isolated / "nowhere") in message and str(isolated / "cache" / "dcnn" / "fashion-mnist") in message
    assert str(isolated / "system" / "fashion-mnist") in message
    assert "apt-get install dataset-fashion-mnist" in message and "DCNN_DATA" in message


def test_failed_download_reports_places_searched(isolated, monkeypatch):
    import pooch

    def offline(*args, **kwargs):
        raise ConnectionError("Name or service not known")
    monkeypatch.setattr(pooch, "retrieve", offline)
    with pytest.raises(DataNotFoundError, match="download of https://.*failed.*Searched") as err:
        datasets.load("mnist")
    assert "user cache" in str(err.value)


def test_download_goes_to_cache_with_checksum(isolated, monkeypatch):
    import pooch
    source = isolated / "upstream"
    write_idx_dataset(source)
    md5 = {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in source.iterdir()}
    spec = datasets.SPECS["mnist"]
    monkeypatch.setitem(datasets.SPECS, "mnist", dataclasses.replace(
        spec, counts=(12, 5), files=tuple(dataclasses.replace(f, md5=md5[f.name]) for f in spec.files)))
    calls = []

    def fake_retrieve(url, known_hash, fname, path, **kwargs):
        calls.append((url, known_hash))
        Path(path).mkdir(parents=True, exist_ok=True)
        (Path(path) / fname).write_bytes((source / fname).read_bytes())
        return str(Path(path) / fname)
    monkeypatch.setattr(pooch, "retrieve", fake_retrieve)
    ds = datasets.load("mnist")                         # verify=True: the checksums match
    assert ds.source == isolated / "cache" / "dcnn" / "mnist" and len(calls) == 4
    assert all(h.startswith("md5:") and url.startswith("https://") for url, h in calls)
    datasets.load("mnist")                              # now cached: no second download
    assert len(calls) == 4


def test_truncated_gzip_names_the_file(isolated):
    write_idx_dataset(isolated / "d")
    path = isolated / "d" / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(CorruptDataError, match="train-images-idx3-ubyte.gz.*truncated"):
        datasets.load("fashion-mnist", isolated / "d", download=False, verify=False)


def test_bad_magic_names_the_file(isolated):
    write_idx_dataset(isolated / "d")
    path = isolated / "d" / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.decompress(path.read_bytes()))
    raw[2] = 0x0D                                       # float type instead of unsigned byte
    path.write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(CorruptDataError, match="t10k-labels-idx1-ubyte.gz: bad magic number"):
        datasets.load("fashion-mnist", isolated / "d", download=False, verify=False)


def test_wrong_size_never_gives_a_short_dataset(isolated):
    write_idx_dataset(isolated / "d")
    path = isolated / "d" / "train-images-idx3-ubyte.gz"
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw[:-784]))         # one image short of what the header says
    with pytest.raises(CorruptDataError, match="train-images-idx3-ubyte.gz: wrong size"):
        datasets.load("fashion-mnist", isolated / "d", download=False, verify=False)


def test_images_and_labels_disagree(isolated):
    write_idx_dataset(isolated / "d")
    (isolated / "d" / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.zeros(11))))
    with pytest.raises(CorruptDataError, match="12 images but .*11 labels"):
        datasets.load("fashion-mnist", isolated / "d", download=False, verify=False)


def test_checksum_mismatch_names_the_file(isolated):
    write_idx_dataset(isolated / "d")                   # valid IDX, but not the official files
    with pytest.raises(CorruptDataError, match="train-images-idx3-ubyte.gz: checksum mismatch"):
        datasets.load("fashion-mnist", isolated / "d", download=False)


def test_cifar10_binary_records(isolated):
    records = cifar_archive(isolated / "c" / "cifar-10-binary.tar.gz")
    ds = datasets.load("cifar10", isolated / "c", download=False, verify=False)
    assert ds.x_train.shape == (15, 3, 32, 32) and ds.x_test.shape == (3, 3, 32, 32)
    first = records[builtin._CIFAR_MEMBERS[0]][0]
    assert ds.y_train[0] == first[0]
    # 1024 red bytes, then green, then blue, each row-major.
    np.testing.assert_array_equal(ds.x_train[0, 0, 0, :3], first[1:4].astype(np.float32) / 255)
    np.testing.assert_array_equal(ds.x_train[0, 1, 0, 0], np.float32(first[1 + 1024]) / 255)
    test = records[builtin._CIFAR_MEMBERS[-1]]
    np.testing.assert_array_equal(ds.y_test, test[:, 0])
    assert ds.classes[0] == "airplane" and ds.input_shape == (3, 32, 32)


def test_cifar10_truncated_member_and_checksum(isolated):
    cifar_archive(isolated / "c" / "cifar-10-binary.tar.gz", truncate_member=builtin._CIFAR_MEMBERS[2])
    with pytest.raises(CorruptDataError, match="cifar-10-binary.tar.gz: .*data_batch_3.bin.*truncated"):
        datasets.load("cifar10", isolated / "c", download=False, verify=False)
    with pytest.raises(CorruptDataError, match="cifar-10-binary.tar.gz: checksum mismatch"):
        datasets.load("cifar10", isolated / "c", download=False)
    (isolated / "c" / "cifar-10-binary.tar.gz").write_bytes(b"not a gzip file at all")
    with pytest.raises(CorruptDataError, match="cifar-10-binary.tar.gz: not a valid gzip"):
        datasets.load("cifar10", isolated / "c", download=False, verify=False)


def test_unknown_dataset_lists_valid_ones():
    with pytest.raises(datasets.DatasetError, match="valid ones are: fashion-mnist, mnist, cifar10"):
        datasets.load("imagenet")


@pytest.mark.skipif(not SYSTEM_FASHION.is_dir(),
                    reason="Debian's dataset-fashion-mnist is not installed (apt-get install dataset-fashion-mnist)")
def test_real_fashion_mnist_checks_out(monkeypatch, tmp_path):
    monkeypatch.delenv("DCNN_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    ds = datasets.load("fashion-mnist", download=False)   # Debian's recompressed copy: content checksums
    assert ds.source == SYSTEM_FASHION
    assert ds.x_train.shape == (60000, 1, 28, 28) and ds.x_test.shape == (10000, 1, 28, 28)
    assert np.bincount(ds.y_test).tolist() == [1000] * 10


def repack(records: dict, path: Path, extra=True) -> None:
    """The same member bytes in another archive: reversed order, another gzip level, an extra file."""
    tar_bytes = io.BytesIO()
    with tarfile.open(fileobj=tar_bytes, mode="w") as tar:
        members = list(records.items())[::-1] + ([("cifar-10-batches-bin/readme.html", b"<p>hi</p>")] if extra else [])
        for member, data in members:
            info = tarfile.TarInfo(member)
            info.size, info.mtime = len(data), 1234567890
            tar.addfile(info, io.BytesIO(data))
    path.write_bytes(gzip.compress(tar_bytes.getvalue(), compresslevel=1))


def make_official(monkeypatch, records: dict) -> dict:
    """Let a generated archive's members stand for the official ones (their hashes and counts)."""
    data = {member: table.tobytes() for member, table in records.items()}
    spec = datasets.SPECS["cifar10"]
    official = dataclasses.replace(spec.files[0], member_sha1=tuple(
        (m, hashlib.sha1(d).hexdigest()) for m, d in data.items()))
    per_batch = len(records[builtin._CIFAR_MEMBERS[0]])
    monkeypatch.setitem(datasets.SPECS, "cifar10", dataclasses.replace(spec, files=(official,),
                                                                        counts=(5 * per_batch, per_batch)))
    return data


def test_cifar10_repacked_copy_is_accepted_by_content(isolated, monkeypatch):
    records = cifar_archive(isolated / "c" / "cifar-10-binary.tar.gz", per_batch=2)
    data = make_official(monkeypatch, records)
    path = isolated / "c" / "cifar-10-binary.tar.gz"
    repack(data, path)
    ds = datasets.load("cifar10", isolated / "c", download=False)          # verified by content
    np.testing.assert_array_equal(ds.y_test, records[builtin._CIFAR_MEMBERS[-1]][:, 0])
    changed = dict(data)
    member = builtin._CIFAR_MEMBERS[3]
    changed[member] = bytes([data[member][0] ^ 1]) + data[member][1:]   # one label flipped
    repack(changed, path)
    with pytest.raises(CorruptDataError, match=r"checksum mismatch .*data_batch_4.bin differs from the official"):
        datasets.load("cifar10", isolated / "c", download=False)


def test_cifar10_official_member_hashes_are_known():
    members = dict(datasets.SPECS["cifar10"].files[0].member_sha1)
    assert set(members) == set(builtin._CIFAR_MEMBERS)
    assert all(len(h) == 40 and int(h, 16) >= 0 for h in members.values())


def test_cifar10_trains_end_to_end_with_three_channels(isolated, tmp_path, monkeypatch):
    """dcnn train on a generated, repacked archive in the real binary format: 3-channel 32x32 images."""
    from dcnn.train import job as training
    path = isolated / "c" / "cifar-10-binary.tar.gz"
    repack(make_official(monkeypatch, cifar_archive(path, per_batch=8)), path)
    config = training.TrainConfig(dataset="cifar10", model="resnet", epochs=1, batch_size=16,
                                  data_dir=str(isolated / "c"))
    summary = training.train(config, tmp_path / "run", progress=False, echo=lambda *a: None)
    assert summary["train_images"] == 40 and np.isfinite(summary["test_loss"])
    from dcnn import DCNNetwork
    from dcnn.model import presets
    net = presets.get_preset("resnet").build((3, 32, 32), 10)
    net.load_weights(tmp_path / "run" / "weights.safetensors")
    assert net.predict(np.zeros((2, 3, 32, 32), np.float32)).shape == (2, 10)
    assert isinstance(net, DCNNetwork)


# --- issue 13: hostile files and paths ---------------------------------------------------------------

def test_gzip_bomb_stops_at_the_size_the_header_allows(isolated):
    import tracemalloc
    write_idx_dataset(isolated / "d")
    path = isolated / "d" / "train-labels-idx1-ubyte.gz"
    bomb = 64 << 20                                    # 64 MiB of zeros after a 12-label header: ~64 KiB gzipped
    path.write_bytes(gzip.compress(idx_bytes(np.zeros(12)) + bytes(bomb), compresslevel=1))
    tracemalloc.start()
    try:
        with pytest.raises(CorruptDataError, match=r"train-labels-idx1-ubyte.gz: decompresses to more than the 20 "
                                                   r"bytes its header gives; stopped reading"):
            datasets.load("fashion-mnist", isolated / "d", download=False, verify=False)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < bomb // 8, f"decompressed too much before stopping: peak {peak:,} bytes"


def test_idx_header_asking_for_absurd_sizes_is_refused_before_reading(isolated):
    write_idx_dataset(isolated / "d")
    head = struct.pack(">4B", 0, 0, 8, 3) + struct.pack(">3I", 4_000_000_000, 28, 28)
    (isolated / "d" / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(head + bytes(100)))
    with pytest.raises(CorruptDataError, match=r"train-images-idx3-ubyte.gz: its header asks for "
                                               r"3,136,000,000,016 bytes, more than any real file"):
        datasets.load("fashion-mnist", isolated / "d", download=False, verify=False)


def test_cifar10_gzip_bomb_stops_at_the_archive_size_limit(isolated, monkeypatch):
    spec = datasets.SPECS["cifar10"]
    monkeypatch.setitem(datasets.SPECS, "cifar10", dataclasses.replace(spec, counts=(15, 3)))
    (isolated / "c").mkdir()
    (isolated / "c" / "cifar-10-binary.tar.gz").write_bytes(gzip.compress(bytes(8 << 20), compresslevel=1))
    with pytest.raises(CorruptDataError, match="cifar-10-binary.tar.gz: decompresses to more than the 1,103,890 "
                                               "bytes a real file can have"):
        datasets.load("cifar10", isolated / "c", download=False, verify=False)


def test_a_folder_where_a_dataset_file_should_be_is_an_error_not_another_copy(isolated):
    write_idx_dataset(isolated / "cache" / "dcnn" / "fashion-mnist")   # a good copy further down the search
    write_idx_dataset(isolated / "d")
    (isolated / "d" / "t10k-labels-idx1-ubyte.gz").unlink()
    (isolated / "d" / "t10k-labels-idx1-ubyte.gz").mkdir()
    with pytest.raises(datasets.DatasetError, match=r"t10k-labels-idx1-ubyte.gz \(--data-dir\) is not a regular "
                                                    r"file \(a folder\?\)"):
        datasets.load("fashion-mnist", isolated / "d", download=False, verify=False)


def test_data_dir_that_is_a_regular_file_is_an_error_not_another_copy(isolated, monkeypatch):
    write_idx_dataset(isolated / "cache" / "dcnn" / "fashion-mnist")
    (isolated / "f").write_text("not a folder")
    with pytest.raises(datasets.DatasetError, match=r"f \(--data-dir\) is a file, not a folder"):
        datasets.load("fashion-mnist", isolated / "f", download=False, verify=False)
    monkeypatch.setenv("DCNN_DATA", str(isolated / "f"))
    with pytest.raises(datasets.DatasetError, match=r"\$DCNN_DATA\) is a file, not a folder"):
        datasets.load("fashion-mnist", download=False, verify=False)
