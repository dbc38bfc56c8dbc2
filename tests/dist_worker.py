"""Run under ``mpiexec -n N`` by tests/test_distributed.py (not a test module itself).

    python tests/dist_worker.py fit OUT.npz           # equivalence and BatchNorm cases, rank 0 saves results
    python tests/dist_worker.py loader OUT.npz        # a sharded Loader: each rank's images; fit/evaluate on it
    python tests/dist_worker.py cli [FAULT] -- ARGV   # dcnn train ARGV, with an injected fault on rank 1

FAULT (from DCNN_TEST_FAULT): ``raise`` (rank 1 raises at its 3rd step), ``nan`` (rank 1's loss
is NaN at its 3rd step), ``sigint`` (rank 1 sends itself SIGINT at its 3rd step), ``die-after-1``
(every rank dies at once right after the checkpoint of epoch 1, as a killed job would), ``die-mid-2``
(the same, after the first checkpoint inside epoch 2: --checkpoint-every).
"""
import functools
import json
import os
import signal
import sys

import numpy as np

import backends
from dcnn import distributed


def fit_cases():
    """The models and data of the equivalence tests; the test rebuilds them to train the reference."""
    from tests.dist_cases import CASES, make_data, make_net
    return CASES, make_data, make_net


def run_fit(out_path):
    comm = distributed.init(force=True)
    backends.use("numpy")
    cases, make_data, make_net = fit_cases()
    results = {}
    for name, case in cases.items():
        x, y, xv, yv = make_data(case)
        net = make_net(case)
        distributed.DataParallel(net, comm)
        history = net.fit(x, y, epochs=case["epochs"], batch_size=case["batch"], validation_data=(xv, yv), verbose=0)
        for key, value in net.state_dict().items():
            results[f"{name}/model/{key}"] = value
        for key, value in net.optimizer.state_arrays().items():
            results[f"{name}/optimizer/{key}"] = np.asarray(value)
        results[f"{name}/steps"] = np.asarray(net.optimizer.steps)
        results[f"{name}/history"] = np.asarray(json.dumps(history.history))
        # Every rank must hold the same parameters and (averaged) buffers.
        flat = np.concatenate([v.ravel().astype(np.float64) for v in net.state_dict().values()])
        spread = flat.copy()
        comm.allreduce_sum(spread)
        results[f"{name}/rank_disagreement"] = np.asarray(np.abs(spread / comm.size - flat).max())
        worst = np.zeros(1)
        worst[0] = results[f"{name}/rank_disagreement"]
        comm.allreduce_sum(worst)
        results[f"{name}/rank_disagreement"] = worst
    if comm.rank == 0:
        np.savez(out_path, **results)


def run_nccl(out_path):
    """On a GPU: the CuPy path (NCCL communicator, DataParallel) for one rank against plain CuPy training."""
    from dcnn.distributed import DataParallel, MPICommunicator
    backend = backends.use("cupy")
    comm = MPICommunicator()
    cases, make_data, make_net = fit_cases()
    case = cases["adam"]
    x, y, xv, yv = make_data(case)
    results = {}
    for parallel in (False, True):
        net = make_net(case)
        net.to(backend)
        if parallel:
            DataParallel(net, comm)
            assert comm.device is not None, "the CuPy backend must use NCCL"
            a = backend.xp.arange(5, dtype=backend.xp.float32)
            comm.allreduce_sum(a)
            comm.broadcast(a)
        net.fit(x, y, epochs=case["epochs"], batch_size=case["batch"], validation_data=(xv, yv), verbose=0)
        for key, value in net.state_dict().items():
            results[f"{parallel}/{key}"] = value
    np.savez(out_path, **results)


def loader_case(rank=0, ranks=1):
    """(net, train loader, test loader) of the sharded-loader case: uint8 images of the adam case."""
    from dcnn.data.loader import Loader
    from dcnn.data.sources import ArrayImages
    from tests.dist_cases import CASES, make_data, make_net
    case = CASES["adam"]
    x, y, xv, yv = make_data(case)
    to_u8 = lambda a: (a * 255).astype(np.uint8)
    train = Loader(ArrayImages(to_u8(x), y), case["batch"], seed=5, rank=rank, ranks=ranks)
    test = Loader(ArrayImages(to_u8(xv), yv), 10, shuffle=False, rank=rank, ranks=ranks)
    return make_net(case), train, test


def run_loader(out_path):
    from dcnn.data.loader import Loader
    from dcnn.data.sources import ArrayImages
    comm = distributed.init(force=True)
    backends.use("numpy")
    n = 65                                   # image i holds i in every pixel: a batch says which images it has
    index = ArrayImages(np.broadcast_to(np.arange(n, dtype=np.uint8)[:, None, None, None], (n, 1, 4, 4)).copy(),
                        np.arange(n) % 5)
    loader = Loader(index, 16, seed=2, rank=comm.rank, ranks=comm.size)
    seen = []
    for epoch in range(2):
        loader.set_epoch(epoch)
        seen.append([int(v) for xb, _ in loader for v in xb[:, 0, 0, 0]])
    everyone = comm.gather_object(seen)
    net, train, test = loader_case(comm.rank, comm.size)
    distributed.DataParallel(net, comm)
    history = net.fit(train, epochs=2, validation_data=test, verbose=0)
    results = {f"model/{k}": v for k, v in net.state_dict().items()}
    results["history"] = np.asarray(json.dumps(history.history))
    results["evaluate"] = np.asarray(json.dumps(net.evaluate(test)))
    if comm.rank == 0:
        results["seen"] = np.asarray(json.dumps(everyone))
        np.savez(out_path, **results)


def run_cli(fault, argv):
    import dcnn.data.datasets as d
    from dcnn import cli
    d.load = functools.partial(d.load, verify=False)          # tiny files made by the test
    if fault in ("die-after-1", "die-mid-2"):
        from dcnn.distributed.data_parallel import DataParallel
        save = DataParallel.save_checkpoint

        def save_then_die(self, *args, epoch, **kwargs):
            save(self, *args, epoch=epoch, **kwargs)
            mid = (kwargs.get("extra") or {}).get("mid_epoch")
            if (epoch == 1 and not mid) if fault == "die-after-1" else (mid and mid["epoch"] == 1):
                self.comm.barrier()
                os._exit(0)
        DataParallel.save_checkpoint = save_then_die
    elif fault:
        from dcnn.distributed.data_parallel import DataParallel
        original = DataParallel.train_on_batch
        calls = {"n": 0}

        def faulty(self, x, y):
            if self.rank == 1:
                calls["n"] += 1
                if calls["n"] == 3:
                    if fault == "raise":
                        raise RuntimeError("injected failure on rank 1")
                    if fault == "sigint":
                        os.kill(os.getpid(), signal.SIGINT)
                    if fault == "nan":
                        x = x * float("nan")
            return original(self, x, y)
        DataParallel.train_on_batch = faulty
    sys.exit(cli.main(argv))


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if sys.argv[1] == "fit":
        run_fit(sys.argv[2])
    elif sys.argv[1] == "loader":
        run_loader(sys.argv[2])
    elif sys.argv[1] == "nccl":
        run_nccl(sys.argv[2])
    else:
        run_cli(os.environ.get("DCNN_TEST_FAULT", ""), sys.argv[sys.argv.index("--") + 1:])
