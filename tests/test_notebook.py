"""The example notebook (docs/example.ipynb) runs top to bottom in a real Jupyter kernel, with the
command that the README gives for it (its "In a notebook" section), as written."""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="the notebook test needs nbformat (pip install -e '.[test]')")
pytest.importorskip("nbclient", reason="the notebook test needs nbclient (pip install -e '.[test]')")
pytest.importorskip("ipykernel", reason="the notebook test needs ipykernel (pip install -e '.[test]')")
pytest.importorskip("matplotlib", reason="the notebook draws with matplotlib")

from dcnn.data import datasets  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "docs" / "example.ipynb"
README = ROOT / "README.md"


def _fashion_mnist_present() -> bool:
    try:
        return datasets.locate(datasets.get_spec("fashion-mnist"))[0] is not None
    except datasets.DatasetError:
        return False


def readme_notebook_command() -> str:
    """The one command of the README's "In a notebook" section that runs the notebook."""
    text = README.read_text()
    start = text.index("### In a notebook\n")
    end = text.index("\n#", start + 1)
    blocks = re.findall(r"^```bash\n(.*?)^```", text[start:end], flags=re.S | re.M)
    commands = [line.split("  #")[0].strip() for block in blocks for line in block.splitlines()]
    commands = [c for c in commands if "jupyter execute" in c]
    assert len(commands) == 1, f"the README's 'In a notebook' section should give one jupyter command: {commands}"
    return commands[0]


def test_the_readme_says_how_to_run_the_notebook():
    command = readme_notebook_command()
    assert "docs/example.ipynb" in command and re.search(r"jupyter execute --inplace \S+\.ipynb", command)


@pytest.mark.skipif(not _fashion_mnist_present(),
                    reason="Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist); "
                           "the notebook would download it")
def test_example_notebook_runs(tmp_path):
    # The README's command, run as written in a copy of the repository's docs/; the `jupyter` it
    # calls is the one installed beside this Python (nbclient's `jupyter execute`).
    command = readme_notebook_command()
    (tmp_path / "docs").mkdir()
    shutil.copy(NOTEBOOK, tmp_path / "docs" / NOTEBOOK.name)
    env = {**os.environ, "DCNN_BACKEND": "numpy",
           "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr

    executed = tmp_path / re.search(r"jupyter execute --inplace (\S+)", command)[1]
    nb = nbformat.read(executed, as_version=4)
    outputs = [cell.get("outputs", []) for cell in nb.cells if cell.cell_type == "code"]
    assert all(outputs), "a code cell has no output: the notebook was not executed"
    pictures = sum("image/png" in out.get("data", {}) for cell in outputs for out in cell)
    assert pictures >= 6            # the stages, the curves and the confusion matrix, as pictures
    text = "".join(out.get("text", "") for cell in outputs for out in cell)
    assert text.count("total parameters") == 1        # summary() printed once, not echoed
    accuracy = float(text.split("test accuracy on 1000 images: ")[1][:5])
    assert accuracy > 0.7
    # the denoising autoencoder: its reconstructions score above the noisy input they were made from
    noisy, reconstructed = map(float, re.search(r"noisy input ([\d.]+) dB, reconstruction ([\d.]+) dB", text).groups())
    assert reconstructed > noisy + 2, (noisy, reconstructed)
    assert (tmp_path / "seed-fashion.safetensors").is_file()
    assert "DCNNetwork(input_shape=(1, 28, 28)" in str(outputs[-1])
