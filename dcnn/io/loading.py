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

import numpy as np

from ..layers import Conv2D, Dense, Residual, Sequential
from ..layers.graph import Graph
from ..model import spec as model_spec
from ..utils.checks import MAX_SAMPLE_VALUES, check_image_shape

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
    """(net, metadata, weights path) for a weights file or run folder.

    The metadata's shapes are checked before anything is allocated: the input shape against sane
    bounds (``check_image_shape``), then the model it describes against the weights in the file
    (``_check_fits``), so a damaged or hostile file is one error naming the field, not a 50 GiB
    allocation."""
    from ..model.network import DCNNetwork
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
        try:     # built below, once checked: no input shape yet
            net = model_spec.build_network({**stored, "input_shape": None} if isinstance(stored, dict) else stored,
                                           backend=backend)
        except model_spec.SpecError as exc:
            raise ValueError(f"{path}: its model spec cannot be built: {exc}") from None
        what = "its stored architecture (metadata 'spec')"
    else:
        from ..model import presets
        name = model or meta.get("preset")
        if name is None:
            raise ValueError(f"{path} holds neither a model spec nor a preset name; pass the preset (--model)")
        if not meta.get("classes"):
            raise ValueError(f"{path} lacks its class names (was it written by dcnn train?)")
        preset = presets.get_preset(name)
        _checked_classes(path, meta, None)
        net = DCNNetwork(preset.layers(input_shape, len(meta["classes"])), backend=backend)
        what = f"the {preset.name!r} preset"
    _check_fits(path, net.model, input_shape, arrays, what)
    net.build(input_shape)
    classes = _checked_classes(path, meta, net.num_classes)
    try:
        net.load_state_dict(arrays, source=str(path))
    except ValueError as exc:
        raise ValueError(f"the weights in {path} do not fit {what}: {_first_clause(exc)}") from None
    net.classes, net.metadata = classes, meta
    meta["classes"] = classes
    return net, meta, path


def model_name(meta: dict, path) -> str:
    """What to call a loaded model: the ``name`` saved with it (``net.save(path, metadata={"name": ...})``),
    else its preset, else the file's name (a model saved from Python has no preset)."""
    for key in ("name", "preset"):
        value = meta.get(key)
        if isinstance(value, str) and value.strip():
            text = " ".join(value.split())
            return text if len(text) <= 80 else text[:77] + "..."
    path = Path(path)
    return path.parent.name if path.name == "weights.safetensors" else path.stem


def _checked_input_shape(path, meta: dict) -> tuple:
    try:
        return check_image_shape(meta["input_shape"], name="metadata 'input_shape'")
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"{path}: {exc}; the file is damaged or was not written by dcnn") from None


def _check_fits(path, model, input_shape: tuple, arrays: dict, what: str) -> None:
    """The unbuilt ``model`` at ``input_shape``, layer by layer, against the weights in the file: the
    shapes its Dense and Conv2D layers would allocate, and the size of every layer's output, are
    checked before the build allocates them."""
    def fail(problem, field=None):     # field=None: the architecture (``what``), not the input shape
        if field is None:
            raise ValueError(f"the weights in {path} do not fit {what}: {problem}")
        raise ValueError(f"{path}: {field} does not fit the weights in the file: {problem}; the file is damaged "
                         "or was not written by dcnn")

    def walk(layer, shape, key):
        if isinstance(layer, Graph):     # each call at the shapes its tensors carry; weights by layer name
            try:
                out = layer.output_shape(shape)
            except ValueError as exc:
                fail(str(exc), f"metadata 'input_shape' {input_shape}")
            for node in layer.nodes:
                if node.many:
                    if int(np.prod(node.output.shape, dtype=np.float64)) > MAX_SAMPLE_VALUES:
                        fail(f"layer {node.layer.name} would output {node.output.shape}, more than "
                             f"{MAX_SAMPLE_VALUES:,} values per image", f"metadata 'input_shape' {input_shape}")
                elif walk(node.layer, node.inputs[0].shape, f"{key}{node.layer.name}.") != node.output.shape:
                    fail(f"layer {node.layer.name} does not give the shape its graph records")
            return out
        if isinstance(layer, Sequential):
            for name, child in layer.children():
                shape = walk(child, shape, f"{key}{name}.")
            return shape
        try:
            out = tuple(layer.output_shape(shape))
        except ValueError as exc:
            fail(f"layer {key.rstrip('.') or 'model'} ({layer.describe()}) cannot take {shape}: {exc}",
                 f"metadata 'input_shape' {input_shape}")
        if isinstance(layer, Residual):
            walk(layer.body, shape, key + "body.")
            if layer.shortcut is not None:
                walk(layer.shortcut, shape, key + "shortcut.")
        elif isinstance(layer, (Dense, Conv2D)):
            # torch layouts, Dense (units, features in) and Conv2D (filters, channels in / groups, kh, kw):
            # the input shape decides the second axis (and a depthwise convolution's filters).
            want = ((layer.units, int(np.prod(shape))) if isinstance(layer, Dense)
                    else (layer._filters(shape[0]), shape[0] // layer._groups(shape[0]), *layer.kernel_size))
            have = arrays.get(key + "weight")
            if have is None:
                fail(f"it lacks {key + 'weight'!r} for layer {key.rstrip('.')} ({layer.describe()})")
            if tuple(have.shape) != want:
                input_only = have.ndim == len(want) and all(h == w for i, (h, w) in enumerate(zip(have.shape, want))
                                                            if i != 1)
                fail(f"layer {key.rstrip('.')} ({layer.describe()}) would need {key + 'weight'!r} of shape "
                     f"{want}, the file holds {tuple(have.shape)}",
                     f"metadata 'input_shape' {input_shape}" if input_only else None)
        if int(np.prod(out, dtype=np.float64)) > MAX_SAMPLE_VALUES:
            fail(f"layer {key.rstrip('.')} ({layer.describe()}) would output {out}, more than "
                 f"{MAX_SAMPLE_VALUES:,} values per image", f"metadata 'input_shape' {input_shape}")
        return out

    walk(model, tuple(input_shape), "")


def _checked_classes(path, meta: dict, outputs: int | None) -> list[str]:
    """The class names, checked (``outputs=None``: before the model is built, their form alone)."""
    classes = meta.get("classes")
    if classes is None:
        return [str(i) for i in range(outputs or 0)]
    if not (isinstance(classes, list) and 0 < len(classes) <= MAX_CLASSES and all(isinstance(c, str) for c in classes)):
        raise ValueError(f"{path}: metadata 'classes' must be a list of names (at most {MAX_CLASSES:,}); "
                         "the file is damaged or was not written by dcnn")
    if outputs is not None and len(classes) != outputs:
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
