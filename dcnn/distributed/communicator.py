"""Communicators: the few collectives data-parallel training needs, over MPI (mpi4py) or NCCL.

- ``MPICommunicator`` moves host (NumPy) arrays with MPI: ``Allreduce`` and ``Bcast`` in place
  on the array's own buffer, no copy.
- For CuPy arrays it sends through ``backends.nccl`` (NCCL on the GPU's stream), set up with a
  unique id that rank 0 makes and MPI broadcasts; each rank runs on the GPU of its local rank
  (see ``launch.select_local_gpu``).

Every collective must be called by every rank in the same order; the training loop guarantees
that by taking all its stop decisions collectively (see ``hooks.StopSync``).
"""
from __future__ import annotations

import numpy as np

MPI_MISSING = ("distributed training needs mpi4py and an MPI library: pip install -e '.[dist]' "
               "(mpi4py and Open MPI from PyPI), or pip install mpi4py against your cluster's MPI")


def import_mpi():
    """mpi4py's MPI module, or an ImportError that says what to install."""
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise ImportError(f"{MPI_MISSING} ({exc})") from None
    return MPI


class MPICommunicator:
    """Collectives among the processes of an MPI communicator (default: COMM_WORLD)."""

    def __init__(self, comm=None):
        MPI = import_mpi()
        self.MPI = MPI
        self.comm = MPI.COMM_WORLD if comm is None else comm
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        node = self.comm.Split_type(MPI.COMM_TYPE_SHARED, key=self.rank)
        self.local_rank, self.local_size = node.Get_rank(), node.Get_size()
        node.Free()
        self.device = None          # a device communicator (NCCL) for non-host arrays
        self.threads = None         # CPU threads for this rank (set by launch.init)

    def use_backend(self, backend) -> None:
        """Set up the device communicator that ``backend``'s arrays need (NCCL for CuPy); collective."""
        if backend.name == "cupy" and self.device is None:
            from backends.nccl import NcclCommunicator
            self.device = NcclCommunicator(self.comm, self.rank, self.size)

    def __repr__(self):
        return f"<MPICommunicator rank {self.rank}/{self.size} (local {self.local_rank}/{self.local_size})>"

    # --- arrays (in place) --------------------------------------------------------------------
    def _host(self, array):
        if isinstance(array, np.ndarray):
            return array
        if self.device is not None:
            return None
        raise TypeError(f"MPICommunicator moves NumPy arrays; got {type(array).__name__} "
                        "(GPU arrays need the CuPy backend's NCCL communicator)")

    def allreduce_sum(self, array):
        """Sum ``array`` over the ranks, in place on every rank; returns it."""
        host = self._host(array)
        if host is None:
            self.device.allreduce_sum(array)
        else:
            if not host.flags.c_contiguous:
                raise ValueError("allreduce_sum needs a contiguous array")
            self.comm.Allreduce(self.MPI.IN_PLACE, host, op=self.MPI.SUM)
        return array

    def broadcast(self, array, root: int = 0):
        """Overwrite ``array`` on every rank with root's, in place; returns it."""
        host = self._host(array)
        if host is None:
            self.device.broadcast(array, root)
        else:
            self.comm.Bcast(host, root=root)
        return array

    # --- small Python values (metadata, RNG states, flags) -----------------------------------------
    def allreduce_max(self, value: int) -> int:
        return int(self.comm.allreduce(int(value), op=self.MPI.MAX))

    def gather_object(self, value, root: int = 0):
        return self.comm.gather(value, root=root)

    def broadcast_object(self, value, root: int = 0):
        return self.comm.bcast(value, root=root)

    def barrier(self) -> None:
        self.comm.Barrier()

    def abort(self, code: int = 1) -> None:
        """End every rank of the job now (MPI_Abort): the way out when one rank fails alone."""
        self.comm.Abort(code)
