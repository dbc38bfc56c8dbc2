"""scripts/make_image_folder.py and scripts/bench_loader.py run (quickly) and write what they say."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dcnn.data.dataset import DatasetError
from dcnn.data.sources import image_folder

ROOT = Path(__file__).resolve().parents[1]
Image = pytest.importorskip("PIL.Image")


def run(*args, timeout=300):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DCNN_BACKEND": "numpy"}
    result = subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, env=env,
                            timeout=timeout, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    from dcnn.data.datasets import load
    try:
        load("fashion-mnist", download=False)
    except DatasetError as exc:
        pytest.skip(f"Fashion-MNIST is not installed here: {exc}")
    out = tmp_path_factory.mktemp("scripts") / "fm"
    said = run(ROOT / "scripts" / "make_image_folder.py", out, "--count", 64, "--test-count", 10, "--size", "24x20")
    assert "wrote 74 JPG files (3x24x20)" in said
    return out


def test_make_image_folder_writes_coloured_jpegs_in_the_split_layout(folder):
    train, test = image_folder(folder)
    assert len(train) == 64 and len(test) == 10 and len(train.classes) == 10
    assert "T-shirt_top" in train.classes
    with Image.open(train.describe(0)) as img:
        assert img.format == "JPEG" and img.mode == "RGB" and img.size == (20, 24)
        a = np.asarray(img).astype(int)
    assert np.abs(a[..., 0] - a[..., 1]).max() > 10             # tinted, not grey


def test_bench_loader_compares_the_pools_and_decoders(folder, tmp_path):
    pytest.importorskip("grain")
    pytest.importorskip("torch")
    out = tmp_path / "bench.json"
    said = run(ROOT / "scripts" / "bench_loader.py", folder, "--workers", 1, "--batch", 8, "--batches", 4,
               "--rounds", 1, "--decoders", "--pools", "grain,torch,pool", "--json", out)
    report = json.loads(out.read_text())
    assert set(report["pools"]) == {"grain", "torch", "pool"} and "pillow" in report["decoders"]
    assert all(v["images_per_s_best"] > 0 and v["cpu_us_per_image_median"] >= 0 for v in report["pools"].values())
    assert "ratio of the best to torch" in said
