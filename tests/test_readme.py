"""The README as a new user reads it.

- Every Python block runs as written, in order, like the cells of a notebook. The blocks are run
  unchanged; only the data is smaller: ``dcnn.datasets.load`` of a built-in dataset gives a slice
  of it (or, where it is not installed, random images of its shape; for fashion-mosaic, mosaics of
  random garments with their masks). The README makes its own image folder (``pictures/``), and
  the commands it then shows for that folder are run too.
- Every file or folder of the repository that the README names (``dcnn/model/parameters.py``,
  ``scripts/bench.py``, ``docs/...``) exists, and every module or name it gives as
  ``dcnn.x.y`` or ``backends.x`` resolves.
"""
import importlib
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import backends
import dcnn
from dcnn.data import datasets, mosaic

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

# The repository's top-level folders: a path in the README that starts with one of them names a
# file of the repository (``runs/...``, ``pets/...``, ``~/.cache/dcnn`` are the reader's, not ours).
REPO_FOLDERS = ("dcnn", "backends", "scripts", "tests", "docs", ".ci")
REPO_PATH = re.compile(r"(?<![\w./~$<>-])((?:%s)/[\w./*<>-]*)" % "|".join(re.escape(f) for f in REPO_FOLDERS))
# A bare test file name (as in "`tests/test_faults.py`, `test_runaway.py`") is one of tests/.
TEST_FILE = re.compile(r"`(test_\w+\.py)`")
# A Markdown link or picture to a file of the repository: [text](path) or ![text](path).
LINK = re.compile(r"\]\((?!https?:|#|mailto:)([^)\s]+)\)")
# A dotted name of the library: ``dcnn.io.export.export_onnx``, ``backends.get_backend``.
DOTTED = re.compile(r"(?<![\w./-])((?:dcnn|backends)(?:\.[A-Za-z_]\w*)+)")


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def section(text: str, heading: str) -> str:
    """The text under a Markdown heading, up to the next heading of any level."""
    start = text.index(heading + "\n") + len(heading) + 1
    following = re.search(r"^#", text[start:], flags=re.M)
    return text[start:start + following.start()] if following else text[start:]


def bash_commands(text: str) -> list[str]:
    """The command lines of the ```bash blocks in ``text``, comments removed."""
    lines = []
    for block in re.findall(r"^```bash\n(.*?)^```", text, flags=re.S | re.M):
        for line in block.splitlines():
            line = line.split("#")[0].strip()
            if line:
                lines.append(line)
    return lines


def repo_paths(text: str) -> set[str]:
    """Every path of the repository that ``text`` names."""
    paths = {m.rstrip(".") for m in REPO_PATH.findall(text)}
    paths |= {f"tests/{name}" for name in TEST_FILE.findall(text)}
    paths |= {link for link in LINK.findall(text) if "/" in link or "." in link}
    return paths


def missing_paths(text: str, root: Path = ROOT) -> list[str]:
    missing = []
    for path in sorted(repo_paths(text)):
        if "<" in path:                                   # a pattern: DIR/<dataset>/
            continue
        exists = any(root.glob(path)) if "*" in path else (root / path).exists()
        if not exists:
            missing.append(path)
    return missing


def unresolved_names(text: str) -> list[str]:
    """The ``dcnn.x.y`` and ``backends.x`` names in ``text`` that are neither a module nor an attribute."""
    bad = []
    for dotted in sorted(set(DOTTED.findall(text))):
        parts = dotted.split(".")
        for cut in range(len(parts), 0, -1):              # the longest importable module, then attributes
            try:
                obj = importlib.import_module(".".join(parts[:cut]))
                break
            except ImportError:
                continue
        try:
            for name in parts[cut:]:
                obj = getattr(obj, name)
        except AttributeError:
            bad.append(dotted)
    return bad


def test_the_readme_has_python_blocks():
    blocks = python_blocks(README.read_text())
    assert len(blocks) >= 5 and any("dcnn.load(" in b for b in blocks) and any("datasets.load(" in b for b in blocks)


def test_every_repo_path_in_the_readme_exists():
    text = README.read_text()
    assert len(repo_paths(text)) >= 20             # the extraction sees them (in prose, code and links)
    assert missing_paths(text) == [], "README.md names files that do not exist"


def test_every_dotted_name_in_the_readme_resolves():
    text = README.read_text()
    assert len(set(DOTTED.findall(text))) >= 5
    assert unresolved_names(text) == [], "README.md names modules or attributes that do not exist"


def test_the_checks_catch_a_moved_file_and_module():
    """The two checks above can fail: paths and names from before the package layout are caught."""
    old = ("The loop is in `dcnn/training.py` (see dcnn/cli.py, `test_nothing_here.py` and "
           "[the pictures](docs/no-such-picture.png)); `dcnn.training.train` and `dcnn.checkpoint`.\n"
           "```bash\npython scripts/no_such_script.py\n```\n")
    assert missing_paths(old) == ["dcnn/cli.py", "dcnn/training.py", "docs/no-such-picture.png",
                                  "scripts/no_such_script.py", "tests/test_nothing_here.py"]
    assert unresolved_names(old) == ["dcnn.checkpoint", "dcnn.training.train"]
    new = "`dcnn/train/job.py`, dcnn/cli/, `test_layout.py`, `dcnn.train.train`, `dcnn.io.checkpoint`."
    assert missing_paths(new) == [] and unresolved_names(new) == []


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_link_to_a_readme_section_lands():
    text = re.sub(r"^```.*?^```", "", README.read_text(), flags=re.S | re.M)     # no headings in code
    anchors, seen = set(), {}
    for heading in re.findall(r"^#+ (.*)$", text, flags=re.M):
        base = slug(heading)
        anchors.add(base if base not in seen else f"{base}-{seen[base]}")
        seen[base] = seen.get(base, 0) + 1
    assert slug("Training: `dcnn train`") == "training-dcnn-train" and slug("GPU (CuPy)") == "gpu-cupy"
    links = re.findall(r"\]\(#([^)]+)\)", text)
    assert links and not [link for link in links if link not in anchors]


def test_the_layer_list_names_every_exported_layer_loss_and_optimiser():
    from dcnn.model.optimizers import Optimizer
    text = README.read_text()
    start = text.index("\nLayers, ")
    listed = set(re.findall(r"`(\w+)`", text[start:text.index("\n\n", start)]))
    exported = {name for name in dcnn.__all__ if isinstance(getattr(dcnn, name), type)
                and issubclass(getattr(dcnn, name), (dcnn.Layer, Optimizer, dcnn.SoftmaxCrossEntropy))}
    assert {"Residual", "Sequential", "AvgPool2D", "GlobalAvgPool2D", "AdamW"} <= exported
    assert sorted(exported - listed) == []


def _small(real_load):
    def load(name="fashion-mnist", data_dir=None, **kwargs):
        if datasets.is_path(name):
            return real_load(name, data_dir, **kwargs)
        try:
            full = real_load(name, data_dir, download=False)
            name, classes = full.name, full.classes
            x_train, y_train, x_test, y_test = (a.copy() for a in (full.x_train[:256], full.y_train[:256],
                                                                  full.x_test[:128], full.y_test[:128]))
        except datasets.DatasetError:
            rng = np.random.default_rng(0)
            if datasets.canonical(name) == mosaic.NAME:      # mosaics of random "garments", as test_dense_fit makes
                garments = (rng.random((4 * 384, 28, 28)) ** 3 * 255).astype(np.uint8)
                images, masks = mosaic.make_split(garments, rng.integers(0, 10, len(garments)), 384, "train")
                x, y = images[:, None].astype(np.float32) / 255, masks.astype(np.int64)
                x_train, y_train, x_test, y_test = x[:256], y[:256], x[256:], y[256:]
                name, classes = mosaic.NAME, mosaic.CLASSES
            else:
                spec = datasets.get_spec(name)
                x_train, x_test = (rng.random((n, *spec.input_shape), np.float32) for n in (256, 128))
                y_train, y_test = (rng.integers(0, len(spec.classes), n) for n in (256, 128))
                name, classes = spec.name, spec.classes
        return datasets.Dataset(name, x_train, y_train, x_test, y_test, classes)
    return load


def test_every_python_block_runs_as_written(tmp_path, monkeypatch):
    pytest.importorskip("PIL.Image", reason="the README's image-folder block needs Pillow")
    pytest.importorskip("matplotlib", reason="the README's drawing block needs matplotlib")
    previous = backends.get_backend()
    backends.use("numpy")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(datasets, "load", _small(datasets.load))
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
    # the README made its own image folder, and loaded it at the size and channels it asked for
    assert sorted(p.name for p in (tmp_path / "pictures").iterdir()) == ["bag", "sneaker", "trouser"]
    assert list(namespace["pictures"].classes) == ["bag", "sneaker", "trouser"]
    assert namespace["pictures"].input_shape == (3, 64, 64)
    # dense prediction: a mask per test mosaic, and the denoising picture (noisy | reconstruction | clean)
    assert namespace["masks"].shape == (4, 56, 56) and (tmp_path / "denoising.png").is_file()

    # "From the command line, on the same folder": the commands, as written, on the folder it made
    commands = bash_commands(section(README.read_text(), "### Your own data"))
    assert [c.split()[:2] for c in commands] == [["dcnn", "train"], ["dcnn", "evaluate"]]
    env = {**os.environ, "DCNN_BACKEND": "numpy",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    for command in commands:
        argv = [sys.executable, "-m", "dcnn", *shlex.split(command)[1:]]
        proc = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, f"{command}\n{proc.stdout}\n{proc.stderr}"
    assert "accuracy:" in proc.stdout and "trouser" in proc.stdout
