"""Starting a data-parallel job: is this process one of several ranks, and setting each rank up.

``init()`` is called once per process, before the backend is chosen:

- it detects a launch by ``mpirun``/``mpiexec``/``srun`` from the launcher's environment variables,
  so a plain ``dcnn train`` never loads MPI;
- it points each rank at the GPU of its local rank (``CUDA_VISIBLE_DEVICES``, before CuPy starts);
- it installs an excepthook that aborts the whole job when one rank dies of an uncaught exception
  (otherwise the others wait for it in their next all-reduce forever: ChainerMN's known trap).

``threads_per_rank`` gives each rank its share of the cores: cores / ranks on this node.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import traceback
from pathlib import Path

from .communicator import MPICommunicator

_SIZE_VARS = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS", "SLURM_NTASKS")
_LOCAL_RANK_VARS = ("OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "PMI_LOCAL_RANK", "SLURM_LOCALID")
_THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")

_active: MPICommunicator | None = None


def launched_size() -> int:
    """How many ranks the launcher says this job has (1 when not launched by one)."""
    for var in _SIZE_VARS:
        try:
            return max(1, int(os.environ[var]))
        except (KeyError, ValueError):
            continue
    return 1


def active() -> MPICommunicator | None:
    """The job's communicator after ``init()``, or None in a single process."""
    return _active


def is_lead() -> bool:
    """True on rank 0, and in a single process: the one that prints and writes files."""
    return _active is None or _active.rank == 0


def init(force: bool = False) -> MPICommunicator | None:
    """Join the MPI job if this process was launched as one of N > 1 ranks (or ``force``)."""
    global _active
    if _active is not None:
        return _active
    if not force and launched_size() <= 1:
        return None
    comm = MPICommunicator()
    if comm.size == 1 and not force:
        return None
    _select_local_gpu(comm.local_rank)
    # Open MPI gives each rank a terminal for stdout; numba's colorama would then end every
    # rank's output with a colour reset (ESC[0m), garbling --json.  Read when numba loads.
    os.environ.setdefault("NUMBA_DISABLE_ERROR_MESSAGE_HIGHLIGHTING", "1")
    # This rank's share of the cores, for backends made from now on (they read these variables);
    # ``set_threads`` applies it to one made already and to the BLAS loaded with NumPy.
    comm.threads = threads_per_rank(comm)
    if comm.threads is not None:
        for var in _THREAD_VARS:
            os.environ[var] = str(comm.threads)
    _install_excepthook(comm)
    _active = comm
    return comm


def _select_local_gpu(local_rank: int) -> None:
    """One GPU per rank: the local rank's, among those visible (CuPy has not started yet)."""
    if "cupy" in sys.modules and getattr(sys.modules["cupy"], "cuda", None) is not None:
        return     # CUDA may be up already; the caller chose the device itself
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        devices = [d.strip() for d in visible.split(",") if d.strip()]
    else:   # the driver lists its GPUs here; reading it does not start CUDA
        try:
            devices = [str(i) for i in range(len(os.listdir("/proc/driver/nvidia/gpus")))]
        except OSError:
            devices = []
    if not devices:
        return
    os.environ["CUDA_VISIBLE_DEVICES"] = devices[local_rank % len(devices)]
    os.environ["DCNN_LOCAL_GPU_SELECTED"] = "1"


def _install_excepthook(comm) -> None:
    previous = sys.excepthook

    def abort_all(kind, value, tb):
        if issubclass(kind, KeyboardInterrupt):
            print(f"rank {comm.rank}: interrupted; stopping all {comm.size} ranks", file=sys.stderr, flush=True)
        else:
            previous(kind, value, tb)
            print(f"rank {comm.rank} of {comm.size} failed; stopping all ranks", file=sys.stderr, flush=True)
        comm.abort(1)

    sys.excepthook = abort_all


def fail_together(comm, exc: BaseException, expected: bool, code: int = 1) -> None:
    """Report ``exc`` for this rank (one line if ``expected``, else its traceback) and end every rank
    of the job: the others may be waiting for this one in a collective.  Returns only in one process."""
    if comm is None or comm.size == 1:
        return
    if expected:
        print(f"dcnn: error (rank {comm.rank} of {comm.size}): {' '.join(str(exc).split())}", file=sys.stderr)
    else:
        traceback.print_exception(exc)
        print(f"dcnn: rank {comm.rank} of {comm.size} failed; stopping all ranks", file=sys.stderr)
    sys.stderr.flush()
    comm.abort(code)


def threads_per_rank(comm) -> int | None:
    """Cores / ranks on this node, unless the user set a BLAS thread count; None: leave as is."""
    if comm is None or any(var in os.environ for var in _THREAD_VARS):
        return None
    try:
        cores = len(os.sched_getaffinity(0))      # a rank bound to one core by mpirun sees one
    except AttributeError:
        cores = os.cpu_count() or 1
    return max(1, min(cores, (os.cpu_count() or 1) // max(comm.local_size, 1)))


def set_threads(backend, threads: int | None) -> None:
    """Set the NumPy backend's threads and OpenBLAS's to ``threads`` (None: unchanged)."""
    if threads is None or backend.name != "numpy":
        return
    backend.threads = threads
    control = getattr(backend, "_blas_threads", None)
    if control is not None:
        control[0](threads)
    numba = sys.modules.get("numba")
    if numba is not None and "numba" in type(backend).__name__.lower():    # the NumbaBackend's kernels
        numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))


# --- launching -----------------------------------------------------------------------------------------

def mpiexec_command(n: int, *, bind: bool = False) -> tuple[list[str], dict]:
    """(argv prefix, extra environment) that start ``n`` ranks on this machine with the MPI we have.

    Open MPI refuses to run as root and to start more ranks than cores unless told; both
    are fine for a job on one machine.  MPICH needs neither.
    """
    beside = [str(Path(sys.executable).parent / name) for name in ("mpiexec", "mpirun")]   # dcnn[dist]'s
    exe = next((p for p in beside if os.access(p, os.X_OK)), None) or shutil.which("mpiexec") or shutil.which("mpirun")
    if exe is None:
        raise FileNotFoundError("no mpiexec on PATH: pip install -e '.[dist]' (mpi4py and Open MPI), "
                                "or load your cluster's MPI")
    try:
        version = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        version = ""
    argv, env = [exe, "-n", str(int(n))], {}
    if "Open MPI" in version or "OpenRTE" in version or "prterun" in version or "PMIx" in version:
        argv += ["--oversubscribe"] + ([] if bind else ["--bind-to", "none"])
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            env = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}
    return argv, env


def relaunch(n: int, argv: list[str]) -> int:
    """Run ``python -m dcnn ARGV`` as ``n`` ranks under mpiexec (``dcnn train --ranks N``); its exit status."""
    prefix, env = mpiexec_command(n)
    try:
        return subprocess.run([*prefix, sys.executable, "-m", "dcnn", *argv], env={**os.environ, **env}).returncode
    except KeyboardInterrupt:
        return 130
