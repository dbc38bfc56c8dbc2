"""The ``dcnn`` command: train, evaluate, predict, export, info and visualize (dcnn.cli.visualize).

Mistakes (an unknown dataset or preset, a batch size of 0, a missing or unfitting
weights file) end with one ``dcnn: error: ...`` line and a non-zero status, never a traceback.
Exit status: 0 done, 1 failed, 2 bad arguments, 130 interrupted (a checkpoint was written),
141 output pipe closed (``dcnn evaluate | head -1``; ``dcnn train`` instead keeps training).
"""
from __future__ import annotations

import sys

from .common import (EXIT_BROKEN_PIPE, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE, UsageError, error, expected,
                      silence_stdout)
from ..layers.custom import import_layers
from .parser import build_parser


def main(argv=None) -> int:
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        args.argv = list(map(str, sys.argv[1:] if argv is None else argv))
        if getattr(args, "func", None) is None:
            parser.print_help()
            return EXIT_USAGE
        for source in getattr(args, "custom_layers", None) or ():   # the user's own Layer classes, by request
            import_layers(source)
        return args.func(args) or 0
    except UsageError as exc:
        error(str(exc))
        return EXIT_USAGE
    except KeyboardInterrupt:
        error("interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (dcnn evaluate | head -1): stop quietly, as Unix tools do.
        silence_stdout()
        return EXIT_BROKEN_PIPE
    except Exception as exc:
        from ..train.job import Interrupted
        if isinstance(exc, Interrupted):
            error(str(exc))
            return EXIT_INTERRUPTED
        if expected(exc):
            error(str(exc))
            return EXIT_FAILED
        raise


if __name__ == "__main__":
    sys.exit(main())
