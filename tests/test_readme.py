"""Every Python block of the README runs as written, in order, like the cells of a notebook.

The blocks are run unchanged; only the data is smaller: ``dcnn.datasets.load`` of a built-in
dataset gives a slice of it (or, where it is not installed, random images of its shape), and the
folders the README mentions (``pets/``) hold a few generated pictures.
"""
import re
from pathlib import Path

import numpy as np
import pytest

import backends
import dcnn
from dcnn.data import datasets

README = Path(__file__).resolve().parents[1] / "README.md"
Image = pytest.importorskip("PIL.Image")
pytest.importorskip("matplotlib", reason="the README's drawing block needs matplotlib")


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def test_the_readme_has_python_blocks():
    blocks = python_blocks(README.read_text())
    assert len(blocks) >= 5 and any("dcnn.load(" in b for b in blocks) and any("datasets.load(" in b for b in blocks)


def _small(real_load):
    def load(name="fashion-mnist", data_dir=None, **kwargs):
        if datasets.is_path(name):
            return real_load(name, data_dir, **kwargs)
        spec = datasets.get_spec(name)
        try:
            full = real_load(name, data_dir, download=False)
            x_train, y_train, x_test, y_test = full.x_train[:256], full.y_train[:256], full.x_test[:128], full.y_test[:128]
        except datasets.DatasetError:
            rng = np.random.default_rng(0)
            x_train, x_test = (rng.random((n, *spec.input_shape), np.float32) for n in (256, 128))
            y_train, y_test = (rng.integers(0, len(spec.classes), n) for n in (256, 128))
        return datasets.Dataset(spec.name, x_train, y_train, x_test, y_test, spec.classes)
    return load


def write_pets(root: Path):
    rng = np.random.default_rng(0)
    for label in ("cat", "dog"):
        (root / label).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(root / label / f"{i}.png")


def test_every_python_block_runs_as_written(tmp_path, monkeypatch):
    previous = backends.get_backend()
    backends.use("numpy")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(datasets, "load", _small(datasets.load))
    write_pets(tmp_path / "pets")
    namespace = {"__name__": "__readme__"}
    try:
        for number, block in enumerate(python_blocks(README.read_text()), 1):
            try:
                exec(compile(block, f"README.md python block {number}", "exec"), namespace)
            except Exception as exc:
                pytest.fail(f"README python block {number} failed: {type(exc).__name__}: {exc}\n{block}")
    finally:
        backends.use(previous)
    assert (tmp_path / "my_model.safetensors").is_file() and (tmp_path / "my_model.onnx").is_file()
    assert (tmp_path / "training.csv").is_file() and (tmp_path / "figures" / "cm.png").is_file()
    assert namespace["pets"].input_shape == (3, 64, 64)
