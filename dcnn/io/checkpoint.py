"""Checkpoints of a training run: one safetensors file per run folder, replaced atomically each epoch.

``checkpoint.safetensors`` holds everything needed to continue bit-for-bit on the CPU:
the model's weights and buffers (``model/<torch key>``), the optimiser's state
(``optimizer/<param key>.<slot>``) and, as JSON metadata, the optimiser's step count,
the completed epochs, the RNG states (shuffling, each Dropout layer, augmentation),
the run's configuration and its history.  Being one file written by
``fileio.atomic_write_bytes``, it is always either the previous complete checkpoint
or the new one, never a mix.

Beside it, for people and other tools: ``weights.safetensors`` (the last epoch's model
alone, with torch.nn.Sequential keys, what ``dcnn evaluate`` and ``dcnn predict`` read),
``best.safetensors`` (the best epoch so far by the preset's ``monitor``: the highest test accuracy,
or mean IoU for a segmentation preset), ``config.json``
and ``history.json``; each is written atomically too.  They are all *derived* from the
checkpoint: a kill between two of the writes can leave one stale, so ``--resume``
rewrites them from the checkpoint (``write_derived``) before it does anything else.

``load`` checks the checkpoint's structure before anything uses it and names the file
and the damaged field; ``restore`` checks the optimiser state against the model.
"""
from __future__ import annotations

import json
import math
from numbers import Real
from pathlib import Path

import numpy as np

from ..utils.checks import check_input_shape
from ..utils.files import atomic_write_text, load_arrays, read_metadata, save_arrays

CHECKPOINT = "checkpoint.safetensors"
WEIGHTS = "weights.safetensors"
BEST = "best.safetensors"
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


def best_epoch(history: dict, monitor: str = "val_accuracy") -> int | None:
    """The (1-based) best epoch by ``monitor`` (a logged name: highest, or lowest for a loss); the
    earliest on a tie."""
    values = history.get(monitor) or []
    if not values:
        return None
    return int(np.argmin(values) if monitor.endswith("loss") else np.argmax(values)) + 1


def save(out_dir, net, *, epoch: int, config: dict, history: dict, augment=None, extra: dict | None = None,
         weights_metadata: dict | None = None, monitor: str = "val_accuracy") -> Path:
    """Write the run's checkpoint, then the files derived from it, into ``out_dir``."""
    out_dir = Path(out_dir)
    backend = net.backend
    arrays = {f"model/{key}": value for key, value in net.state_dict().items()}
    arrays.update({f"optimizer/{key}": backend.to_numpy(value)
                   for key, value in net.optimizer.state_arrays().items()})
    meta = {"format": FORMAT, "version": VERSION, "epoch": int(epoch),
            "optimizer": {**net.optimizer.config(), "steps": int(net.optimizer.steps)},
            "rng": rng_states(net, augment), "config": config, "history": history,
            "input_shape": list(net.input_shape), "weights_metadata": weights_metadata or {}, **(extra or {})}
    try:
        from ..layers.spec import model_spec
        meta["spec"] = model_spec(net)
    except ValueError:       # a layer whose arguments JSON cannot hold: the preset name still rebuilds it
        pass
    path = out_dir / CHECKPOINT
    save_arrays(path, arrays, meta)
    write_derived(out_dir, net, epoch=epoch, config=config, history=history, weights_metadata=weights_metadata,
                  new_best=not (extra or {}).get("interrupted") and not (extra or {}).get("mid_epoch")
                  and best_epoch(history, monitor) == epoch, monitor=monitor)
    return path


def write_derived(out_dir, net, *, epoch: int, config: dict, history: dict, weights_metadata: dict | None = None,
                  new_best: bool | None = None, monitor: str = "val_accuracy") -> None:
    """weights.safetensors, best.safetensors (when ``epoch`` is the best one by ``monitor``), config.json
    and history.json.

    ``new_best=None`` (on resume) repairs: each file is rewritten only if it does not hold what the
    checkpoint says, as after a kill between the checkpoint and it.  A resumed run that then fails
    leaves the folder byte for byte as it was (safetensors' metadata order varies, so an identical
    file written again would not be).
    """
    out_dir = Path(out_dir)
    repair = new_best is None
    meta = {**(weights_metadata or {}), "epoch": int(epoch)}
    if not (repair and _holds(out_dir / WEIGHTS, net, meta)):
        net.save_weights(out_dir / WEIGHTS, metadata=meta)
    best = best_epoch(history, monitor)
    if repair:
        new_best = best == epoch and _file_epoch(out_dir / BEST) != epoch
    if new_best:
        net.save_weights(out_dir / BEST, metadata={**meta, monitor: history[monitor][epoch - 1]})
    _write_text_if_changed(out_dir / CONFIG, json.dumps(config, indent=2) + "\n")
    _write_text_if_changed(out_dir / HISTORY, json.dumps({"epochs_done": int(epoch), **history}, indent=2) + "\n")


def _holds(path: Path, net, meta: dict) -> bool:
    """Whether the weights file ``path`` holds ``net``'s state exactly, with ``meta`` in its metadata."""
    try:
        arrays, stored = load_arrays(path)
    except (OSError, ValueError):
        return False
    state = net.state_dict()
    return (all(stored.get(k) == v for k, v in {**meta, "input_shape": list(net.input_shape)}.items())
            and arrays.keys() == state.keys()
            and all(arrays[k].dtype == v.dtype and np.array_equal(arrays[k], v) for k, v in state.items()))


def _write_text_if_changed(path: Path, text: str) -> None:
    try:
        if path.read_text(encoding="utf-8") == text:
            return
    except (OSError, ValueError):
        pass
    atomic_write_text(path, text)


def _file_epoch(path: Path):
    try:
        return read_metadata(path).get("epoch")
    except (OSError, ValueError):
        return None


def read_epoch(out_dir):
    """The epoch recorded in ``out_dir``'s checkpoint (its header only), or None."""
    return _file_epoch(Path(out_dir) / CHECKPOINT)


# --- reading and checking ---------------------------------------------------------------------------

def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _damaged(path, field: str, problem: str) -> CheckpointError:
    return CheckpointError(f"{path} is damaged: {field} {problem}. Delete the run folder's checkpoint (or the "
                           "folder) and train again, or resume from a backup copy")


def validate_metadata(path, meta: dict) -> None:
    """The checkpoint's JSON metadata has the fields, types and ranges that ``restore`` relies on."""
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a dcnn checkpoint (format {meta.get('format')!r})")
    if meta.get("version") != VERSION:
        raise CheckpointError(f"{path} is a version {meta.get('version')!r} checkpoint; this dcnn reads version "
                              f"{VERSION}")
    for key in ("epoch", "optimizer", "rng", "config", "history"):
        if key not in meta:
            raise CheckpointError(f"{path} lacks {key!r}; it is damaged or from another version")
    if not _is_int(meta["epoch"]) or meta["epoch"] < 0:
        raise _damaged(path, "'epoch'", f"must be an integer >= 0, not {meta['epoch']!r}")
    optimizer = meta["optimizer"]
    if not isinstance(optimizer, dict):
        raise _damaged(path, "'optimizer'", f"must be an object, not {type(optimizer).__name__}")
    if not isinstance(optimizer.get("name"), str):
        raise _damaged(path, "'optimizer.name'", f"must be a name, not {optimizer.get('name')!r}")
    if not _is_int(optimizer.get("steps")) or optimizer["steps"] < 0:
        raise _damaged(path, "'optimizer.steps'", f"must be an integer >= 0, not {optimizer.get('steps')!r}")
    rng = meta["rng"]
    if not isinstance(rng, dict) or not isinstance(rng.get("shuffle"), dict):
        raise _damaged(path, "'rng.shuffle'", "must hold the shuffling generator's state")
    for key in ("dropout",):
        if rng.get(key) is not None and not isinstance(rng[key], dict):
            raise _damaged(path, f"'rng.{key}'", f"must be an object, not {type(rng[key]).__name__}")
    if rng.get("augment") is not None and not isinstance(rng["augment"], dict):
        raise _damaged(path, "'rng.augment'", f"must be an object, not {type(rng['augment']).__name__}")
    if not isinstance(meta["config"], dict):
        raise _damaged(path, "'config'", f"must be an object, not {type(meta['config']).__name__}")
    history = meta["history"]
    if not isinstance(history, dict):
        raise _damaged(path, "'history'", f"must be an object, not {type(history).__name__}")
    for key, values in history.items():
        if not isinstance(values, list) or not all(isinstance(v, Real) and not isinstance(v, bool)
                                                   and math.isfinite(v) for v in values):
            raise _damaged(path, f"'history.{key}'", "must be a list of finite numbers")
        if len(values) != meta["epoch"]:
            raise _damaged(path, f"'history.{key}'", f"has {len(values)} entries for {meta['epoch']} epochs")
    if "input_shape" in meta:
        try:
            check_input_shape(meta["input_shape"])
        except (TypeError, ValueError) as exc:
            raise _damaged(path, "'input_shape'", f"is wrong ({exc})") from None
    interrupted = meta.get("interrupted")
    if interrupted is not None and not (isinstance(interrupted, dict) and _is_int(interrupted.get("epoch"))
                                        and _is_int(interrupted.get("step"))):
        raise _damaged(path, "'interrupted'", f"must be {{'epoch': int, 'step': int}}, not {interrupted!r}")


def load(out_dir) -> tuple[dict, dict, dict]:
    """(model arrays, optimiser arrays, metadata) from ``out_dir``'s checkpoint, its structure checked."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise CheckpointError(f"{out_dir} is a file, not a run folder")
    path = out_dir / CHECKPOINT
    if not path.is_file():
        raise CheckpointError(f"no checkpoint to resume from: {path} does not exist")
    try:
        arrays, meta = load_arrays(path)
    except ValueError as exc:
        raise CheckpointError(str(exc)) from None
    validate_metadata(path, meta)
    model = {k[len("model/"):]: v for k, v in arrays.items() if k.startswith("model/")}
    optim = {k[len("optimizer/"):]: v for k, v in arrays.items() if k.startswith("optimizer/")}
    return model, optim, meta


def load_model(out_dir) -> tuple[dict, dict]:
    """(model arrays, weights-file-style metadata) straight from ``out_dir``'s checkpoint."""
    model, _, meta = load(out_dir)
    return model, {**(meta.get("weights_metadata") or {}), "input_shape": meta.get("input_shape"),
                   "epoch": meta["epoch"], **({"spec": meta["spec"]} if "spec" in meta else {})}


# Slots each optimiser keeps per parameter once it has stepped (SGD only with momentum).
_SLOTS = {"adam": ("exp_avg", "exp_avg_sq"), "adamw": ("exp_avg", "exp_avg_sq"), "sgd": ("momentum_buffer",)}


def _check_optimizer_state(net, optim: dict, meta: dict, source: str) -> None:
    params = {f"{key}.{name}" if key else name: value
              for key, layer in net.model.named_modules() for name, value in layer.params.items()}
    slots = _SLOTS.get(net.optimizer.name, ())
    if net.optimizer.name == "sgd" and not net.optimizer.momentum:
        slots = ()
    by_param: dict[str, set] = {}
    for flat, value in optim.items():
        key, _, slot = flat.rpartition(".")
        if key not in params or slot not in slots:
            raise _damaged(source, f"optimiser state {flat!r}", f"does not belong to this model and optimiser "
                                                                f"({net.optimizer.name})")
        if tuple(value.shape) != tuple(params[key].shape):
            raise _damaged(source, f"optimiser state {flat!r}", f"has shape {tuple(value.shape)}, its parameter "
                                                                f"has {tuple(params[key].shape)}")
        if not np.issubdtype(value.dtype, np.floating) or not np.isfinite(value).all():
            raise _damaged(source, f"optimiser state {flat!r}", "holds NaN, Inf or non-float values")
        by_param.setdefault(key, set()).add(slot)
    if slots and meta["optimizer"]["steps"] > 0 and not by_param:
        raise _damaged(source, "the optimiser state", f"is missing ({meta['optimizer']['steps']} steps were taken, "
                                                      f"but no {'/'.join(slots)} arrays are stored); resuming would "
                                                      "silently restart the optimiser")
    for key, have in by_param.items():
        if have != set(slots):
            raise _damaged(source, f"the optimiser state of {key!r}", f"lacks {sorted(set(slots) - have)}")


def restore(net, model: dict, optim: dict, meta: dict, augment=None, source: str = "checkpoint") -> None:
    """Put weights, optimiser state and RNG states back into a built, compiled ``net``."""
    net.load_state_dict(model, source=source)
    if meta["optimizer"].get("name") != net.optimizer.name:
        raise CheckpointError(f"{source} was written by the {meta['optimizer'].get('name')!r} optimiser, "
                              f"not {net.optimizer.name!r}")
    _check_optimizer_state(net, optim, meta, source)
    # Copies: loaded buffers may be read-only, and the optimiser updates its state in place.
    net.optimizer.load_state_arrays({k: net.backend.from_numpy(np.array(v, copy=True)) for k, v in optim.items()},
                                    int(meta["optimizer"]["steps"]))
    try:
        set_rng_states(net, meta["rng"], augment)
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise _damaged(source, "'rng'", f"holds a generator state that cannot be restored ({exc})") from None
