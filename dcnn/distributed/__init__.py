"""Data-parallel training over MPI (mpi4py) on the CPU and NCCL on GPUs: ``mpirun -n N dcnn train``.

- ``init()``: join the job when launched by mpirun (a no-op in one process); ``active()`` is its
  communicator, ``is_lead()`` is true on the rank that prints and writes;
- ``MPICommunicator``: all-reduce / broadcast in place (NCCL for CuPy arrays);
- ``DistributedOptimizer``: all-reduce the gradients in one flat buffer, then step;
- ``DataParallel``: shards every global batch and the test set over the ranks.

mpi4py is imported only when a job has several ranks: ``pip install -e '.[dist]'``.
"""
from .communicator import MPI_MISSING, MPICommunicator, import_mpi
from .data_parallel import DataParallel, StopSync, check_ranks, shard_span
from .launch import (active, fail_together, init, is_lead, launched_size, mpiexec_command, relaunch, set_threads,
                     threads_per_rank)
from .optimizer import DistributedOptimizer, allreduce_gradients

__all__ = ["MPI_MISSING", "MPICommunicator", "import_mpi", "DataParallel", "StopSync", "check_ranks", "shard_span",
           "active", "fail_together", "init", "is_lead", "launched_size", "mpiexec_command", "relaunch",
           "set_threads", "threads_per_rank", "DistributedOptimizer", "allreduce_gradients"]
