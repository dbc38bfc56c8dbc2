"""Data-parallel training of a ``DCNNetwork``: each rank computes its shard of every global batch.

``DataParallel(net, comm)`` hooks into a compiled network (``net.data_parallel``):

- ``shard``: rank r takes the r-th contiguous part of each global batch's indices; every rank
  draws the same permutation (same seed), so the global batches are those of one process;
- ``train_on_batch``: local forward and backward, then one all-reduce of the gradients, each
  rank's weighted by its share of the batch (the loss is a mean: sum_r n_r/B * mean_r = mean
  over B, also for an uneven last batch or an empty shard), with the step's loss and hit count
  riding in the same buffer, so every rank sees the global-batch loss and takes the same decisions;
- ``evaluate``: each rank evaluates its part of the test set; the sums are all-reduced, the
  metrics' with them (training metrics are summed per rank and all-reduced once per epoch);
- BatchNorm keeps local statistics; ``sync_buffers`` averages the running buffers over the ranks
  before each evaluation and checkpoint (see the README for why);
- dropout and augmentation draw from per-rank streams; checkpoints keep each rank's state.
"""
from __future__ import annotations

import numpy as np

from ..io import checkpoint
from ..layers import Dropout
from ..model import fitting
from ..model.metric_state import evaluation_logs
from ..train.callbacks import Callback
from .optimizer import DistributedOptimizer


def shard_span(n: int, rank: int, size: int) -> tuple[int, int]:
    """(start, stop) of rank's contiguous part of n items; sizes differ by at most one."""
    return rank * n // size, (rank + 1) * n // size


def stream_seed(seed: int, rank: int, *purpose: int) -> int:
    return int(np.random.SeedSequence([int(seed), 0xD157, int(rank), *purpose]).generate_state(1, np.uint64)[0])


class DataParallel:
    def __init__(self, net, comm, *, augment=None):
        if net.optimizer is None:
            raise RuntimeError("compile the network before making it data-parallel")
        net._require_built()
        self.net, self.comm, self.augment = net, comm, augment
        comm.use_backend(net.backend)
        if not isinstance(net.optimizer, DistributedOptimizer):
            net.optimizer = DistributedOptimizer(net.optimizer, comm)
        net.data_parallel = self
        self._local, self._global = 0, 0
        self._reseed_streams()
        self.broadcast_state()

    @property
    def rank(self):
        return self.comm.rank

    @property
    def size(self):
        return self.comm.size

    # --- random streams ---------------------------------------------------------------------------
    def _reseed_streams(self):
        """Rank 0 keeps the single-process streams; rank r > 0 draws its own dropout masks and shifts."""
        if self.rank == 0:
            return
        backend = self.net.backend
        for i, (_, layer) in enumerate(self.net.model.named_layers()):
            if isinstance(layer, Dropout) and layer.generator is not None:
                layer.generator = backend.random_generator(stream_seed(self.net.seed, self.rank, 1, i))
        if self.augment is not None:
            self.augment.generator = backend.random_generator(stream_seed(self.net.seed, self.rank, 2))

    # --- parameters and buffers ------------------------------------------------------------------
    def _float_arrays(self, params: bool, buffers: bool):
        """(holder dict, name) of the model's float arrays, in model order (the same on every rank)."""
        xp = self.net.backend.xp
        out = []
        for _, layer in self.net.model.named_layers():
            holders = ([layer.params] if params else []) + ([layer.buffers] if buffers else [])
            for holder in holders:
                out += [(holder, k) for k, v in holder.items() if xp.isdtype(v.dtype, "real floating")]
        return out

    def _flat(self, arrays):
        xp = self.net.backend.xp
        return xp.concat([xp.reshape(holder[k], (-1,)) for holder, k in arrays], axis=0)

    def _unflatten(self, flat, arrays, scale=None):
        xp = self.net.backend.xp
        offset = 0
        for holder, k in arrays:
            size = int(np.prod(holder[k].shape))
            part = xp.reshape(flat[offset:offset + size], holder[k].shape)
            holder[k][...] = part if scale is None else part * scale      # in place: keep the arrays
            offset += size

    def broadcast_state(self):
        """Rank 0's parameters and float buffers on every rank (one broadcast)."""
        arrays = self._float_arrays(params=True, buffers=True)
        if arrays:
            self._unflatten(self.comm.broadcast(self._flat(arrays)), arrays)

    def sync_buffers(self):
        """Average the float buffers (BatchNorm's running mean and variance) over the ranks."""
        arrays = self._float_arrays(params=False, buffers=True)
        if arrays:
            self._unflatten(self.comm.allreduce_sum(self._flat(arrays)), arrays, scale=1.0 / self.size)

    # --- the hooks DCNNetwork calls ---------------------------------------------------------------
    def shard(self, idx):
        """This rank's part of a global batch's indices."""
        n = int(idx.shape[0])
        start, stop = shard_span(n, self.rank, self.size)
        self._local, self._global = stop - start, n
        return idx[start:stop]

    def count_batch(self, local: int) -> int:
        """For a loader that gave this rank ``local`` rows of a global batch: the global batch's rows
        (a host all-reduce of one integer; ``train_on_batch`` then weighs this rank by its share)."""
        counts = self.comm.allreduce_sum(np.array([int(local)], dtype=np.int64))
        self._local, self._global = int(local), int(counts[0])
        return self._global

    def train_on_batch(self, x, y):
        """One step on this rank's shard; returns the global batch's (loss, correct) as 0-d device arrays."""
        net = self.net
        xp = net.backend.xp
        weight = self._local / self._global if self._global else 1.0 / self.size
        params = net.flat_parameters()
        if self._local:
            loss, hits = net._forward_backward(x, y)
            grads = net._gradients()
        else:   # a global batch smaller than the ranks: this one adds nothing
            loss = hits = xp.zeros((), dtype=xp.float32, device=net.backend.device)
            grads = [xp.zeros_like(view) for view in params.views]
        loss, hits = net.optimizer.step(params, grads, weight=weight, riders=(loss * weight, hits))
        return loss, xp.astype(xp.round(hits), xp.int64)

    def evaluate(self, xd, yd, batch_size, metrics):
        """Mean loss and the metrics (a MetricSet) over the whole of (xd, yd), each rank evaluating its
        part: the loss sum, hits, count and the metrics' sums travel in one all-reduce."""
        self.sync_buffers()
        net = self.net
        start, stop = shard_span(int(xd.shape[0]), self.rank, self.size)
        xp = net.backend.xp
        sums = (xp.zeros((), dtype=xp.float32, device=net.backend.device),
                xp.zeros((), dtype=xp.int64, device=net.backend.device), 0)
        if stop > start:
            sums = fitting.evaluate_local(net, xd[start:stop, ...], yd[start:stop, ...], batch_size, metrics)
        return evaluation_logs(net, metrics, *sums)

    # --- checkpoints -------------------------------------------------------------------------------
    def save_checkpoint(self, out_dir, net, *, extra=None, augment=None, **kwargs):
        """``checkpoint.save`` for a data-parallel run (collective): average the BatchNorm buffers,
        gather every rank's random-stream states, and let rank 0 alone write."""
        self.sync_buffers()
        states = self.comm.gather_object(checkpoint.rng_states(net, augment))
        if self.rank == 0:
            extra = {**(extra or {}), "distributed": {"ranks": self.size, "rng": states}}
            checkpoint.save(out_dir, net, extra=extra, augment=augment, **kwargs)

    def restore_streams(self, meta: dict, augment=None):
        """This rank's dropout and augmentation states from a checkpoint written by the same number of ranks."""
        check_ranks(meta, self.size)
        checkpoint.set_rng_states(self.net, meta["distributed"]["rng"][self.rank], augment)

    def callbacks(self, interrupt, log_every: int):
        return [StopSync(self.comm, interrupt, log_every)]


def check_ranks(meta: dict, size: int, source: str = "the checkpoint") -> None:
    """A clear error when a checkpoint was written by another number of ranks than this job has."""
    written = int((meta.get("distributed") or {}).get("ranks", 1))
    if written != size:
        how = f"mpirun -n {written} dcnn train --resume" if written > 1 else "dcnn train --resume (one process)"
        raise checkpoint.CheckpointError(
            f"{source} was written by a run on {written} rank{'s' if written > 1 else ''}; this job has {size}. "
            f"Resume it with the same number: {how}. (Each rank's dropout and augmentation streams are saved, "
            "so a different number could not continue the same run.)")


class StopSync(Callback):
    """Every ``log_every`` steps and at the end, the ranks agree whether one of them was asked to stop
    (Ctrl-C, SIGINT): one tiny all-reduce, so all stop at the same step and none waits for another."""

    def __init__(self, comm, interrupt, log_every: int):
        self.comm, self.interrupt, self.log_every = comm, interrupt, max(1, int(log_every))

    def on_train_begin(self, net, epochs, steps):
        self.net, self.steps = net, steps

    def _agree(self):
        if self.comm.allreduce_max(self.interrupt.requested):
            self.interrupt.requested = True
            self.net.stop_training = True

    def on_batch_end(self, step, logs):
        if (step + 1) % self.log_every == 0 or step + 1 == self.steps:
            self._agree()

    def on_train_end(self):
        self._agree()
