"""scripts/count_launches.py: the launch estimate of one training step runs and adds up."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import count_launches  # noqa: E402

HOT = {"conv2d", "conv2d_backward", "max_pool2d", "max_pool2d_backward", "batch_norm", "batch_norm_backward",
       "relu", "relu_backward", "dropout", "dropout_backward", "softmax_cross_entropy", "adam_update"}


def test_convnet_step_estimate():
    result = count_launches.estimate("convnet")
    assert set(result["methods"]) == HOT
    assert result["methods"]["conv2d"]["calls"] == 2 and result["methods"]["batch_norm"]["calls"] == 2
    assert result["cupy_launches"] == result["outside_launches"] + sum(
        m["cupy_launches"] for m in result["methods"].values())
    assert result["generic_launches"] == result["outside_launches"] + sum(
        m["generic_launches"] for m in result["methods"].values())
    assert result["cupy_launches"] <= 80 < result["generic_launches"]       # the target
    assert result["reads"] == 0 and result["uploads"] == 0                   # no waits, no uploads in a step


@pytest.mark.parametrize("model,optimizer", [("lenet", None), ("seed", None), ("convnet", "sgd")])
def test_other_models_and_optimizers(model, optimizer):
    result = count_launches.estimate(model, optimizer=optimizer)
    update = "sgd_update" if (optimizer or {"lenet": "adam", "seed": "sgd"}[model]) == "sgd" else "adam_update"
    assert result["methods"][update] == {"calls": 1, "generic_launches": result["methods"][update]["generic_launches"],
                                         "cupy_launches": 1}
    assert 0 < result["cupy_launches"] < result["generic_launches"]


def test_script_prints_and_writes_json(tmp_path):
    out = tmp_path / "launches.json"
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "count_launches.py"), "--json", str(out)],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "CuPy-override path" in run.stdout
    assert json.loads(out.read_text())["model"] == "convnet"


def test_torch_twin_computes_what_dcnn_computes(rng):
    """The network --device cuda races against: same layers, same weights, same outputs."""
    torch = pytest.importorskip("torch")
    import backends
    backend = backends.resolve("numpy")
    net, preset = count_launches.build_network("convnet", backend)
    model, opt = count_launches.torch_twin(net, preset, torch, device="cpu")
    x = rng.random((4, 1, 28, 28), dtype="float32")
    model.eval()
    ours = net.predict(x)
    theirs = torch.softmax(model(torch.from_numpy(x)), 1).detach().numpy()
    assert abs(ours - theirs).max() < 1e-5
    assert isinstance(opt, torch.optim.Adam)
