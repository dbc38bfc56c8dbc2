"""What every ``dcnn`` command shares: exit codes, the one-line error, output that survives a closed pipe."""
from __future__ import annotations

import argparse
import os
import sys

EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_BROKEN_PIPE = 1, 2, 130, 141   # 141 = 128 + SIGPIPE


class UsageError(Exception):
    pass


class Parser(argparse.ArgumentParser):
    def error(self, message):
        # main() adds the one "dcnn: error:" prefix; the subcommand is named in the hint.
        raise UsageError(f"{message} (see {self.prog} --help)")


def expected(exc) -> bool:
    """Errors that are the user's input or environment, reported in one line."""
    import backends

    from ..data.datasets import DatasetError
    from ..io.checkpoint import CheckpointError
    from ..io.runfolder import RunFolderError
    from ..train.job import TrainingError
    return isinstance(exc, (ValueError, TypeError, FileNotFoundError, IsADirectoryError, NotADirectoryError,
                            PermissionError, DatasetError, CheckpointError, TrainingError, RunFolderError,
                            backends.BackendError))


def silence_stdout() -> None:
    """Point stdout at /dev/null, so that nothing (not even the flush at exit) writes to a closed pipe."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):   # stdout without a file descriptor (tests)
        pass


def echo_to(stream):
    """print() to ``stream``; once its reader has gone (a closed pipe), the rest is dropped and training goes on."""
    state = {"open": True}

    def echo(text=""):
        if not state["open"]:
            return
        try:
            print(text, file=stream, flush=True)
        except BrokenPipeError:
            state["open"] = False
            if stream is sys.stdout:
                silence_stdout()
    return echo


def error(message: str) -> None:
    from .. import distributed
    if not distributed.is_lead():     # the other ranks of a job: rank 0 says it once
        return
    text = " ".join(str(message).split())
    print(f"dcnn: error: {text}", file=sys.stderr)


def use_backend(name):
    import backends
    if name is not None:
        return backends.use(name)
    return backends.get_backend()


def fmt_seconds(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m}m{s:02d}s" if m else f"{seconds:.1f}s"




def read_model_images(paths, net, args):
    """The pictures prepared as the model's inputs (``model_image``), the paths that gave them, and
    a failure record per file that could not be read (reported on stderr unless ``--json``)."""
    from ..data.images import model_image
    images, good, failures = [], [], []
    for image in paths:
        try:
            images.append(model_image(image, net.input_shape, args.invert))
            good.append(image)
        except ImportError as exc:          # Pillow missing: the same for every file
            raise ValueError(str(exc)) from None
        except (ValueError, OSError) as exc:
            failures.append({"image": str(image), "error": " ".join(str(exc).split())})
            if not args.json:
                error(failures[-1]["error"])
    return images, good, failures
