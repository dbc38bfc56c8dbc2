"""Checkpoints of a training run: one safetensors file per run folder, replaced atomically each epoch.

``checkpoint.safetensors`` holds everything needed to continue bit-for-bit on the CPU:
the model's weights and buffers (``model/<torch key>``), the optimiser's state
(``optimizer/<param key>.<slot>``) and, as JSON metadata, the optimiser's step count,
the completed epochs, the RNG states (shuffling, each Dropout layer, augmentation),
the run's configuration and its history.  Being one file written by
``fileio.atomic_write_bytes``, it is always either the previous complete checkpoint
or the new one, never a mix.

Beside it, for people and other tools: ``weights.safetensors`` (the model alone, with
torch.nn.Sequential keys, what ``dcnn evaluate`` and ``dcnn predict`` read),
``config.json`` and ``history.json``; each is written atomically too.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .fileio import atomic_write_text, load_arrays, save_arrays

CHECKPOINT = "checkpoint.safetensors"
WEIGHTS = "weights.safetensors"
CONFIG = "config.json"
HISTORY = "history.json"
FORMAT = "dcnn-checkpoint"
VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable or does not fit the model."""


def rng_states(net, augment=None) -> dict:
    """JSON-able states of every random stream that training draws from."""
    # Any layer with its own random stream (Dropout), under its state-dict prefix ("3." or "2.body.4.").
    dropout = {key + ".": layer.generator.state for key, layer in net.model.named_modules()
               if getattr(layer, "generator", None) is not None}
    return {"shuffle": net.shuffle_rng.bit_generator.state, "dropout": dropout,
            "augment": None if augment is None else augment.state}


def set_rng_states(net, states: dict, augment=None) -> None:
    net.shuffle_rng.bit_generator.state = states["shuffle"]
    layers = {key + ".": layer for key, layer in net.model.named_modules()}
    for prefix, state in (states.get("dropout") or {}).items():
        if state is not None and getattr(layers.get(prefix), "generator", None) is not None:
            layers[prefix].generator.state = state
    if augment is not None and states.get("augment") is not None:
        augment.state = states["augment"]


def save(out_dir, net, *, epoch: int, config: dict, history: dict, augment=None, extra: dict | None = None,
         weights_metadata: dict | None = None) -> Path:
    """Write the run's checkpoint (then weights, config and history) into ``out_dir``."""
    out_dir = Path(out_dir)
    backend = net.backend
    arrays = {f"model/{key}": value for key, value in net.state_dict().items()}
    arrays.update({f"optimizer/{key}": backend.to_numpy(value)
                   for key, value in net.optimizer.state_arrays().items()})
    meta = {"format": FORMAT, "version": VERSION, "epoch": int(epoch),
            "optimizer": {**net.optimizer.config(), "steps": int(net.optimizer.steps)},
            "rng": rng_states(net, augment), "config": config, "history": history,
            "input_shape": list(net.input_shape), **(extra or {})}
    path = out_dir / CHECKPOINT
    save_arrays(path, arrays, meta)
    # Convenience copies; the checkpoint above is the one --resume trusts.
    net.save_weights(out_dir / WEIGHTS, metadata={**(weights_metadata or {}), "epoch": int(epoch)})
    atomic_write_text(out_dir / CONFIG, json.dumps(config, indent=2) + "\n")
    atomic_write_text(out_dir / HISTORY, json.dumps({"epochs_done": int(epoch), **history}, indent=2) + "\n")
    return path


def load(out_dir) -> tuple[dict, dict, dict]:
    """(model arrays, optimiser arrays, metadata) from ``out_dir``'s checkpoint."""
    path = Path(out_dir) / CHECKPOINT
    if not path.is_file():
        raise CheckpointError(f"no checkpoint to resume from: {path} does not exist")
    try:
        arrays, meta = load_arrays(path)
    except ValueError as exc:
        raise CheckpointError(str(exc)) from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a dcnn checkpoint (format {meta.get('format')!r})")
    for key in ("epoch", "optimizer", "rng", "config", "history"):
        if key not in meta:
            raise CheckpointError(f"{path} lacks {key!r}; it is damaged or from another version")
    model = {k[len("model/"):]: v for k, v in arrays.items() if k.startswith("model/")}
    optim = {k[len("optimizer/"):]: v for k, v in arrays.items() if k.startswith("optimizer/")}
    return model, optim, meta


def restore(net, model: dict, optim: dict, meta: dict, augment=None, source: str = "checkpoint") -> None:
    """Put weights, optimiser state and RNG states back into a built, compiled ``net``."""
    net.load_state_dict(model, source=source)
    if meta["optimizer"].get("name") != net.optimizer.name:
        raise CheckpointError(f"{source} was written by the {meta['optimizer'].get('name')!r} optimiser, "
                              f"not {net.optimizer.name!r}")
    # Copies: loaded buffers may be read-only, and the optimiser updates its state in place.
    net.optimizer.load_state_arrays({k: net.backend.from_numpy(np.array(v, copy=True)) for k, v in optim.items()},
                                    int(meta["optimizer"]["steps"]))
    set_rng_states(net, meta["rng"], augment)
