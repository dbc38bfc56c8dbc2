"""The benchmark runs on a small case and writes its JSON.  Speed is never tested."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_quick_benchmark_runs_and_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    run = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "bench.py"), "--quick", "--threads", "1",
                          "--json", str(out)], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "ratio" in run.stdout and "peak RSS" in run.stdout
    result = json.loads(out.read_text())
    assert result["device"] == "cpu" and result["threads"] == 1 and result["gemm_gflops"] > 0
    modes = {(c["model"], c["mode"]) for c in result["cases"]}
    assert modes == {("ref", "train"), ("ref", "infer"), ("ref-bn", "train"), ("ref-bn", "infer")}
    for case in result["cases"]:
        dcnn = case["dcnn"]
        assert 0 < dcnn["min_ms"] <= dcnn["median_ms"] <= dcnn["max_ms"]
        assert dcnn["images_per_s"] > 0 and dcnn["gflops"] > 0 and dcnn["gemm_fraction"] > 0
        if result["torch"] is not None:
            assert case["ratio_torch"] > 0 and "torch-cl" in case
    assert result["memory"]["dcnn"]["peak_mib"] >= result["memory"]["dcnn"]["import_mib"] > 0


def test_flop_count_of_the_reference_network():
    sys.path.insert(0, os.path.join(ROOT, "scripts"))
    try:
        import bench
    finally:
        sys.path.pop(0)
    forward = 2 * (784 * 9 * 32 + 196 * 288 * 64 + 3136 * 128 + 128 * 10)   # per image
    assert bench.flops("ref", 1, training=False) == pytest.approx(forward)
    assert bench.flops("ref", 2, training=True) == pytest.approx(2 * (3 * forward - 2 * 784 * 9 * 32))


def test_quick_graph_benchmark_runs_and_writes_json(tmp_path):
    pytest.importorskip("torch")
    out = tmp_path / "graph.json"
    run = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "bench_graph.py"), "--quick", "--threads", "1",
                          "--json", str(out)], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "functional API" in run.stdout and "DenseNet-style block" in run.stdout
    result = json.loads(out.read_text())
    assert set(result["convnet_ms"]) == {"list", "functional"} and set(result["dense_block_ms"]) == {"dcnn", "torch"}
    for side in ("list", "functional"):
        assert result["convnet_peak_mib"][side]["peak_mib"] >= result["convnet_peak_mib"][side]["before_mib"] > 0
