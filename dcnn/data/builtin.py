"""Fashion-MNIST, MNIST (gzip IDX) and CIFAR-10 (binary version) as float32 NCHW in [0, 1].

No pickle anywhere: IDX and the CIFAR-10 *binary* records are plain bytes.

Where the files are looked for, in order:

1. ``data_dir`` (``--data-dir``) or ``$DCNN_DATA`` (the folder itself or its ``<dataset>/``);
2. the user cache, ``$XDG_CACHE_HOME/dcnn/<dataset>`` (default ``~/.cache/dcnn``);
3. the system copy (Debian's ``dataset-fashion-mnist`` installs /usr/share/datasets/fashion-mnist);
4. a download into the cache with pooch, checked against the published checksum and moved
   into place only once it matches.

A file that is truncated or corrupt (bad gzip stream, bad magic number, wrong size,
checksum mismatch) raises :class:`CorruptDataError` naming it: never a short dataset.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import os
import struct
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .dataset import CorruptDataError, DataNotFoundError, Dataset, DatasetError


@dataclass(frozen=True)
class DataFile:
    name: str
    md5: str                          # of the published file; downloads are checked against it
    content_sha256: str | None = None  # of the decompressed bytes: accepts recompressed copies (Debian's)
    member_sha1: tuple[tuple[str, str], ...] = ()  # (member, SHA-1) of an archive's files: accepts repacked copies


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    title: str
    base_url: str
    files: tuple[DataFile, ...]
    classes: tuple[str, ...]
    input_shape: tuple[int, int, int]
    counts: tuple[int, int]           # official train and test sizes
    system_dirs: tuple[str, ...] = ()
    how_to_get: tuple[str, ...] = ()


_IDX_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
              "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")

SPECS: dict[str, DatasetSpec] = {spec.name: spec for spec in (
    DatasetSpec(
        name="fashion-mnist", title="Fashion-MNIST",
        base_url="https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
        files=(
            DataFile(_IDX_FILES[0], "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                     "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"),
            DataFile(_IDX_FILES[1], "25c81989df183df01b3e8a0aad5dffbe",
                     "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"),
            DataFile(_IDX_FILES[2], "bef4ecab320f06d8554ea6380940ec79",
                     "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"),
            DataFile(_IDX_FILES[3], "bb300cfdad3c16e7a12a480ee83cd310",
                     "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"),
        ),
        classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                 "Bag", "Ankle boot"),
        input_shape=(1, 28, 28), counts=(60000, 10000),
        system_dirs=("/usr/share/datasets/fashion-mnist",),
        how_to_get=("on Debian/Ubuntu: sudo apt-get install dataset-fashion-mnist",),
    ),
    DatasetSpec(
        name="mnist", title="MNIST",
        base_url="https://storage.googleapis.com/cvdf-datasets/mnist/",
        files=(
            DataFile(_IDX_FILES[0], "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
            DataFile(_IDX_FILES[1], "d53e105ee54ea40749a09fcbcd1e9432"),
            DataFile(_IDX_FILES[2], "9fb629c4189551a2d022fa330f9573f3"),
            DataFile(_IDX_FILES[3], "ec29112dd5afa0611ce80d1b7f02629c"),
        ),
        classes=tuple(str(d) for d in range(10)),
        input_shape=(1, 28, 28), counts=(60000, 10000),
        system_dirs=("/usr/share/datasets/mnist",),
    ),
    DatasetSpec(
        name="cifar10", title="CIFAR-10 (binary version)",
        base_url="https://www.cs.toronto.edu/~kriz/",
        # The members' SHA-1s are those MXNet's Gluon CIFAR10 dataset checks (the same records).
        files=(DataFile("cifar-10-binary.tar.gz", "c32a1d4ab5d03f1284b67883e8d87530", member_sha1=(
            ("cifar-10-batches-bin/data_batch_1.bin", "aadd24acce27caa71bf4b10992e9e7b2d74c2540"),
            ("cifar-10-batches-bin/data_batch_2.bin", "c0ba65cce70568cd57b4e03e9ac8d2a5367c1795"),
            ("cifar-10-batches-bin/data_batch_3.bin", "1dd00a74ab1d17a6e7d73e185b69dbf31242f295"),
            ("cifar-10-batches-bin/data_batch_4.bin", "aab85764eb3584312d3c7f65fd2fd016e36a258e"),
            ("cifar-10-batches-bin/data_batch_5.bin", "26e2849e66a845b7f1e4614ae70f4889ae604628"),
            ("cifar-10-batches-bin/test_batch.bin", "67eb016db431130d61cd03c7ad570b013799c88c"))),),
        classes=("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
        input_shape=(3, 32, 32), counts=(50000, 10000),
        system_dirs=("/usr/share/datasets/cifar10", "/usr/share/datasets/cifar-10"),
    ),
)}
ALIASES = {"fashion_mnist": "fashion-mnist", "fashionmnist": "fashion-mnist", "fmnist": "fashion-mnist",
           "cifar-10": "cifar10", "cifar_10": "cifar10"}


def names() -> list[str]:
    return list(SPECS)


def get_spec(name: str) -> DatasetSpec:
    key = str(name).strip().lower()
    key = ALIASES.get(key, key)
    if key not in SPECS:
        raise DatasetError(f"unknown dataset {name!r}; valid ones are: {', '.join(SPECS)}")
    return SPECS[key]


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/dcnn``, by default ``~/.cache/dcnn``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "dcnn"


def search_dirs(spec: DatasetSpec, data_dir=None) -> list[tuple[str, Path]]:
    """(what, folder) pairs in the order they are searched."""
    places = []
    explicit = data_dir if data_dir is not None else os.environ.get("DCNN_DATA") or None
    if explicit is not None:
        what = "--data-dir" if data_dir is not None else "$DCNN_DATA"
        root = Path(explicit).expanduser()
        if not root.exists():    # a typo must not silently train on another copy
            raise DataNotFoundError(f"{root} ({what}) does not exist; point {what} at the folder that holds "
                                    f"the {spec.title} files, or leave it out to use the cache or the system copy")
        places += [(what, root / spec.name), (what, root)]
    places.append(("user cache", cache_dir() / spec.name))
    places += [("system copy", Path(d)) for d in spec.system_dirs]
    return places


def locate(spec: DatasetSpec, data_dir=None) -> tuple[Path | None, list[str]]:
    """The first folder holding all of the dataset's files, and a line per place searched."""
    searched = []
    for what, folder in search_dirs(spec, data_dir):
        if folder.exists() and not folder.is_dir():
            raise DatasetError(f"{folder} ({what}) is a file, not a folder; point {what} at the folder that holds "
                               f"the {spec.title} files")
        for f in spec.files:
            if (folder / f.name).exists() and not (folder / f.name).is_file():
                raise DatasetError(f"{folder / f.name} ({what}) is not a regular file (a folder?); "
                                   f"put the {spec.title} file {f.name} there, or remove it")
        present = [f.name for f in spec.files if (folder / f.name).is_file()]
        if len(present) == len(spec.files):
            return folder, searched
        if present:
            missing = [f.name for f in spec.files if f.name not in present]
            searched.append(f"{folder} ({what}): incomplete, missing {', '.join(missing)}")
        else:
            searched.append(f"{folder} ({what}): not there")
    return None, searched


def load(name: str = "fashion-mnist", data_dir=None, *, download: bool = True, verify: bool = True,
         progress: bool = False) -> Dataset:
    """A built-in dataset: local copies first, then a checked download into the cache.

    ``verify=False`` skips the checksums (for files you made yourself); the format
    and size checks always run.
    """
    spec = get_spec(name)
    folder, searched = locate(spec, data_dir)
    if folder is None:
        if download:
            folder = _download(spec, searched, progress)
        else:
            raise DataNotFoundError(_not_found_message(spec, searched, "downloading was turned off"))
    reader = _read_cifar10 if spec.name == "cifar10" else _read_idx_dataset
    x_train, y_train, x_test, y_test = reader(spec, folder, verify)
    if verify and (len(y_train), len(y_test)) != spec.counts:  # unreachable after the checksums; kept as a guard
        raise CorruptDataError(f"{folder}: {len(y_train)} training and {len(y_test)} test images, expected "
                               f"{spec.counts[0]} and {spec.counts[1]}")
    return Dataset(spec.name, x_train, y_train, x_test, y_test, spec.classes, folder)


# --- finding and fetching -----------------------------------------------------------------------

def _not_found_message(spec: DatasetSpec, searched: list[str], why: str) -> str:
    ways = list(spec.how_to_get) + [
        f"download {', '.join(f.name for f in spec.files)} from {spec.base_url} into "
        f"{cache_dir() / spec.name} (or any folder, then pass --data-dir FOLDER or set DCNN_DATA=FOLDER)",
        "or run again with network access: the files are downloaded into the cache and checked",
    ]
    return (f"{spec.title} was not found and could not be downloaded ({why}). Searched: "
            + "; ".join(searched) + ". To get it: " + "; ".join(ways) + ".")


def _download(spec: DatasetSpec, searched: list[str], progress: bool) -> Path:
    try:
        import pooch
    except ImportError:
        raise DataNotFoundError(_not_found_message(spec, searched, "pooch is not installed: pip install pooch")) \
            from None
    target = cache_dir() / spec.name
    pooch.get_logger().setLevel("INFO" if progress else "WARNING")
    for f in spec.files:
        if (target / f.name).is_file():
            continue
        url = spec.base_url + f.name
        try:
            # pooch writes to a temporary file, checks the hash, then renames: atomic.
            pooch.retrieve(url, known_hash=f"md5:{f.md5}", fname=f.name, path=target,
                           progressbar=progress, downloader=pooch.HTTPDownloader(timeout=60, progressbar=progress))
        except ValueError as exc:  # pooch's hash mismatch
            raise CorruptDataError(f"{url}: downloaded file failed its checksum ({exc}); try again later") from None
        except Exception as exc:  # no network, HTTP error...
            reason = _short_reason(exc)
            raise DataNotFoundError(_not_found_message(spec, searched, f"download of {url} failed: {reason}")) \
                from None
    return target


def _short_reason(exc: Exception) -> str:
    name = type(exc).__name__
    if name in ("ConnectionError", "NameResolutionError", "Timeout", "ConnectTimeout", "ReadTimeout"):
        return f"{name}: no connection to the server"
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{name}: {text[:160]}" if text else name


# --- reading and checking -----------------------------------------------------------------------

def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise DatasetError(f"{path}: cannot be read ({exc.strerror or exc})") from None


def _gunzip(path: Path, raw: bytes, limit: int, head_size: int = 0, size_from_head=None) -> bytes:
    """Decompress ``raw``, never producing more than ``limit`` bytes (a gzip bomb stops early).

    With ``size_from_head``, the first ``head_size`` bytes are decompressed first and
    ``size_from_head(head)`` gives the size the file's own header allows, a tighter limit.
    """
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(raw)) as f:
            head = f.read(head_size) if head_size else b""
            allowed = limit
            if size_from_head is not None:
                allowed = size_from_head(head)
                if allowed is None:          # not a header at all: the caller's parser says why
                    return head
                if allowed > limit:
                    raise CorruptDataError(f"{path}: its header asks for {allowed:,} bytes, more than any real file "
                                           f"of this dataset ({limit:,}); the file is corrupt (delete it and get it "
                                           "again)")
            rest = f.read(max(allowed - len(head), 0) + 1)
    except EOFError:
        raise CorruptDataError(f"{path}: the gzip stream ends early; the file is truncated "
                               f"(delete it and get it again)") from None
    except (OSError, zlib.error) as exc:  # BadGzipFile is an OSError: bad magic or CRC
        raise CorruptDataError(f"{path}: not a valid gzip file ({exc}); the file is corrupt "
                               f"(delete it and get it again)") from None
    if len(head) + len(rest) > allowed:
        raise CorruptDataError(f"{path}: decompresses to more than the {allowed:,} bytes "
                               f"{'its header gives' if size_from_head else 'a real file can have'}; stopped reading "
                               "there. The file is corrupt or a decompression bomb (delete it and get it again)")
    return head + rest


def _idx_size(ndim: int):
    """The total size an IDX header allows (None when it is not one: parse_idx says why)."""
    def size(head: bytes) -> int | None:
        if len(head) < 4 + 4 * ndim or head[:3] != b"\x00\x00\x08" or head[3] != ndim:
            return None
        return 4 + 4 * ndim + int(np.prod(struct.unpack(f">{ndim}I", head[4:4 + 4 * ndim]), dtype=np.int64))
    return size


def _max_idx_bytes(spec: "DatasetSpec", ndim: int) -> int:
    """Twice the official training file's size: room for files people make, none for a bomb."""
    per_sample = int(np.prod(spec.input_shape[1:])) if ndim == 3 else 1
    return 4 + 4 * ndim + 2 * spec.counts[0] * per_sample


def _verify(path: Path, raw: bytes, content: bytes, spec_file: DataFile) -> None:
    md5 = hashlib.md5(raw, usedforsecurity=False).hexdigest()
    if md5 == spec_file.md5:
        return
    if spec_file.content_sha256 is not None and hashlib.sha256(content).hexdigest() == spec_file.content_sha256:
        return
    raise CorruptDataError(f"{path}: checksum mismatch (md5 {md5}, expected {spec_file.md5}); the file is corrupt "
                           "or not the official one (delete it and get it again)")


def parse_idx(path, content: bytes, ndim: int) -> np.ndarray:
    """An IDX array of unsigned bytes (magic 0x000008<ndim>, big-endian dims, then the data)."""
    head = 4 + 4 * ndim
    if len(content) < head or content[:3] != b"\x00\x00\x08" or content[3] != ndim:
        raise CorruptDataError(f"{path}: bad magic number {content[:4].hex() or '(empty file)'}, expected "
                               f"0000080{ndim} (an IDX file of {ndim}-D unsigned bytes)")
    dims = struct.unpack(f">{ndim}I", content[4:head])
    expected = head + int(np.prod(dims, dtype=np.int64))
    if len(content) != expected:
        raise CorruptDataError(f"{path}: wrong size: {len(content)} bytes of data, but its header {dims} needs "
                               f"{expected}; the file is truncated or corrupt")
    return np.frombuffer(content, np.uint8, offset=head).reshape(dims)


def _images(u8: np.ndarray) -> np.ndarray:
    return np.divide(u8, np.float32(255), dtype=np.float32)  # exactly as torchvision's ToTensor


def _labels(path, labels: np.ndarray, classes: int) -> np.ndarray:
    if labels.size and int(labels.max()) >= classes:
        raise CorruptDataError(f"{path}: label {int(labels.max())} is out of range 0..{classes - 1}")
    return labels.astype(np.int64)


def _read_idx_dataset(spec: DatasetSpec, folder: Path, verify: bool):
    arrays = []
    for spec_file in spec.files:
        path = folder / spec_file.name
        raw = _read_bytes(path)
        ndim = 3 if "images" in spec_file.name else 1
        content = _gunzip(path, raw, _max_idx_bytes(spec, ndim), 4 + 4 * ndim, _idx_size(ndim))
        arrays.append(parse_idx(path, content, ndim))
        if verify:
            _verify(path, raw, content, spec_file)
    out = []
    for (img_file, lab_file), (images, labels) in zip(((spec.files[0], spec.files[1]), (spec.files[2], spec.files[3])),
                                                        ((arrays[0], arrays[1]), (arrays[2], arrays[3]))):
        img_path, lab_path = folder / img_file.name, folder / lab_file.name
        if tuple(images.shape[1:]) != spec.input_shape[1:]:
            raise CorruptDataError(f"{img_path}: images are {images.shape[1]}x{images.shape[2]}, "
                                   f"{spec.title} has {spec.input_shape[1]}x{spec.input_shape[2]}")
        if len(images) != len(labels):
            raise CorruptDataError(f"{img_path} holds {len(images)} images but {lab_path} holds {len(labels)} "
                                   "labels; one of them is truncated or from another dataset")
        out += [_images(images[:, None]), _labels(lab_path, labels, len(spec.classes))]
    return tuple(out)


_CIFAR_RECORD = 1 + 3 * 32 * 32
_CIFAR_MEMBERS = tuple(f"cifar-10-batches-bin/data_batch_{i}.bin" for i in range(1, 6)) + \
    ("cifar-10-batches-bin/test_batch.bin",)


def _read_cifar10(spec: DatasetSpec, folder: Path, verify: bool):
    spec_file = spec.files[0]
    path = folder / spec_file.name
    raw = _read_bytes(path)
    md5 = hashlib.md5(raw, usedforsecurity=False).hexdigest()
    mismatch = (f"{path}: checksum mismatch (md5 {md5}, expected {spec_file.md5}); the file is corrupt or not "
                "the official one (delete it and get it again)")
    if verify and md5 != spec_file.md5 and not spec_file.member_sha1:
        raise CorruptDataError(mismatch)
    # The archive holds six batches of records, a small readme and the class names.
    content = _gunzip(path, raw, sum(spec.counts) * _CIFAR_RECORD + (1 << 20))
    records = []
    try:
        # Members are read by name into memory: nothing is extracted to disk.
        with tarfile.open(fileobj=io.BytesIO(content), mode="r:") as tar:
            for member in _CIFAR_MEMBERS:
                try:
                    info = tar.getmember(member)
                except KeyError:
                    raise CorruptDataError(f"{path}: {member} is missing from the archive") from None
                handle = tar.extractfile(info) if info.isfile() else None
                if handle is None:
                    raise CorruptDataError(f"{path}: {member} is not a regular file")
                records.append((member, handle.read()))
    except tarfile.TarError as exc:
        raise CorruptDataError(f"{path}: not a valid tar archive ({exc})") from None
    if verify and md5 != spec_file.md5:
        # A repacked archive (other compression, order or tar headers) is accepted when every
        # member holds exactly the official bytes.
        expected = dict(spec_file.member_sha1)
        for member, data in records:
            if hashlib.sha1(data, usedforsecurity=False).hexdigest() != expected.get(member):
                raise CorruptDataError(f"{mismatch}: its {member} differs from the official one")
    parts = []
    for member, data in records:
        if len(data) == 0 or len(data) % _CIFAR_RECORD:
            raise CorruptDataError(f"{path}: {member} has {len(data)} bytes, not a whole number of "
                                   f"{_CIFAR_RECORD}-byte records; the archive is truncated or corrupt")
        table = np.frombuffer(data, np.uint8).reshape(-1, _CIFAR_RECORD)
        labels = _labels(f"{path}:{member}", table[:, 0], len(spec.classes))
        parts.append((table[:, 1:].reshape(-1, 3, 32, 32), labels))
    x_train = _images(np.concatenate([p[0] for p in parts[:5]]))
    y_train = np.concatenate([p[1] for p in parts[:5]])
    return x_train, y_train, _images(parts[5][0]), parts[5][1]
