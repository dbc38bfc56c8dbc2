"""The example notebook (docs/example.ipynb) runs top to bottom in a real Jupyter kernel."""
import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="the notebook test needs nbformat (pip install -e '.[test]')")
nbclient = pytest.importorskip("nbclient", reason="the notebook test needs nbclient (pip install -e '.[test]')")
pytest.importorskip("ipykernel", reason="the notebook test needs ipykernel (pip install -e '.[test]')")
pytest.importorskip("matplotlib", reason="the notebook draws with matplotlib")

from dcnn.data import datasets  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "docs" / "example.ipynb"


def _fashion_mnist_present() -> bool:
    try:
        return datasets.locate(datasets.get_spec("fashion-mnist"))[0] is not None
    except datasets.DatasetError:
        return False


@pytest.mark.skipif(not _fashion_mnist_present(),
                    reason="Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist); "
                           "the notebook would download it")
def test_example_notebook_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("DCNN_BACKEND", "numpy")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(nb, timeout=120, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [cell.get("outputs", []) for cell in nb.cells if cell.cell_type == "code"]
    pictures = sum("image/png" in out.get("data", {}) for cell in outputs for out in cell)
    assert pictures >= 6            # the stages, the curves and the confusion matrix, as pictures
    text = "".join(out.get("text", "") for cell in outputs for out in cell)
    assert text.count("total parameters") == 1        # summary() printed once, not echoed
    accuracy = float(text.split("test accuracy on 1000 images: ")[1][:5])
    assert accuracy > 0.7
    assert (tmp_path / "seed-fashion.safetensors").is_file()
    assert "DCNNetwork(input_shape=(1, 28, 28)" in str(outputs[-1])
