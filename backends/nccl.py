"""NCCL collectives for CuPy arrays (``cupy.cuda.nccl``), for ``dcnn.distributed``.

Kept in ``backends/``, the only package that imports CuPy.  Rank 0 makes NCCL's unique id and
MPI broadcasts it; every rank then joins one NCCL communicator on the GPU it already uses
(``dcnn.distributed.launch`` picks the GPU of the local rank before CuPy starts).
Collectives run in place on the current stream: no host copy, no sync.
"""
from __future__ import annotations

from .cupy_backend import BackendUnavailable, _import_cupy


class NcclCommunicator:
    def __init__(self, mpi_comm, rank: int, size: int):
        cupy = _import_cupy()
        try:
            from cupy.cuda import nccl
        except ImportError as exc:
            raise BackendUnavailable(f"CuPy was built without NCCL ({exc}); install the NCCL wheel for your "
                                     "CUDA (e.g. pip install nvidia-nccl-cu12) or use the numpy backend") from None
        if not getattr(nccl, "available", True):
            raise BackendUnavailable("CuPy cannot load NCCL; install it (e.g. pip install nvidia-nccl-cu12)")
        self._cupy, self._nccl = cupy, nccl
        uid = nccl.get_unique_id() if rank == 0 else None
        uid = mpi_comm.bcast(uid, root=0)
        self.comm = nccl.NcclCommunicator(size, uid, rank)
        self._types = {"float32": nccl.NCCL_FLOAT32, "float64": nccl.NCCL_FLOAT64, "float16": nccl.NCCL_FLOAT16,
                       "int32": nccl.NCCL_INT32, "int64": nccl.NCCL_INT64}

    def _type(self, array):
        try:
            return self._types[str(array.dtype)]
        except KeyError:
            raise TypeError(f"NCCL collectives here take {', '.join(self._types)} arrays; got {array.dtype}") from None

    def _check(self, array):
        if not isinstance(array, self._cupy.ndarray) or not array.flags.c_contiguous:
            raise ValueError("NCCL collectives need contiguous CuPy arrays")

    def allreduce_sum(self, array):
        self._check(array)
        stream = self._cupy.cuda.get_current_stream().ptr
        self.comm.allReduce(array.data.ptr, array.data.ptr, array.size, self._type(array), self._nccl.NCCL_SUM,
                            stream)
        return array

    def broadcast(self, array, root: int = 0):
        self._check(array)
        stream = self._cupy.cuda.get_current_stream().ptr
        self.comm.bcast(array.data.ptr, array.size, self._type(array), root, stream)
        return array
