"""Your own layers, for a model that uses them: ``import_layers("my_layers.py")`` imports that file
(or an importable module name) so that its Layer subclasses are known to the JSON spec by name.

This is the command line's ``--custom-layers`` (Keras's ``custom_objects``).  It runs the code you
name, never code named by a weights file: a file only names a class, which must already be known.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

from .base import LAYER_CLASSES


def import_layers(source) -> list[str]:
    """Import ``source`` (a .py file or a module name); returns the names of the Layer classes it added."""
    before = dict(LAYER_CLASSES)
    text = str(source)
    path = Path(text).expanduser()
    if text.endswith(".py") or path.exists():
        if not path.is_file():
            raise FileNotFoundError(f"--custom-layers {text}: no such file")
        name = f"dcnn_custom_{path.stem}_{abs(hash(str(path.resolve()))) % 10**8}"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            del sys.modules[name]
            raise ValueError(f"--custom-layers {text} failed to import: {type(exc).__name__}: {exc}") from None
    else:
        try:
            importlib.import_module(text)
        except ImportError as exc:
            raise ValueError(f"--custom-layers {text}: not a .py file and not an importable module ({exc})") from None
    added = sorted(k for k, v in LAYER_CLASSES.items() if before.get(k) is not v)
    if not added:
        raise ValueError(f"--custom-layers {text} defines no dcnn Layer subclass")
    return added
