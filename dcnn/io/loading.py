"""Saving and loading whole models: ``net.save(path)``, ``dcnn.load(path)`` and the CLI's loader.

A weights file is safetensors: the weights with torch.nn.Sequential keys and layouts, and,
in its JSON metadata, the architecture as a layer spec (``spec``, see dcnn.layers.spec), the input
shape and the class names.  Nothing is pickled and loading runs no code.  A file from an
older dcnn has no spec; it is rebuilt from its preset name (``preset`` in its metadata, or
``model=``).  A run folder of ``dcnn train`` loads from its weights file, or from its
checkpoint when the weights file lags it (a kill between the two writes).
"""
from __future__ import annotations

import json
from pathlib import Path

from ..model import spec as model_spec
from ..utils.checks import check_input_shape

MAX_CLASSES = 100_000


def weights_path(path) -> Path:
    """The weights file of a run folder, or ``path`` itself."""
    from .checkpoint import WEIGHTS
    path = Path(path)
    if path.is_dir():
        path = path / WEIGHTS
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    return path


def save(net, path, *, classes=None, metadata: dict | None = None) -> Path:
    """Write ``net``'s weights, spec and class names to ``path`` (a .safetensors file), atomically."""
    return net.save(path, classes=classes, metadata=metadata)


def load(path, *, model: str | None = None, backend=None):
    """A ready-to-use DCNNetwork from a weights file or run folder.

    The network carries ``net.classes`` (class names) and ``net.metadata`` (the file's metadata:
    dataset, preset, epoch...).  ``model`` names a preset for files without a spec.
    """
    net, meta, _ = load_trained(path, model, backend)
    return net


def load_trained(path, model: str | None = None, backend=None):
    """(net, metadata, weights path) for a weights file or run folder."""
    from ..utils.files import load_arrays
    folder = Path(path)
    path = weights_path(folder)
    arrays, meta = load_arrays(path)
    if folder.is_dir():
        arrays, meta = _newer_checkpoint(folder, arrays, meta)
    if not meta.get("input_shape"):
        raise ValueError(f"{path} lacks its input shape (was it written by dcnn?)")
    input_shape = _checked_input_shape(path, meta)
    stored = meta.get("spec")
    if stored is not None and model is None:
        try:
            net = model_spec.build_network({**stored, "input_shape": list(input_shape)}
                                           if isinstance(stored, dict) else stored, backend=backend)
        except model_spec.SpecError as exc:
            raise ValueError(f"{path}: its model spec cannot be built: {exc}") from None
        what = "its stored architecture"
    else:
        from ..model import presets
        name = model or meta.get("preset")
        if name is None:
            raise ValueError(f"{path} holds neither a model spec nor a preset name; pass the preset (--model)")
        if not meta.get("classes"):
            raise ValueError(f"{path} lacks its class names (was it written by dcnn train?)")
        preset = presets.get_preset(name)
        net = preset.build(input_shape, len(meta["classes"]), backend=backend)
        what = f"the {preset.name!r} preset"
    classes = _checked_classes(path, meta, net.num_classes)
    try:
        net.load_state_dict(arrays, source=str(path))
    except ValueError as exc:
        raise ValueError(f"the weights in {path} do not fit {what}: {_first_clause(exc)}") from None
    net.classes, net.metadata = classes, meta
    meta["classes"] = classes
    return net, meta, path


def _checked_input_shape(path, meta: dict) -> tuple:
    try:
        shape = check_input_shape(meta["input_shape"], name="metadata 'input_shape'")
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"{path}: {exc}; the file is damaged or was not written by dcnn") from None
    if len(shape) != 3:
        raise ValueError(f"{path}: metadata 'input_shape' must be (channels, height, width); got {shape}")
    return shape


def _checked_classes(path, meta: dict, outputs: int) -> list[str]:
    classes = meta.get("classes")
    if classes is None:
        return [str(i) for i in range(outputs)]
    if not (isinstance(classes, list) and 0 < len(classes) <= MAX_CLASSES and all(isinstance(c, str) for c in classes)):
        raise ValueError(f"{path}: metadata 'classes' must be a list of names (at most {MAX_CLASSES:,}); "
                         "the file is damaged or was not written by dcnn")
    if len(classes) != outputs:
        raise ValueError(f"{path}: {len(classes)} class names for a model with {outputs} outputs; the file is damaged")
    return list(classes)


def _newer_checkpoint(folder: Path, arrays: dict, meta: dict):
    """A run folder's weights file can lag its checkpoint (a kill between the two writes, before any
    --resume repaired it): the checkpoint is the source, so its model is used then."""
    from . import checkpoint
    saved_epoch = checkpoint.read_epoch(folder)
    if saved_epoch is None or saved_epoch == meta.get("epoch"):
        return arrays, meta
    model, model_meta = checkpoint.load_model(folder)
    if not model_meta.get("classes"):      # a checkpoint from before weights_metadata was stored
        return arrays, meta
    return model, model_meta


def _first_clause(exc) -> str:
    text = str(exc)
    return text if len(text) < 300 else text[:297] + "..."


def run_config(weights_file) -> dict:
    """The config.json beside a run's weights file ({} when there is none)."""
    from .checkpoint import CONFIG
    try:
        return json.loads((Path(weights_file).parent / CONFIG).read_text())
    except (OSError, ValueError):
        return {}


def run_history(weights_file) -> dict | None:
    """The history.json beside a run's weights file (None when there is none)."""
    from .checkpoint import HISTORY
    try:
        return json.loads((Path(weights_file).parent / HISTORY).read_text())
    except (OSError, ValueError):
        return None
