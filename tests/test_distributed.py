"""Data-parallel training (dcnn.distributed) with 2 ranks under mpiexec, against 1 process.

The 2-rank jobs are real MPI jobs started with ``mpiexec -n 2`` (tests/dist_worker.py); each is
bounded by a timeout, so a hang fails the test instead of stalling CI.
"""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import backends
from dcnn import BatchNorm2D, cli, distributed
from dcnn.io import checkpoint
from dcnn.distributed import shard_span
from tests.dist_cases import CASES, make_data, make_net
from tests.test_datasets import write_idx_dataset

ROOT = Path(__file__).resolve().parents[1]
WORKER = ROOT / "tests" / "dist_worker.py"

try:
    import mpi4py  # noqa: F401
    MPI_MISSING = None
except ImportError:
    MPI_MISSING = "mpi4py is not installed: pip install -e '.[dist]' (or '.[test]', which includes it)"
if MPI_MISSING is None:
    try:
        distributed.mpiexec_command(2)
    except FileNotFoundError as exc:
        MPI_MISSING = str(exc)
if MPI_MISSING is not None and os.environ.get("CI"):
    raise RuntimeError(f"CI must run the 2-rank tests, but: {MPI_MISSING}")   # .ci/run installs '.[test]'
needs_mpi = pytest.mark.skipif(MPI_MISSING is not None, reason=str(MPI_MISSING))


pytestmark = pytest.mark.usefixtures("numpy_active")   # conftest.py


def mpiexec(n, *args, timeout=120, env=None, popen=False):
    prefix, mpi_env = distributed.mpiexec_command(n)
    env = {**os.environ, **mpi_env, "PYTHONPATH": str(ROOT), "DCNN_BACKEND": "numpy", "OMP_NUM_THREADS": "1",
           **(env or {})}
    argv = [*prefix, sys.executable, str(WORKER), *map(str, args)]
    if popen:
        return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                start_new_session=True)
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)


# --- pieces that need no MPI -----------------------------------------------------------------------

def test_shards_cover_the_batch_once_and_differ_by_at_most_one():
    for n in (0, 1, 5, 16, 17):
        for size in (1, 2, 3, 4):
            spans = [shard_span(n, r, size) for r in range(size)]
            assert spans[0][0] == 0 and spans[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
            assert max(b - a for a, b in spans) - min(b - a for a, b in spans) <= 1


class _FakeComm:
    """Two 'ranks' in one process: allreduce_sum adds the other rank's buffer."""
    size, rank = 2, 0

    def __init__(self, other):
        self.other = other

    def allreduce_sum(self, array):
        array += self.other
        return array


def test_gradients_travel_in_one_flat_buffer_weighted_and_split_back():
    rng = np.random.default_rng(0)
    shapes = [(3, 2), (4,), (2, 1, 3)]
    grads = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    other = rng.standard_normal(sum(int(np.prod(s)) for s in shapes) + 2).astype(np.float32)
    calls = []

    class Comm(_FakeComm):
        def allreduce_sum(self, array):
            calls.append(array.shape)
            return super().allreduce_sum(array)

    out, riders = distributed.allreduce_gradients(Comm(other), grads, 0.25, riders=(np.float32(1.5), np.int64(7)))
    assert calls == [(other.size,)]                                  # one all-reduce for everything
    flat = np.concatenate([g.ravel() for g in grads]) * np.float32(0.25) + other[:-2]
    np.testing.assert_allclose(out, flat, rtol=1e-6)
    np.testing.assert_allclose([float(r) for r in riders], [1.5 + other[-2], 7 + other[-1]], rtol=1e-6)
    # A gradient that is already one flat buffer (what DCNNetwork gathers) travels the same way.
    out2, _ = distributed.allreduce_gradients(_FakeComm(other[:-2]), np.concatenate([g.ravel() for g in grads]), 0.25)
    np.testing.assert_allclose(out2, flat, rtol=1e-6)


def test_a_checkpoint_from_another_number_of_ranks_is_refused_clearly():
    with pytest.raises(checkpoint.CheckpointError, match=r"2 ranks; this job has 1.*mpirun -n 2"):
        distributed.check_ranks({"distributed": {"ranks": 2}}, 1)
    with pytest.raises(checkpoint.CheckpointError, match=r"1 rank; this job has 2.*one process"):
        distributed.check_ranks({}, 2)
    distributed.check_ranks({}, 1)


def test_without_mpi_the_cli_says_what_to_install(monkeypatch, capsys):
    monkeypatch.setattr(distributed.launch, "launched_size", lambda: 2)
    monkeypatch.setitem(sys.modules, "mpi4py", None)
    rc = cli.main(["train", "--epochs", "1", "--no-progress"])
    assert rc == 1 and "pip install -e '.[dist]'" in capsys.readouterr().err


# --- 2 ranks against 1 process -------------------------------------------------------------------

@pytest.fixture(scope="module")
def two_rank_fit(tmp_path_factory):
    if MPI_MISSING:
        pytest.skip(MPI_MISSING)
    out = tmp_path_factory.mktemp("dist") / "fit.npz"
    proc = mpiexec(2, "fit", out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return dict(np.load(out))


def _reference(case):
    x, y, xv, yv = make_data(case)
    net = make_net(case)
    history = net.fit(x, y, epochs=case["epochs"], batch_size=case["batch"], validation_data=(xv, yv), verbose=0)
    return net, history.history


@needs_mpi
@pytest.mark.parametrize("name", ["sgd", "adam", "graph"])
def test_two_ranks_match_one_process_at_the_same_global_batch(two_rank_fit, name):
    got = two_rank_fit
    net, history = _reference(CASES[name])
    for key, value in net.state_dict().items():
        np.testing.assert_allclose(got[f"{name}/model/{key}"], value, rtol=1e-5, atol=1e-6, err_msg=key)
    state = net.optimizer.state_arrays()
    assert {k[len(name) + 11:] for k in got if k.startswith(f"{name}/optimizer/")} == set(state)
    for key, value in state.items():
        np.testing.assert_allclose(got[f"{name}/optimizer/{key}"], value, rtol=1e-5, atol=1e-6, err_msg=key)
    assert int(got[f"{name}/steps"]) == net.optimizer.steps == 2 * 5        # 65 images, batch 16: 5 steps
    remote = json.loads(str(got[f"{name}/history"]))
    assert remote.keys() == history.keys()
    for key in history:
        np.testing.assert_allclose(remote[key], history[key], rtol=1e-5, err_msg=key)
    assert float(got[f"{name}/rank_disagreement"][0]) == 0.0                 # the ranks hold the same weights


@needs_mpi
def test_batchnorm_keeps_local_statistics_and_averages_its_buffers_at_each_epoch_end(two_rank_fit):
    """The README's documented behaviour, emulated in one process: each rank normalises with its own
    shard's statistics and keeps its own running buffers; at the end of every epoch (before the test
    pass and the checkpoint) the running buffers are averaged over the ranks."""
    case = CASES["bn"]
    x, y, _, _ = make_data(case)
    net = make_net(case)
    bns = [layer for _, layer in net.model.named_layers() if isinstance(layer, BatchNorm2D)]
    per_rank = [[{k: v.copy() for k, v in layer.buffers.items()} for layer in bns] for _ in range(2)]
    n, batch = case["n"], case["batch"]
    for _ in range(case["epochs"]):
        order = net.shuffle_rng.permutation(n)
        for start in range(0, n, batch):
            idx = order[start:start + batch]
            total = None
            for rank in range(2):
                lo, hi = shard_span(len(idx), rank, 2)
                for layer, buffers in zip(bns, per_rank[rank]):
                    layer.buffers = buffers
                params = net.flat_parameters()
                net._forward_backward(x[idx[lo:hi]], y[idx[lo:hi]])
                weighted = params.gather(net._gradients()) * np.float32((hi - lo) / len(idx))
                total = weighted if total is None else total + weighted
            net.optimizer.step(params, total)
        for i in range(len(bns)):
            for key in ("running_mean", "running_var"):
                mean = (per_rank[0][i][key] + per_rank[1][i][key]) * np.float32(0.5)
                per_rank[0][i][key], per_rank[1][i][key] = mean.copy(), mean.copy()
    for layer, buffers in zip(bns, per_rank[0]):
        layer.buffers = buffers
    for key, value in net.state_dict().items():
        np.testing.assert_allclose(two_rank_fit[f"bn/model/{key}"], value, rtol=1e-4, atol=1e-5, err_msg=key)
    # ... and that is not what one process at the same batch computes (synchronised BatchNorm would be).
    single, _ = _reference(case)
    assert not np.allclose(two_rank_fit["bn/model/1.running_mean"], single.state_dict()["1.running_mean"], atol=1e-4)
    assert float(two_rank_fit["bn/rank_disagreement"][0]) == 0.0


@needs_mpi
def test_sharded_loaders_read_disjoint_halves_and_train_as_one_process(tmp_path):
    """Each rank's Loader reads a disjoint part of every epoch, their union the epoch; fit and evaluate
    on those loaders under DataParallel match one process on the whole loader."""
    from tests.dist_worker import loader_case
    out = tmp_path / "loader.npz"
    proc = mpiexec(2, "loader", out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    got = dict(np.load(out))
    ranks = json.loads(str(got["seen"]))
    for epoch in range(2):
        a, b = ranks[0][epoch], ranks[1][epoch]
        assert not set(a) & set(b) and sorted(a + b) == list(range(65)), epoch
        assert abs(len(a) - len(b)) <= 5                       # each takes about half of every batch
    assert ranks[0][0] != ranks[0][1]                          # each epoch its own order
    net, train, test = loader_case()
    history = net.fit(train, epochs=2, validation_data=test, verbose=0).history
    for key, value in net.state_dict().items():
        np.testing.assert_allclose(got[f"model/{key}"], value, rtol=1e-5, atol=1e-6, err_msg=key)
    remote = json.loads(str(got["history"]))
    assert remote.keys() == history.keys()
    for key in history:
        np.testing.assert_allclose(remote[key], history[key], rtol=1e-5, err_msg=key)
    local = net.evaluate(test)
    remote = json.loads(str(got["evaluate"]))
    assert remote["accuracy"] == local["accuracy"]
    np.testing.assert_allclose(remote["loss"], local["loss"], rtol=1e-5)


# --- the command line: checkpoints, resume, faults ---------------------------------------------------

def _train_argv(data, out, *extra):
    return ["--", "train", "--model", "lenet", "--data-dir", data, "--batch-size", 30, "--augment",
            "--out", out, "--no-progress", "--log-every", 2, *extra]


@needs_mpi
def test_a_two_rank_run_resumes_to_the_same_result_as_an_uninterrupted_one(tmp_path):
    write_idx_dataset(tmp_path / "data", n_train=70, n_test=20)
    whole = mpiexec(2, "cli", *_train_argv(tmp_path / "data", tmp_path / "whole", "--epochs", 2, "--json"))
    assert whole.returncode == 0, whole.stderr
    result = json.loads(whole.stdout)                        # rank 0 alone prints it
    assert result["ranks"] == 2 and result["epochs"] == 2
    first = mpiexec(2, "cli", *_train_argv(tmp_path / "data", tmp_path / "split", "--epochs", 2),
                    env={"DCNN_TEST_FAULT": "die-after-1"})            # the job dies after epoch 1
    assert first.stdout.count("training lenet") == 1 and "x 2 ranks" in first.stdout
    assert checkpoint.load(tmp_path / "split")[2]["epoch"] == 1
    rest = mpiexec(2, "cli", *_train_argv(tmp_path / "data", tmp_path / "split", "--resume"))
    assert rest.returncode == 0, rest.stderr
    a_model, a_optim, a_meta = checkpoint.load(tmp_path / "whole")
    b_model, b_optim, b_meta = checkpoint.load(tmp_path / "split")
    for key in a_model:
        np.testing.assert_array_equal(a_model[key], b_model[key], err_msg=key)
    for key in a_optim:
        np.testing.assert_array_equal(a_optim[key], b_optim[key], err_msg=key)
    assert a_meta["history"]["loss"] == b_meta["history"]["loss"]
    assert a_meta["rng"] == b_meta["rng"] and a_meta["distributed"] == b_meta["distributed"]
    states = a_meta["distributed"]["rng"]
    assert states[0]["augment"] != states[1]["augment"]       # each rank its own augmentation stream
    assert states[0]["shuffle"] == states[1]["shuffle"]       # and the same global permutation
    # One process cannot continue it: a clear error, no traceback.
    rc = cli.main(["train", "--resume", "--out", str(tmp_path / "split"), "--epochs", "3", "--no-progress"])
    assert rc == 1


@needs_mpi
def test_a_streamed_two_rank_run_resumes_mid_epoch_to_the_same_weights(tmp_path):
    """--data FOLDER --workers 0 on 2 ranks, a checkpoint every 3 steps; the job dies at the first
    checkpoint inside epoch 2 and --resume continues there."""
    from tests.test_loader import make_folder
    pics = make_folder(tmp_path / "pics", per_class=(12, 12, 12), size=16, test=3)
    argv = lambda out, *extra: ["--", "train", "--model", "lenet", "--data", pics, "--workers", 0, "--batch-size", 6,
                                "--augment", "--out", out, "--no-progress", "--checkpoint-every", 3, *extra]
    whole = mpiexec(2, "cli", *argv(tmp_path / "whole", "--epochs", 2))
    assert whole.returncode == 0, whole.stderr
    first = mpiexec(2, "cli", *argv(tmp_path / "split", "--epochs", 2), env={"DCNN_TEST_FAULT": "die-mid-2"})
    meta = checkpoint.load(tmp_path / "split")[2]
    assert meta["epoch"] == 1 and meta["mid_epoch"]["step"] == 3, first.stderr
    rest = mpiexec(2, "cli", "--", "train", "--resume", "--out", tmp_path / "split", "--workers", 0, "--no-progress")
    assert rest.returncode == 0, rest.stderr
    a_model, _, a_meta = checkpoint.load(tmp_path / "whole")
    b_model, _, b_meta = checkpoint.load(tmp_path / "split")
    for key in a_model:
        np.testing.assert_array_equal(a_model[key], b_model[key], err_msg=key)
    assert a_meta["history"]["loss"] == b_meta["history"]["loss"]


@needs_mpi
@pytest.mark.parametrize("fault, code, message", [
    ("raise", None, "injected failure on rank 1"),
    ("nan", 1, "NaN or infinite"),
    ("sigint", 130, "interrupted at epoch"),
])
def test_one_rank_failing_stops_every_rank_without_a_hang(tmp_path, fault, code, message):
    write_idx_dataset(tmp_path / "data", n_train=400, n_test=20)
    out = tmp_path / "run"
    proc = mpiexec(2, "cli", *_train_argv(tmp_path / "data", out, "--epochs", 1000), env={"DCNN_TEST_FAULT": fault},
                   popen=True)
    try:
        stdout, stderr = proc.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"the job hung after a {fault} on rank 1")
    assert proc.returncode != 0, stderr
    if code is not None:
        assert proc.returncode == code, stderr
    assert message in stderr, stderr
    assert "Traceback" not in stderr or fault == "raise"
    if fault == "sigint":                                    # both ranks stopped at the same step; rank 0 wrote
        _, _, meta = checkpoint.load(out)
        assert meta["interrupted"]["step"] >= 1 and meta["distributed"]["ranks"] == 2


@needs_mpi
def test_nccl_path_for_cupy_arrays(tmp_path):
    """Runs where CuPy and a GPU are (scripts/gpu_check.sh); one rank, as NCCL wants one GPU per rank."""
    try:
        backends.resolve("cupy")
    except backends.BackendError as exc:
        pytest.skip(f"the NCCL path needs the CuPy backend: {exc}")
    proc = mpiexec(1, "nccl", tmp_path / "nccl.npz", env={"DCNN_BACKEND": "cupy"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    got = np.load(tmp_path / "nccl.npz")
    for key in [k for k in got if k.startswith("False/")]:
        np.testing.assert_allclose(got["True/" + key[6:]], got[key], rtol=1e-5, atol=1e-6, err_msg=key)


@needs_mpi
def test_the_benchmark_runs(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_dist.py"), "--quick", "--models", "ref",
                           "--json", str(tmp_path / "b.json")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads((tmp_path / "b.json").read_text())["rows"]
    assert [r["configuration"] for r in rows] == ["1 process x 1 thread", "1 process x 2 threads", "2 ranks x 1 thread"]
    assert rows[2]["allreduce_ms"] > 0 and 0 < rows[2]["allreduce_share"] < 1


@needs_mpi
@pytest.mark.skipif(not Path("/usr/share/datasets/fashion-mnist").is_dir(), reason="the real Fashion-MNIST is not installed")
def test_workers_option_starts_the_ranks_itself(tmp_path):
    """``dcnn train --ranks 2`` runs mpiexec -n 2 python -m dcnn train (real data: 256 images, 1 epoch)."""
    proc = subprocess.run([sys.executable, "-m", "dcnn", "train", "--ranks", "2", "--model", "lenet", "--limit", "256",
                           "--epochs", "1", "--out", str(tmp_path / "run"), "--json", "--no-progress"],
                          capture_output=True, text=True, timeout=180,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "DCNN_BACKEND": "numpy"})
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["ranks"] == 2 and result["train_images"] == 256
    assert checkpoint.load(tmp_path / "run")[2]["distributed"]["ranks"] == 2
